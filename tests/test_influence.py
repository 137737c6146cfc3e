"""Influence-function unlearning (``influence``): the second-order algebra on selected rows
(Hessian- and Gauss-Newton-vector products, conjugate gradient), the influence step against an
exactly retrained convex model, and the method on both backbones (what moves, what does not)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_unlearn import Trained, state
from conftest import tiny_config
from recbole_tru.registry import UNLEARNERS, parse_unlearn
from recbole_tru.training import build_model
from recbole_tru.unlearn.capacity import describe, pair_scores
from recbole_tru.unlearn.hessian import (GaussNewtonOperator, HessianOperator, RowBlock, conjugate_gradient,
                                         newton_step)
from recbole_tru.unlearn.influence import is_graph_model, sample_negatives

torch.set_default_dtype(torch.float32)


# --------------------------------------------------------------------------- 1. the algebra

def spd(n, seed, condition=10.0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(1.0, condition, n, dtype=torch.float64)) @ q.T


def test_row_block_gathers_and_adds_only_its_rows():
    a = torch.arange(12.0).view(4, 3)
    b = torch.arange(5.0).view(5, 1)
    block = RowBlock([a, b], [[1, 3], [0]])
    assert block.size == 7
    np.testing.assert_array_equal(block.values().numpy(), [3, 4, 5, 9, 10, 11, 0])
    before_a, before_b = a.clone(), b.clone()
    block.add_(torch.ones(7), alpha=2.0)
    assert torch.equal(a[[0, 2]], before_a[[0, 2]]) and torch.equal(b[1:], before_b[1:])
    assert torch.equal(a[[1, 3]], before_a[[1, 3]] + 2) and b[0, 0] == 2


def test_hvp_equals_the_explicit_hessian_times_v_on_a_quadratic():
    a = spd(15, 0)
    c = torch.randn(15, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    p = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * p.reshape(-1) @ a @ p.reshape(-1) + c @ p.reshape(-1)
    block = RowBlock([p], [[1, 3]])
    hessian = HessianOperator(loss, block)
    s = [3, 4, 5, 9, 10, 11]                            # the flat positions of rows 1 and 3
    v = torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(hessian(v), a[s][:, s] @ v)
    torch.testing.assert_close(hessian.gradient, (a @ p.detach().reshape(-1) + c)[s])
    assert hessian.products == 1


def test_gauss_newton_product_equals_jt_w_j_plus_the_remainder_hessian():
    g = torch.Generator().manual_seed(2)
    p = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w_in = torch.randn(6, 3, dtype=torch.float64, generator=g)
    rows = [0, 2]

    def margins_of(flat):
        q = p.detach().clone()
        q[rows] = flat.view(2, 3)
        return torch.tanh(w_in @ q.T).sum(1) * q.sum()      # a non-linear score of every row

    margins = torch.tanh(w_in @ p.T).sum(1) * p.sum()
    weights = torch.rand(6, dtype=torch.float64, generator=g)
    remainder = 0.3 * p.pow(2).sum()
    block = RowBlock([p], [rows])
    op = GaussNewtonOperator(margins, weights, remainder, block)
    jac = torch.autograd.functional.jacobian(margins_of, p.detach()[rows].reshape(-1))      # [6, 6]
    explicit = jac.T @ torch.diag(weights) @ jac + 0.6 * torch.eye(6, dtype=torch.float64)
    v = torch.randn(6, dtype=torch.float64, generator=g)
    torch.testing.assert_close(op(v), explicit @ v)
    eig = torch.linalg.eigvalsh(explicit)
    assert eig.min() > 0                                # positive (semi-)definite by construction


def test_conjugate_gradient_solves_a_known_spd_system():
    a = spd(30, 3, condition=50.0)
    x_true = torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    result = conjugate_gradient(lambda v: a @ v, a @ x_true, iterations=200, tolerance=1e-10)
    assert result.stop == "tolerance" and result.iterations <= 30 + 5
    torch.testing.assert_close(result.x, x_true, rtol=1e-7, atol=1e-7)
    assert result.residuals == sorted(result.residuals, reverse=True) or result.residuals[-1] <= 1e-10
    # damping: solves (A + λI) x = b
    damped = conjugate_gradient(lambda v: a @ v, a @ x_true, damping=2.0, iterations=200, tolerance=1e-12)
    torch.testing.assert_close((a + 2.0 * torch.eye(30, dtype=torch.float64)) @ damped.x, a @ x_true)
    # the iteration cap
    capped = conjugate_gradient(lambda v: a @ v, a @ x_true, iterations=3, tolerance=1e-12)
    assert capped.stop == "iterations" and capped.iterations == 3 and len(capped.residuals) == 3
    # a zero right-hand side
    assert conjugate_gradient(lambda v: a @ v, torch.zeros(30, dtype=torch.float64)).stop == "zero right-hand side"


def test_conjugate_gradient_trust_region_stops_on_the_sphere():
    a = spd(20, 5, condition=100.0)
    b = torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    free = conjugate_gradient(lambda v: a @ v, b, iterations=100, tolerance=1e-12)
    radius = 0.3 * float(free.x.norm())
    bounded = conjugate_gradient(lambda v: a @ v, b, iterations=100, tolerance=1e-12, radius=radius)
    assert bounded.stop == "trust region"
    assert float(bounded.x.norm()) == pytest.approx(radius, rel=1e-9)
    # the boundary point still decreases the quadratic model q(x) = xᵀAx/2 - bᵀx below q(0) = 0
    assert float(0.5 * bounded.x @ a @ bounded.x - b @ bounded.x) < 0
    # a radius the solution lies inside changes nothing
    loose = conjugate_gradient(lambda v: a @ v, b, iterations=100, tolerance=1e-12, radius=2 * float(free.x.norm()))
    assert loose.stop == "tolerance"
    torch.testing.assert_close(loose.x, free.x)


def test_conjugate_gradient_stops_at_negative_curvature():
    a = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    result = conjugate_gradient(lambda v: a @ v, b)
    assert result.stop == "negative curvature" and result.iterations == 0 and torch.equal(result.x, torch.zeros(2, dtype=torch.float64))


# --------------------------------------------------------------------------- 2. a convex model, retrained exactly

class Convex:
    """An L2-regularised BPR model over fixed item vectors: parameters = user vectors θ_u only,
    ``ℓ(u, i, j) = -log σ(θ_u·(v_i - v_j)) + (λ/2)||θ_u||²`` (the plugin's per-triple loss with
    the items frozen): strictly convex, so training and retraining reach THE optimum."""

    def __init__(self, n_users=6, n_items=12, dim=3, per_user=20, reg=0.1, seed=0):
        rng = np.random.default_rng(seed)
        self.items = torch.tensor(rng.normal(size=(n_items, dim)))
        taste = rng.normal(size=(n_users, dim))
        triples = []
        for u in range(n_users):
            score = self.items.numpy() @ taste[u] + rng.gumbel(size=n_items)
            liked = np.argsort(-score)[: n_items // 2]
            for _ in range(per_user):
                triples.append((u, rng.choice(liked), rng.integers(n_items)))
        self.triples = np.array(triples)
        self.n_users, self.dim, self.reg = n_users, dim, reg

    def loss(self, theta, rows):
        u, i, j = (torch.as_tensor(self.triples[rows, k]) for k in range(3))
        margins = (theta[u] * (self.items[i] - self.items[j])).sum(1)
        return (-F.logsigmoid(margins)).sum() + 0.5 * self.reg * theta[u].pow(2).sum()

    def optimum(self, rows, start=None):
        """Newton's method on Σ_rows ℓ to machine precision."""
        theta = torch.zeros(self.n_users, self.dim, dtype=torch.float64) if start is None else start.clone()
        for _ in range(50):
            flat = theta.reshape(-1)
            g = torch.autograd.functional.jacobian(lambda t: self.loss(t.view_as(theta), rows), flat)
            h = torch.autograd.functional.hessian(lambda t: self.loss(t.view_as(theta), rows), flat)
            theta = (flat - torch.linalg.solve(h, g)).view_as(theta)
            if g.norm() < 1e-12:
                break
        return theta


