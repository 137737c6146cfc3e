"""VBPR and MMGCN: what learns and what stays fixed, the capacity declarations, the scores,
the graph, and the evaluation cache."""
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_tru.training import build_model, load_data

MODELS = ("VBPR", "MMGCN")
MODALITIES = ("text", "meta")


def setup(make_config, model, **overrides):
    config = make_config(model, **overrides)
    _, train_data, _, _ = load_data(config)
    return config, train_data, build_model(config, train_data.dataset)


def first_batch(train_data):
    return next(iter(train_data))


def adam_step(model, batch, lr=0.01):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    optimizer.zero_grad()
    loss = model.calculate_loss(batch)
    loss.backward()
    optimizer.step()
    return loss


def same(a, b):
    if a.layout == torch.sparse_csr:
        return all(torch.equal(x, y) for x, y in ((a.crow_indices(), b.crow_indices()),
                                                  (a.col_indices(), b.col_indices()), (a.values(), b.values())))
    if a.is_sparse:
        a, b = a.coalesce(), b.coalesce()
        return torch.equal(a.indices(), b.indices()) and torch.equal(a.values(), b.values())
    return torch.equal(a, b)


def all_pairs(model, users):
    """predict() for every (user, item) of ``users``: [len(users), n_items]."""
    users = torch.as_tensor(users)
    items = torch.arange(model.n_items)
    inter = Interaction({"user_id": users.repeat_interleave(model.n_items), "item_id": items.repeat(len(users))})
    return model.predict(inter).view(len(users), model.n_items)


def full_sort(model, users):
    return model.full_sort_predict(Interaction({"user_id": torch.as_tensor(users)})).view(len(users), -1)


# --------------------------------------------------------------------------- one step

@pytest.mark.parametrize("name", MODELS)
def test_one_step_moves_every_parameter_and_no_buffer(name, make_config):
    _, train_data, model = setup(make_config, name)
    batch = first_batch(train_data)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    expected_buffers = {"feat_text", "feat_meta"} | ({"adjacency", "adjacency_t"} if name == "MMGCN" else set())
    assert set(buffers) == expected_buffers
    assert set(model.state_dict()) == set(params)               # buffers are not checkpointed

    loss = adam_step(model, batch)
    assert torch.isfinite(loss)

    for n, p in params.items():
        assert not torch.equal(p.detach(), before[n]), f"{n} did not move"
    for n, b in model.named_buffers():
        assert same(b, buffers[n]), f"buffer {n} changed"
        assert not b.requires_grad
    for m in MODALITIES:
        assert same(model.feature(m), train_data.dataset.item_features[m])

    users = batch["user_id"].unique()
    items = torch.cat([batch["item_id"], batch["neg_item_id"]]).unique()
    for tables, ids in ((model.user_tables(), users), (model.item_id_tables(), items)):
        for table, offset in tables:
            moved = (params[table].detach() != before[table]).any(dim=1)
            assert moved[offset + ids].all(), f"{table}: a row of the batch did not move"
            if name == "VBPR":                                   # no graph: other rows are untouched
                others = torch.ones_like(moved)
                others[offset + ids] = False
                assert not moved[others].any(), f"{table}: a row outside the batch moved"


# --------------------------------------------------------------------------- capacity declarations

@pytest.mark.parametrize("name", MODELS)
def test_branches_cover_every_parameter_once(name, make_config):
    _, _, model = setup(make_config, name)
    branches = model.branches()
    assert list(branches) == ["id", *MODALITIES]
    names = [n for group in branches.values() for n in group]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    for m in MODALITIES:                                          # a modality's branch is its own
        assert all(f".{m}." in n for n in branches[m])


def test_vbpr_tables(make_config):
    _, train_data, model = setup(make_config, "VBPR")
    n_users, n_items = train_data.dataset.user_num, train_data.dataset.item_num
    assert (model.n_users, model.n_items) == (n_users, n_items) == (41, 61)
    params = dict(model.named_parameters())
    assert model.user_tables() == [("user_embedding.weight", 0), ("theta.text.weight", 0), ("theta.meta.weight", 0)]
    assert model.item_id_tables() == [("item_embedding.weight", 0), ("item_bias.weight", 0)]
    assert all(params[t].shape[0] == n_users for t, _ in model.user_tables())
    assert all(params[t].shape[0] == n_items for t, _ in model.item_id_tables())
    assert {t for t, _ in model.item_id_tables()} <= set(model.branches()["id"])


