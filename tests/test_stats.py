"""recbole_tru.stats against hand-computed values."""
import math

import numpy as np
import pytest

from recbole_tru.stats import paired, sign_test, t_interval, variance_components


def test_t_interval_hand_computed():
    # values 1..5: mean 3, sd sqrt(2.5); t_{0.975,4} = 2.7764451
    ci = t_interval([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert ci["n"] == 5 and ci["mean"] == 3 and ci["sd"] == pytest.approx(math.sqrt(2.5))
    assert ci["ci_low"] == pytest.approx(3 - half, abs=1e-6) and ci["ci_high"] == pytest.approx(3 + half, abs=1e-6)


def test_t_interval_edge_cases():
    assert t_interval([0.2, None, float("nan")]) == {"n": 1, "mean": 0.2, "sd": None, "ci_low": None, "ci_high": None}
    assert t_interval([])["mean"] is None
    same = t_interval([0.5, 0.5, 0.5])
    assert same["ci_low"] == same["ci_high"] == 0.5
    # a 99 % interval is wider than a 95 % one
    assert t_interval([1, 2, 4], 0.99)["ci_high"] > t_interval([1, 2, 4])["ci_high"]


def test_sign_test_exact_binomial():
    assert sign_test(5, 0) == pytest.approx(2 / 32)            # the smallest p of 5 requests
    assert sign_test(4, 1) == pytest.approx(2 * 6 / 32)        # P(X <= 1) = 6/32
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 1024)


def test_paired_counts_wins_ties_and_the_difference():
    a, b = [0.1, 0.2, 0.3, 0.4, 0.5], [0.2, 0.2, 0.5, 0.3, 0.9]
    p = paired(a, b)                       # lower is better: a wins 3, ties 1, loses 1
    assert (p["wins"], p["ties"], p["losses"]) == (3, 1, 1)
    assert p["diff"]["mean"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert p["sign_p"] == pytest.approx(sign_test(3, 1))
    q = paired(a, b, lower_is_better=False)
    assert (q["wins"], q["losses"]) == (1, 3)
    assert paired([0.1, None], [0.2, 0.3])["n"] == 1            # a pair with a missing side is dropped


def test_variance_components_hand_computed():
    # y[s][r] = seed effect + request effect, no noise: all variance is explained by the two
    seed_eff, req_eff = np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.5, 1.0, 1.5])
    y = seed_eff[:, None] + req_eff[None, :]
    v = variance_components(y)
    # MS_seed = b * var(seed_eff, ddof=1) = 4 * 1 ; sigma2_seed = 4/4 = 1; sigma2_req = var(req_eff, ddof=1)
    assert v["var_seed"] == pytest.approx(1.0) and v["var_request"] == pytest.approx(np.var(req_eff, ddof=1))
    assert v["var_residual"] == pytest.approx(0.0, abs=1e-12)
    assert v["share_seed"] + v["share_request"] == pytest.approx(1.0)


def test_variance_components_noise_only_is_residual():
    rng = np.random.default_rng(0)
    shares = [variance_components(rng.normal(size=(3, 5)))["share_residual"] for _ in range(200)]
    assert np.mean(shares) > 0.5                    # pure noise lands mostly in the residual
    with pytest.raises(ValueError, match="2 x 2"):
        variance_components([[1.0, 2.0]])
