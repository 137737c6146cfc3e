"""Statistics of repeated unlearning requests: how sure a figure is, and whether a difference
between two methods is more than the request-to-request noise.

Every figure of the unlearning benchmark is a mean over ``n`` independent requests (distinct
forget seeds) against the same original model. This module gives

* :func:`t_interval` -- the mean and its two-sided Student-t confidence interval
  (``mean ± t_{1-α/2, n-1} · s / √n``); with ``n = 5`` the multiplier is 2.776;
* :func:`paired` -- a paired comparison of two methods on the same requests: wins / ties /
  losses, the mean difference with its t-interval, and the exact two-sided **sign test**
  (binomial on the non-tied requests). With ``n = 5`` the smallest possible sign-test p-value is
  ``2 · 0.5⁵ = 0.0625``: five requests can show a consistent direction (5/5 wins) and a
  difference whose CI excludes zero, never a sign test below 0.05;
* :func:`variance_components` -- for a crossed design (training seeds x requests, one value per
  pair), the two-way random-effects ANOVA estimates of the variance due to the original model,
  to the request, and what is left.
"""
import math

import numpy as np
from scipy import stats as _st

__all__ = ["t_interval", "paired", "sign_test", "variance_components"]


def _clean(values):
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def t_interval(values, confidence=0.95):
    """``{"n", "mean", "sd", "ci_low", "ci_high"}`` of ``values`` (``None``/NaN dropped).

    The CI is the Student-t interval of the mean; with one value it is undefined (``None``);
    with equal values it has zero width."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    sd = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def sign_test(wins, losses):
    """Exact two-sided sign test p-value of ``wins`` against ``losses`` (ties left out)."""
    m = wins + losses
    if m == 0:
        return 1.0
    k = min(wins, losses)
    return float(min(1.0, 2 * _st.binom.cdf(k, m, 0.5)))


def paired(a, b, lower_is_better=True, confidence=0.95):
    """Compare method ``a`` with method ``b`` on the same requests (``a[r]`` and ``b[r]`` come
    from request ``r``; pairs with a missing side are dropped).

    Returns ``{"n", "wins", "ties", "losses", "diff": t_interval(a - b), "sign_p"}``; a win is a
    request where ``a`` is strictly better than ``b``."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
             and np.isfinite(x) and np.isfinite(y)]
    diff = np.asarray([x - y for x, y in pairs], dtype=float)
    better = -diff if lower_is_better else diff
    wins, losses = int((better > 0).sum()), int((better < 0).sum())
    return {"n": len(pairs), "wins": wins, "ties": len(pairs) - wins - losses, "losses": losses,
            "diff": t_interval(diff, confidence), "sign_p": sign_test(wins, losses)}


def variance_components(table):
    """Two-way random-effects ANOVA without replication.

    ``table[s][r]`` is the value for training seed ``s`` (the original model) and request ``r``;
    every row must have the same length, at least 2 x 2. With ``a`` seeds and ``b`` requests,
    the mean squares ``MS_seed = b·Σ(ȳ_s − ȳ)²/(a−1)``, ``MS_req = a·Σ(ȳ_r − ȳ)²/(b−1)`` and the
    residual ``MS_res`` give the variance components ``σ²_seed = (MS_seed − MS_res)/b``,
    ``σ²_req = (MS_req − MS_res)/a`` (negative estimates set to 0) and ``σ²_res = MS_res``
    (seed x request interaction, which one value per pair cannot tell from noise).

    Returns ``{"seeds", "requests", "var_seed", "var_request", "var_residual", "share_seed",
    "share_request", "share_residual"}`` (shares of the components' sum)."""
    y = np.asarray(table, dtype=float)
    if y.ndim != 2 or min(y.shape) < 2:
        raise ValueError(f"variance_components needs a seeds x requests table of at least 2 x 2, got shape {y.shape}")
    a, b = y.shape
    grand = y.mean()
    seed_means, req_means = y.mean(axis=1), y.mean(axis=0)
    ms_seed = b * ((seed_means - grand) ** 2).sum() / (a - 1)
    ms_req = a * ((req_means - grand) ** 2).sum() / (b - 1)
    resid = y - seed_means[:, None] - req_means[None, :] + grand
    ms_res = (resid ** 2).sum() / ((a - 1) * (b - 1))
    comp = {"var_seed": max(0.0, (ms_seed - ms_res) / b), "var_request": max(0.0, (ms_req - ms_res) / a),
            "var_residual": float(ms_res)}
    total = sum(comp.values())
    out = {"seeds": a, "requests": b, **{k: float(v) for k, v in comp.items()}}
    for key, name in (("var_seed", "share_seed"), ("var_request", "share_request"), ("var_residual", "share_residual")):
        out[name] = float(comp[key] / total) if total > 0 else None
    return out
