"""Adam whose per-step cost follows the rows that move, not the size of the tables.

TRU's targeted steps move a few hundred user rows and its repair a few thousand rows of
tables with one row per user or item. ``torch.optim.Adam`` updates every element of every
table at every step, so at Amazon sizes the optimizer alone grew with the catalogue
(9 ms per step at Baby size, 24 ms at Clothing size, measured in the scale benchmark).

:class:`RowAdam` gives the same result as ``torch.optim.Adam`` (no weight decay, no AMSGrad)
while touching only the *active* rows of each 2-D parameter: the rows that have had a non-zero
gradient at some step so far. A row outside that set has zero moments and zero gradient, and
Adam's update of such a row is exactly zero, so skipping it changes nothing; once a row has
had a gradient its moments keep decaying and it keeps moving, as in Adam. The element-wise
arithmetic is Adam's own, in the same order, on the gathered rows.

Finding the rows with a gradient reads the whole dense gradient once per step; a caller that
knows where every non-zero gradient row can be (TRU's isolation mask) declares it with
:meth:`RowAdam.restrict`, and that read is skipped too.

A dense gradient of a table is itself a table-sized tensor: autograd fills it with zeros, hooks
and masks multiply it whole. :func:`sparse_lookups` makes the model's embedding lookups return
row-sparse gradients (``nn.Embedding(sparse=True)``) for a block of steps; RowAdam takes them
(the same update: a row without a gradient entry has a zero gradient), and :func:`mask_rows`,
:func:`row_inner` and :func:`dense` do for either kind what TRU did with the dense tensors.
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class RowAdam(torch.optim.Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps)`` with row-restricted updates of 2-D
    parameters (see the module docstring); 0-D/1-D parameters are updated whole."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if lr < 0:
            raise ValueError(f"RowAdam: learning rate must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"RowAdam: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))
        self._rows = {}

    def restrict(self, p, rows):
        """Declare that every non-zero gradient row of the 2-D parameter ``p`` is in ``rows``
        (LongTensor of row ids): only those rows are read and updated. A wrong declaration
        leaves the rows outside it unchanged, so it must hold by construction (a gradient hook
        that zeroes the other rows, say)."""
        if p.dim() != 2:
            raise ValueError(f"RowAdam.restrict takes a 2-D parameter, got shape {tuple(p.shape)}")
        self._rows[p] = torch.as_tensor(rows, dtype=torch.long, device=p.device).unique()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                sparse = p.grad.is_sparse
                if sparse and p.dim() != 2:
                    raise RuntimeError(f"RowAdam takes sparse gradients of 2-D parameters only, got shape {tuple(p.shape)}")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if p.dim() == 2:
                        state["active"] = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
                state["step"] += 1
                step = state["step"]
                if p.dim() == 2:
                    active = state["active"]
                    if sparse:
                        g = p.grad.coalesce()
                        where, values = g.indices()[0], g.values()
                    if p in self._rows:
                        active[self._rows[p]] = True
                    elif sparse:
                        active[where[values.ne(0).any(dim=1)]] = True
                    else:
                        active |= p.grad.ne(0).any(dim=1)
                    rows = active.nonzero().squeeze(1)
                    if len(rows) == 0:
                        continue
                    param = p.index_select(0, rows)
                    if sparse:          # the gradient of the active rows: its entries where it has one, else 0
                        keep = active[where]
                        position = torch.searchsorted(rows, where[keep])
                        grad = torch.zeros_like(param).index_copy_(0, position, values[keep])
                    else:
                        grad = p.grad.index_select(0, rows)
                    exp_avg, exp_avg_sq = state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows)
                else:
                    rows, param, grad = None, p, p.grad
                    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                # torch.optim.Adam's single-tensor arithmetic
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = group["lr"] / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(group["eps"])
                param.addcdiv_(exp_avg, denom, value=-step_size)
                if rows is not None:
                    p.index_copy_(0, rows, param)
                    state["exp_avg"].index_copy_(0, rows, exp_avg)
                    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        return loss

    def active_rows(self, p):
        """Rows of the 2-D parameter ``p`` this optimizer has moved (None before its first step)."""
        state = self.state.get(p)
        return None if not state or "active" not in state else state["active"].nonzero().squeeze(1)


@contextmanager
def sparse_lookups(model, names):
    """Within the block, the lookups of ``model``'s ``nn.Embedding`` modules whose weight is
    named in ``names`` give row-sparse gradients (``sparse=True``); restored on exit. A weight
    also used whole (a graph propagation) still gets a dense gradient from that use; autograd
    adds the two. Only for :class:`RowAdam` steps: ``torch.optim.Adam`` refuses sparse gradients."""
    names = set(names)
    modules = [m for n, m in model.named_modules()
               if isinstance(m, nn.Embedding) and (f"{n}.weight" if n else "weight") in names]
    before = [m.sparse for m in modules]
    for m in modules:
        m.sparse = True
    try:
        yield modules
    finally:
        for m, flag in zip(modules, before):
            m.sparse = flag


def mask_rows(grad, mask):
    """``grad * mask`` for a row mask [rows, 1...] of 0/1, dense or row-sparse ``grad`` (a
    sparse one keeps its entries on the mask's rows only)."""
    if not grad.is_sparse:
        return grad * mask
    g = grad.coalesce()
    where, values = g.indices()[0], g.values()
    keep = mask.view(-1)[where] != 0
    return torch.sparse_coo_tensor(where[keep].unsqueeze(0), values[keep], g.shape, is_coalesced=True,
                                   check_invariants=False)


def project_rows(grad, basis):
    """``grad``'s rows without their component in the span of ``basis`` [cols, r] (orthonormal
    columns): ``g - (g·V)·Vᵀ``, dense or row-sparse ``grad`` (a sparse one keeps its rows)."""
    if not grad.is_sparse:
        return grad - (grad @ basis) @ basis.T
    g = grad.coalesce()
    values = g.values()
    return torch.sparse_coo_tensor(g.indices(), values - (values @ basis) @ basis.T, g.shape, is_coalesced=True,
                                   check_invariants=False)


def row_inner(grad, param):
    """``Σ <grad, param>`` (differentiable in ``param``), whose gradient is ``grad``: a
    row-sparse ``grad`` gathers its rows with a sparse lookup, so that gradient stays row-sparse."""
    if not grad.is_sparse:
        return (grad * param).sum()
    g = grad.coalesce()
    return (g.values() * F.embedding(g.indices()[0], param, sparse=True)).sum()


def dense(grad):
    """``grad`` as a dense tensor (None stays None)."""
    return grad.to_dense() if grad is not None and grad.is_sparse else grad
