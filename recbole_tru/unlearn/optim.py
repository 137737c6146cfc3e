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
"""

import torch


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
                if p.grad.is_sparse:
                    raise RuntimeError("RowAdam does not take sparse gradients")
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
                    if p in self._rows:
                        active[self._rows[p]] = True
                    else:
                        active |= p.grad.ne(0).any(dim=1)
                    rows = active.nonzero().squeeze(1)
                    if len(rows) == 0:
                        continue
                    param, grad = p.index_select(0, rows), p.grad.index_select(0, rows)
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