@pytest.fixture(scope="module")
def convex():
    model = Convex()
    forget = np.array([3, 11, 47])                   # three triples of users 0 and 2
    keep = np.setdiff1d(np.arange(len(model.triples)), forget)
    full = model.optimum(np.arange(len(model.triples)))
    return model, forget, keep, full, model.optimum(keep, start=full)


def influence_step(model, forget, keep, full, damping=0.0):
    theta = full.clone().requires_grad_(True)
    users = np.unique(model.triples[forget, 0])
    block = RowBlock([theta], [users])
    x, result, _ = newton_step(model.loss(theta, forget), model.loss(theta, keep), block, damping=damping,
                               iterations=100, tolerance=1e-12)
    block.add_(x)
    return theta.detach(), result


def test_influence_step_lands_close_to_the_retrained_optimum(convex):
    model, forget, keep, full, retrained = convex
    moved, result = influence_step(model, forget, keep, full)
    assert result.stop == "tolerance"
    before = (full - retrained).norm()
    after = (moved - retrained).norm()
    assert before > 1e-2                              # deleting the triples does move the optimum
    assert after < 0.1 * before, (float(after), float(before))
    # users untouched by the request: the retrained optimum has not moved (separable), nor does the step
    others = np.setdiff1d(np.arange(model.n_users), model.triples[forget, 0])
    torch.testing.assert_close(moved[others], full[others])
    torch.testing.assert_close(retrained[others], full[others], rtol=1e-9, atol=1e-9)
    # damping shrinks the step (toward the original)
    damped, _ = influence_step(model, forget, keep, full, damping=50.0)
    assert (damped - full).norm() < (moved - full).norm()


