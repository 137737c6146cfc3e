"""RowAdam: torch.optim.Adam's updates, at a cost that follows the rows that move."""
import pytest
import torch

from recbole_tru.unlearn.optim import RowAdam, dense, mask_rows, project_rows, row_inner, sparse_lookups


def _pair(seed=0):
    torch.manual_seed(seed)
    table, bias = torch.randn(50, 4), torch.randn(3)
    return ([torch.nn.Parameter(table.clone()), torch.nn.Parameter(bias.clone())],
            [torch.nn.Parameter(table.clone()), torch.nn.Parameter(bias.clone())])


def _loss(params, rows, t):
    table, bias = params
    return (table[rows] ** 2).sum() * (t + 1) + (bias ** 3).sum()


def test_row_adam_is_bit_identical_to_adam_on_row_sparse_gradients():
    ours, theirs = _pair()
    opt, ref = RowAdam(ours, lr=0.01, betas=(0.8, 0.99)), torch.optim.Adam(theirs, lr=0.01, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(1)
    for t in range(25):
        rows = torch.randint(0, 50, (5,), generator=gen)
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            _loss(params, rows, t).backward()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # a row that got a gradient once keeps moving afterwards (its moments decay, as in Adam)
    assert len(opt.active_rows(ours[0])) > 5


def test_rows_without_a_gradient_never_move_and_are_not_active():
    (table, bias), _ = _pair()
    before = table.detach().clone()
    opt = RowAdam([table, bias], lr=0.1)
    for t in range(5):
        opt.zero_grad()
        _loss((table, bias), torch.tensor([3, 7]), t).backward()
        opt.step()
    assert opt.active_rows(table).tolist() == [3, 7]
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[[3, 7]] = False
    assert torch.equal(table[untouched], before[untouched])
    assert not torch.equal(table[3], before[3])


def test_restrict_reads_only_the_declared_rows_and_matches_adam_under_a_mask():
    ours, theirs = _pair(3)
    mask = torch.zeros(50, 1)
    mask[[1, 2, 40]] = 1.0
    for params in (ours, theirs):
        params[0].register_hook(lambda g: g * mask)              # TRU's isolation hook
    opt, ref = RowAdam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05)
    opt.restrict(ours[0], torch.tensor([40, 1, 2, 2]))
    for t in range(10):
        rows = torch.arange(t, t + 30)
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            _loss(params, rows, t).backward()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert opt.active_rows(ours[0]).tolist() == [1, 2, 40]


def test_bad_use_is_refused():
    (table, bias), _ = _pair()
    with pytest.raises(ValueError, match="learning rate"):
        RowAdam([table], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        RowAdam([table], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="2-D"):
        RowAdam([bias]).restrict(bias, [0])
    vector = torch.nn.Parameter(torch.ones(4))
    opt = RowAdam([vector])
    vector.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([1.0]), (4,), check_invariants=False)
    with pytest.raises(RuntimeError, match="sparse gradients of 2-D"):
        opt.step()


def _embedding_pair(seed=0):
    torch.manual_seed(seed)
    dense_model, sparse_model = torch.nn.Embedding(40, 3), torch.nn.Embedding(40, 3)
    sparse_model.load_state_dict(dense_model.state_dict())
    return dense_model, sparse_model


def _lookup_loss(emb, rows, t):
    return (emb(rows) ** 2).sum() * (t + 1) + emb(rows[:2]).sum()


def test_row_sparse_gradients_give_adams_updates():
    """An embedding with sparse lookups, stepped by RowAdam, follows torch.optim.Adam on the
    same embedding with dense gradients (repeated rows in a batch included)."""
    reference, ours = _embedding_pair()
    ref, opt = torch.optim.Adam(reference.parameters(), lr=0.05), RowAdam(ours.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(2)
    with sparse_lookups(ours, ["weight"]) as switched:
        assert switched == [ours] and ours.sparse
        for t in range(20):
            rows = torch.randint(0, 40, (8,), generator=gen)
            for model, o in ((reference, ref), (ours, opt)):
                o.zero_grad()
                _lookup_loss(model, rows, t).backward()
                o.step()
            assert ours.weight.grad.is_sparse and not reference.weight.grad.is_sparse
    assert not ours.sparse                                   # restored on exit
    assert torch.allclose(ours.weight, reference.weight, atol=1e-6, rtol=0)
    moved = (ours.weight != _embedding_pair()[1].weight).any(1)
    assert torch.equal(moved.nonzero().squeeze(1), opt.active_rows(ours.weight))


def test_restrict_with_sparse_gradients_moves_only_the_declared_rows():
    reference, ours = _embedding_pair(1)
    before = ours.weight.detach().clone()
    opt = RowAdam(ours.parameters(), lr=0.1)
    opt.restrict(ours.weight, torch.tensor([3, 5]))
    with sparse_lookups(ours, ["weight"]):
        for t in range(3):
            opt.zero_grad()
            _lookup_loss(ours, torch.tensor([3, 4, 5, 6]), t).backward()
            opt.step()
    changed = (ours.weight != before).any(1).nonzero().squeeze(1).tolist()
    assert changed == [3, 5]


def test_row_helpers_agree_for_dense_and_sparse_gradients():
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(6, 2))
    rows, values = torch.tensor([[4, 1, 4]]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]])
    sparse = torch.sparse_coo_tensor(rows, values, (6, 2), check_invariants=False)
    full = sparse.to_dense()
    assert full[4].tolist() == [1.5, 2.5]                    # repeated entries add up
    mask = torch.zeros(6, 1)
    mask[[1, 2]] = 1.0
    assert torch.equal(dense(mask_rows(sparse, mask)), full * mask)
    assert torch.equal(mask_rows(full, mask), full * mask)
    assert dense(None) is None
    # Σ <G, θ>: the same value, and its gradient is G, sparse for a sparse G
    a, b = row_inner(sparse, table), row_inner(full, table)
    assert torch.allclose(a, b)
    (grad,) = torch.autograd.grad(a, table)
    assert grad.is_sparse and torch.equal(grad.to_dense(), full)


def test_project_rows_removes_the_basis_component_dense_and_sparse():
    """``project_rows``: g - (g·V)·Vᵀ, orthogonal to V, rows without a gradient stay empty, and a
    row-sparse gradient gives the dense one's values on its rows."""
    torch.manual_seed(0)
    V = torch.linalg.qr(torch.randn(6, 2))[0]
    g = torch.zeros(5, 6)
    g[[1, 3]] = torch.randn(2, 6)
    out = project_rows(g, V)
    assert torch.allclose(out, g - (g @ V) @ V.T)
    assert (out @ V).abs().max() < 1e-6
    assert not out[[0, 2, 4]].any()
    sparse = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), g[[1, 3]], g.shape)
    assert torch.allclose(dense(project_rows(sparse, V)), out)
    # a vector already orthogonal to V is left as it is
    w = torch.randn(1, 6)
    w = w - (w @ V) @ V.T
    assert torch.allclose(project_rows(w, V), w, atol=1e-6)