def test_mmgcn_tables(make_config):
    _, train_data, model = setup(make_config, "MMGCN")
    n_users, n_items = train_data.dataset.user_num, train_data.dataset.item_num
    params = dict(model.named_parameters())
    assert model.user_tables() == [("id_embedding.weight", 0), ("preference.text.weight", 0),
                                   ("preference.meta.weight", 0)]
    assert model.item_id_tables() == [("id_embedding.weight", n_users)]
    assert params["id_embedding.weight"].shape[0] == n_users + n_items
    assert params["preference.text.weight"].shape[0] == n_users
    assert params["preference.meta.weight"].shape[0] == n_users
    assert {t for t, _ in model.item_id_tables()} <= set(model.branches()["id"])


# --------------------------------------------------------------------------- scores

def test_vbpr_score_is_the_paper_formula(make_config):
    _, train_data, model = setup(make_config, "VBPR")
    with torch.no_grad():                                         # biases start at 0: make them count
        model.item_bias.weight.normal_()
        for m in MODALITIES:
            model.feature_bias[m].weight.normal_()
    features = train_data.dataset.item_features
    pairs = [(1, 2), (5, 7), (9, 30), (40, 60)]
    model.eval()
    with torch.no_grad():
        got = model.predict(Interaction({"user_id": torch.tensor([u for u, _ in pairs]),
                                         "item_id": torch.tensor([i for _, i in pairs])}))
        for k, (u, i) in enumerate(pairs):
            expected = model.item_bias.weight[i, 0] + model.user_embedding.weight[u] @ model.item_embedding.weight[i]
            for m in MODALITIES:
                f = features[m][i]
                expected = expected + model.theta[m].weight[u] @ (model.projection[m].weight @ f)
                expected = expected + model.feature_bias[m].weight[0] @ f
            assert got[k].item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("reg_content", [True, False])
def test_vbpr_regularisation_is_the_batch_rows_l2(reg_content, make_config):
    """Σ ||row||² / (2 B) over γ_u, θ_u^m, and per item set γ_i, β_i and (reg_content) E_m f_i^m,
    computed by hand; the penalty's gradient reaches the projection E_m only with reg_content."""
    _, train_data, model = setup(make_config, "VBPR", reg_content=reg_content)
    features = train_data.dataset.item_features
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])
    with torch.no_grad():
        model.item_bias.weight.normal_()
        rows = [model.user_embedding.weight[users]] + [model.theta[m].weight[users] for m in MODALITIES]
        for items in (pos, neg):
            rows += [model.item_embedding.weight[items], model.item_bias.weight[items]]
            if reg_content:
                rows += [features[m][items] @ model.projection[m].weight.T for m in MODALITIES]
        expected = sum(float((r ** 2).sum()) for r in rows) / (2 * 3)
    penalty = model.reg_loss(users, pos, neg)
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    model.zero_grad()
    penalty.backward()
    reached = [model.projection[m].weight.grad is not None and bool(model.projection[m].weight.grad.abs().sum() > 0)
               for m in MODALITIES]
    assert reached == [reg_content] * len(MODALITIES)