def test_influence_step_equals_the_hand_computed_newton_step():
    # one user, one dimension: ℓ_k(θ) = -log σ(θ a_k) + (λ/2) θ², forget = {a_0}, retain = the rest;
    # at θ0: x = ℓ'_0(θ0) / Σ_{k≥1} ℓ''_k(θ0), ℓ' = -a σ(-θa) + λθ, ℓ'' = a² σ(θa) σ(-θa) + λ
    a, lam, theta0 = [1.5, -0.5, 2.0, 0.8], 0.2, 0.3
    sig = lambda z: 1 / (1 + math.exp(-z))
    d1 = -a[0] * sig(-theta0 * a[0]) + lam * theta0
    d2 = sum(ak * ak * sig(theta0 * ak) * sig(-theta0 * ak) + lam for ak in a[1:])
    theta = torch.tensor([[theta0]], dtype=torch.float64, requires_grad=True)
    loss = lambda ks: sum(-F.logsigmoid(theta[0, 0] * a[k]) + 0.5 * lam * theta[0, 0] ** 2 for k in ks)
    x, result, g = newton_step(loss([0]), loss([1, 2, 3]), RowBlock([theta], [[0]]), damping=0.0)
    assert float(g) == pytest.approx(d1, rel=1e-12)
    assert float(x) == pytest.approx(d1 / d2, rel=1e-10)
    x_damped, _, _ = newton_step(loss([0]), loss([1, 2, 3]), RowBlock([theta], [[0]]), damping=0.7)
    assert float(x_damped) == pytest.approx(d1 / (d2 + 0.7), rel=1e-10)


# --------------------------------------------------------------------------- 3. the method on the backbones

@pytest.fixture(scope="module")
def trained(tiny_root, workdir):
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = Trained(tiny_config(tiny_root, model, workdir))
        return cache[model]

    return get


def test_influence_is_registered_and_its_keys_are_declared(make_config):
    assert "influence" in UNLEARNERS and parse_unlearn("influence,tru") == ["influence", "tru"]
    assert "influence" not in parse_unlearn("all")          # run by name, like sisa (see docs/influence.md)
    config = make_config("VBPR")
    assert config["influence_damping"] == 1.0 and config["influence_hessian"] == "gauss_newton"
    assert {k for k in config.final_config_dict if k.startswith("influence_")} == {
        "influence_damping", "influence_scale", "influence_cg_iterations", "influence_cg_tolerance",
        "influence_retain_sample", "influence_negatives", "influence_neighbours", "influence_graph_term",
        "influence_reset", "influence_hessian", "influence_trust_radius"}


@pytest.mark.parametrize("key, value", [("influence_damping", -1.0), ("influence_cg_iterations", 0),
                                        ("influence_scale", 0.0), ("influence_hessian", "fisher")])
def test_bad_values_fail_when_the_trainer_is_built(trained, key, value):
    with pytest.raises(ValueError, match=key):
        trained("VBPR").setup("influence", **{key: value})


def test_negatives_avoid_the_history_and_padding():
    rng = np.random.default_rng(0)
    users = np.array([0, 0, 1, 2])
    history = np.unique(np.array([0 * 10 + i for i in range(1, 9)] + [1 * 10 + 3]))   # user 0 knows 1..8
    neg = sample_negatives(rng, users, 10, history, 50)
    assert neg.min() >= 1 and neg.max() <= 9
    assert set(np.unique(neg[:2])) == {9}
    assert 3 not in neg[2]


