"""RowAdam: torch.optim.Adam's updates, at a cost that follows the rows that move."""
import pytest
import torch

from recbole_tru.unlearn.optim import RowAdam


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
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = RowAdam(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