@pytest.mark.parametrize("reg_content", [True, False])
def test_vbpr_loss_looks_up_once_and_equals_its_definition(reg_content, make_config):
    """calculate_loss looks each table up once (distinct items, penalty rows weighted by their
    count in the batch); it is still BPR(pair_scores) + reg_weight x reg_loss, and so are its
    gradients for every parameter."""
    from recbole_tru.losses import bpr_loss

    config, train_data, model = setup(make_config, "VBPR", reg_weight=0.01, reg_content=reg_content)
    batch = first_batch(train_data)
    users, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    assert len(torch.unique(torch.cat([pos, neg]))) < 2 * len(pos)      # repeated items: counts matter
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model.calculate_loss(batch)
    grads = torch.autograd.grad(loss, params)
    expected = bpr_loss(*model.pair_scores(users, pos, neg)) + 0.01 * model.reg_loss(users, pos, neg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip(grads, torch.autograd.grad(expected, params)):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", MODELS)
def test_full_sort_predict_equals_predict(name, make_config):
    _, train_data, model = setup(make_config, name)
    adam_step(model, first_batch(train_data))                    # non-zero biases, moved weights
    model.eval()
    users = [1, 17, 40]
    with torch.no_grad():
        full = full_sort(model, users)
        assert full.shape == (3, model.n_items)
        torch.testing.assert_close(full, all_pairs(model, users), rtol=1e-5, atol=1e-5)
        assert not torch.equal(full[0], full[1])


# --------------------------------------------------------------------------- MMGCN's graph

def expected_mean_adjacency(dataset):
    n_users, n = dataset.user_num, dataset.user_num + dataset.item_num
    adj = torch.zeros(n, n)
    u, i = dataset.inter_feat["user_id"], dataset.inter_feat["item_id"] + n_users
    adj[u, i] = 1
    adj[i, u] = 1
    return adj / adj.sum(1, keepdim=True).clamp(min=1)


def test_mmgcn_adjacency_is_the_row_normalised_training_graph(make_config):
    config = make_config("MMGCN")
    _, train_data, _, test_data = load_data(config)
    model = build_model(config, train_data.dataset)
    train = train_data.dataset
    adj = model.adjacency.to_dense()
    torch.testing.assert_close(adj, expected_mean_adjacency(train))
    rows = adj.sum(1)
    has_edges = (adj > 0).any(1)
    torch.testing.assert_close(rows[has_edges], torch.ones(int(has_edges.sum())))
    assert (rows[~has_edges] == 0).all()
    assert not has_edges[0] and not has_edges[train.user_num]    # [PAD] user and item
    # only the training split: a test interaction is not an edge
    test_inter = test_data.dataset.inter_feat
    u, i = test_inter["user_id"][0], test_inter["item_id"][0]
    assert adj[u, train.user_num + i] == 0


def test_mmgcn_built_on_a_copy_without_some_interactions_has_no_such_edges(make_config):
    config = make_config("MMGCN")
    _, train_data, _, _ = load_data(config)
    train = train_data.dataset
    n_users = train.user_num
    inter = train.inter_feat
    keep = torch.ones(len(inter), dtype=torch.bool)
    keep[::7] = False
    retained = train.copy(inter[torch.nonzero(keep).squeeze(1)])
    full, reduced = build_model(config, train), build_model(config, retained)
    adj_full, adj = full.adjacency.to_dense(), reduced.adjacency.to_dense()
    users, items = inter["user_id"], inter["item_id"] + n_users
    assert (adj_full[users, items] > 0).all()
    assert (adj[users[~keep], items[~keep]] == 0).all()          # forgotten edges are gone
    assert (adj[items[~keep], users[~keep]] == 0).all()
    assert (adj[users[keep], items[keep]] > 0).all()
    torch.testing.assert_close(adj, expected_mean_adjacency(retained))
    reduced.load_state_dict(full.state_dict())                   # same parameters, other graph
    assert torch.equal(reduced.adjacency.to_dense(), adj)         # the graph is not in the state


@pytest.mark.parametrize("combination", ["concat", "add"])
def test_mmgcn_combinations(combination, make_config):
    _, train_data, model = setup(make_config, "MMGCN", combination=combination, latent_dim=6)
    first = model.branch["text"].combine[0]
    assert first.in_features == (6 + 8 if combination == "concat" else 6)
    loss = adam_step(model, first_batch(train_data))
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(full_sort(model, [3]), all_pairs(model, [3]), rtol=1e-5, atol=1e-5)


def test_mmgcn_invalid_combination_raises(make_config):
    config = make_config("MMGCN", combination="sum")
    _, train_data, _, _ = load_data(config)
    with pytest.raises(ValueError, match=r"'combination'.*'sum'"):
        build_model(config, train_data.dataset)


# --------------------------------------------------------------------------- construction

@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_initial_parameters(name, make_config):
    config, train_data, model = setup(make_config, name)
    again = build_model(config, train_data.dataset)
    other = build_model(make_config(name, seed=8), train_data.dataset)
    state, state_again, state_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    assert not all(torch.equal(state[k], state_other[k]) for k in state)


def test_vbpr_without_modalities_raises(make_config):
    config = make_config("VBPR", modalities=None)
    _, train_data, _, _ = load_data(config)
    assert train_data.dataset.item_features == {}
    with pytest.raises(ValueError, match="'modalities'"):
        build_model(config, train_data.dataset)


# --------------------------------------------------------------------------- evaluation cache

def test_cached_memoises_only_in_evaluation(make_config):
    _, train_data, model = setup(make_config, "VBPR")
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    model.eval()
    with torch.no_grad():
        assert model.cached(compute) == 1 and model.cached(compute) == 1
    assert model.cached(compute) == 2                             # gradients on: never cached
    model.train()
    with torch.no_grad():
        assert model.cached(compute) == 3                         # training: never cached
    model.eval()
    with torch.no_grad():
        model.item_bias.weight[1] += 1.0                          # any in-place change
        assert model.cached(compute) == 4 and model.cached(compute) == 4


@pytest.mark.parametrize("name", MODELS)
def test_full_sort_scores_are_fresh_after_a_step_and_a_reload(name, make_config):
    _, train_data, model = setup(make_config, name)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    users = [2, 9]
    model.eval()
    with torch.no_grad():
        before = full_sort(model, users)
        assert torch.equal(full_sort(model, users), before)
    adam_step(model, first_batch(train_data))
    model.eval()
    with torch.no_grad():
        after = full_sort(model, users)
        assert not torch.equal(after, before)
        torch.testing.assert_close(after, all_pairs(model, users), rtol=1e-5, atol=1e-5)
    model.load_state_dict(initial)
    with torch.no_grad():
        torch.testing.assert_close(full_sort(model, users), before, rtol=0, atol=0)


def test_mmgcn_gradients_are_bit_identical_with_several_threads(make_config):
    """Rows of the propagated table are gathered with a deterministic backward: the same batch
    gives bit-identical gradients twice with 2 threads (indexing's accumulate did not)."""
    config = make_config("MMGCN")
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset)
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(1, model.n_users, (60000,), generator=gen)        # many repeated rows
    items = torch.randint(1, model.n_items, (60000,), generator=gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(3):
            model.zero_grad()
            (pos,) = model.pair_scores(users, items)
            pos.pow(2).sum().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        for name, grad in grads[0].items():
            assert torch.equal(grad, other[name]), name


def test_vbpr_frozen_content_is_projected_once_per_item(make_config):
    """With the content side frozen (TRU's update and repair), an item's content is projected
    the first time a step meets it and kept; the scores and their gradients are those of the
    fresh projection; training the projection, or changing it, bypasses or drops the store."""
    _, train_data, model = setup(make_config, "VBPR")
    batch = first_batch(train_data)
    fresh_loss = model.calculate_loss(batch)
    fresh = torch.autograd.grad(fresh_loss, [model.user_embedding.weight])[0]
    assert not hasattr(model, "_row_content_cache")              # trainable projection: never kept
    content = [p for n, p in model.named_parameters() if n.startswith(("projection", "feature_bias"))]
    for p in content:
        p.requires_grad_(False)
    projected, original = [], model._content

    def counting(items=None):
        projected.append(items.clone())
        return original(items)

    model._content = counting
    loss = model.calculate_loss(batch)
    torch.testing.assert_close(loss, fresh_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, [model.user_embedding.weight])[0], fresh, rtol=1e-5, atol=1e-6)
    items = torch.cat([batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]]).unique()
    assert torch.equal(projected[0].sort().values, items)
    model.calculate_loss(batch)
    assert len(projected) == 1                                    # every item of the batch is kept
    with torch.no_grad():
        content[0][0, 0] += 1.0                                   # a content-side change drops the store
    model.calculate_loss(batch)
    assert len(projected) == 2 and torch.equal(projected[1].sort().values, items)