def rows_that_moved(before, after):
    """{parameter: sorted indices of rows that differ}; dense parameters as None when changed."""
    moved = {}
    for name, b in before.items():
        diff = (after[name] != b)
        if diff.any():
            moved[name] = np.flatnonzero(diff.reshape(b.shape[0], -1).any(1).numpy()) if b.dim() >= 1 else None
    return moved


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
@pytest.mark.parametrize("regime", ["interaction", "user"])
def test_only_the_selected_rows_move_and_dense_layers_stay(trained, name, regime):
    config, data, model, trainer = trained(name).setup("influence", forget_regime=regime, forget_share=0.1)
    capacity = describe(model)
    before = state(model)
    trainer.unlearn()
    after = state(model)
    sel = trainer.selection
    assert is_graph_model(model) == (name == "MMGCN")
    users = np.union1d(sel["users"], sel["neighbour_users"])
    items = np.union1d(sel["items"], sel["neighbour_items"])
    if name == "VBPR":
        assert len(sel["neighbour_users"]) == len(sel["neighbour_items"]) == 0
    else:
        assert len(sel["neighbour_users"]) + len(sel["neighbour_items"]) > 0
    allowed = {}
    for tables, ids in ((capacity.user_tables, np.union1d(users, sel["reset_users"])),
                        (capacity.item_id_tables, np.union1d(items, sel["reset_items"]))):
        for table, offset in tables:
            allowed[table] = np.union1d(allowed.get(table, []), ids + offset)
    moved = rows_that_moved(before, after)
    dense = set(capacity.dense(model))
    assert not dense & set(moved), f"dense parameters moved: {sorted(dense & set(moved))}"
    for table, rows in moved.items():
        assert np.isin(rows, allowed[table]).all(), (table, np.setdiff1d(rows, allowed[table]))
    assert moved, "nothing moved"
    record = trainer.log[0]
    assert record["rows"] > 0 and record["cg_iterations"] > 0 and record["step_norm"] > 0
    assert record["cg_stop"] in ("tolerance", "iterations", "trust region")
    # the step never leaves the trust radius (a share of the selected rows' norm); on it when CG stopped there
    assert record["step_norm"] <= record["trust_radius"] * (1 + 1e-5)
    if record["cg_stop"] == "trust region":
        assert record["step_norm"] == pytest.approx(record["trust_radius"], rel=1e-4)
    assert trainer.seconds > 0 and trainer.stop_reason.startswith("cg ")
    assert trainer.checks and all(c["relative_residual"] >= 0 for c in trainer.checks)
    if regime == "user":                               # fully deleted users: reset to the seeded initial rows
        assert len(sel["reset_users"]) > 0 and len(sel["users"]) == 0
        fresh = dict(build_model(config, data.retain_dataset).named_parameters())
        for table, offset in capacity.user_tables:
            torch.testing.assert_close(after[table][sel["reset_users"] + offset],
                                       fresh[table].detach()[sel["reset_users"] + offset])


@pytest.mark.parametrize("name", ["BPR", "LightGCN"])
def test_runs_on_recbole_models_moving_their_rows_only(trained, name):
    config, data, model, trainer = trained(name).setup("influence", forget_regime="interaction", forget_share=0.1)
    capacity = describe(model)
    before = state(model)
    trainer.unlearn()
    assert is_graph_model(model) == (name == "LightGCN")
    moved = rows_that_moved(before, state(model))
    tables = {t for t, _ in capacity.user_tables + capacity.item_id_tables}
    assert moved and set(moved) <= tables
    assert (len(trainer.selection["neighbour_users"]) + len(trainer.selection["neighbour_items"]) > 0) == (name == "LightGCN")
    assert trainer.log[0]["step_norm"] > 0


def score_gap(model, data):
    """Mean score of the forget pairs minus the mean score of the retained pairs."""
    f = data.forget
    with torch.no_grad():
        (forget,) = pair_scores(model, torch.as_tensor(f.users), torch.as_tensor(f.items))
        (retain,) = pair_scores(model, torch.as_tensor(data.retain_users), torch.as_tensor(data.retain_items))
    return float(forget.mean() - retain.mean())


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
@pytest.mark.parametrize("regime", ["interaction", "item"])
def test_the_step_lowers_the_forget_pairs_against_the_retained_ones(trained, name, regime):
    base = trained(name)
    config, data, model, trainer = base.setup("influence", forget_regime=regime, forget_share=0.1)
    original_gap = score_gap(model, data)
    trainer.unlearn()
    assert score_gap(model, data) < original_gap - 1e-3
    # a larger damping takes a smaller step: the gap moves less
    _, _, damped, trainer = base.setup("influence", forget_regime=regime, forget_share=0.1, influence_damping=100.0)
    trainer.unlearn()
    assert score_gap(model, data) < score_gap(damped, data) < original_gap


def test_without_reset_deleted_users_take_the_literal_step(trained):
    config, data, model, trainer = trained("VBPR").setup("influence", forget_regime="user", forget_share=0.1,
                                                         influence_reset=False)
    capacity = describe(model)
    before = state(model)
    trainer.unlearn()
    sel = trainer.selection
    assert len(sel["reset_users"]) == 0 and len(sel["users"]) > 0
    table = capacity.user_tables[0][0]
    # no retained triple touches a deleted user's rows: their block is (0 + λI) x = g, i.e. x = g / λ
    assert not torch.equal(model.state_dict()[table][sel["users"]], before[table][sel["users"]])


def test_influence_is_deterministic(trained):
    results = []
    for _ in range(2):
        _, _, model, trainer = trained("MMGCN").setup("influence", forget_regime="interaction", forget_share=0.1)
        trainer.unlearn()
        results.append(state(model))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
