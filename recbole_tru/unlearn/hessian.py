"""Second-order algebra on a selection of parameter rows (torch only, no RecBole object).

The influence-function method (``influence.py``) edits a few rows of a model's embedding tables
with one damped Newton step. Here is what that needs, as pure functions of tensors:

* :class:`RowBlock` -- chosen rows of some parameters viewed as ONE flat vector (gather a
  gradient's rows, add a flat step to the rows in place);
* :func:`block_gradient` -- ``∇ loss`` on the block's rows;
* :class:`HessianOperator` -- ``v -> ∇²loss · v`` restricted to the block (``H_SS v``), by double
  backward: the first-order gradient is built once with ``create_graph=True`` and each product
  is one more backward pass through it;
* :func:`conjugate_gradient` -- solves ``(H + λI) x = b`` for a symmetric ``H`` given only as
  products, stopping at a relative residual, an iteration cap, a direction of non-positive
  curvature (``H`` of a non-convex model need not be positive definite) or a trust-region radius;
* :func:`newton_step` -- the three together: ``x = (∇²R + λI)⁻¹ ∇F`` on the block.
"""
from dataclasses import dataclass, field

import torch


class RowBlock:
    """Rows ``rows[t]`` (LongTensor) of each tensor ``params[t]``, as one flat vector
    (parameter by parameter, row by row)."""

    def __init__(self, params, rows):
        if len(params) != len(rows):
            raise ValueError("one row index per parameter")
        self.params = list(params)
        self.rows = [torch.as_tensor(r, dtype=torch.long, device=p.device) for p, r in zip(self.params, rows)]
        self.shapes = [(len(r), *p.shape[1:]) for p, r in zip(self.params, self.rows)]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        self.size = sum(self.sizes)

    def gather(self, tensors):
        """The block's rows of ``tensors`` (aligned with ``params``; None = zeros) as a flat vector."""
        parts = []
        for t, rows, shape, p in zip(tensors, self.rows, self.shapes, self.params):
            parts.append(torch.zeros(shape, dtype=p.dtype, device=p.device).reshape(-1) if t is None
                         else t[rows].reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0)

    def split(self, flat):
        """``flat`` [size] -> one tensor of shape [rows, ...] per parameter."""
        return [part.view(shape) for part, shape in zip(flat.split(self.sizes), self.shapes)]

    def values(self):
        with torch.no_grad():
            return self.gather([p.detach() for p in self.params]).clone()

    @torch.no_grad()
    def add_(self, flat, alpha=1.0):
        """``params[t][rows[t]] += alpha · flat`` (in place; other rows untouched)."""
        for p, rows, part in zip(self.params, self.rows, self.split(flat)):
            p.index_add_(0, rows, part.to(p.dtype), alpha=alpha)


def block_gradient(loss, block):
    """``∇ loss`` on the block's rows (flat; zero where the loss does not reach)."""
    grads = torch.autograd.grad(loss, block.params, allow_unused=True)
    return block.gather(grads).detach()


class HessianOperator:
    """``v -> H_SS v`` with ``H = ∇² loss`` and ``S`` the block's rows, by double backward.

    ``loss`` is a scalar built from the block's parameters. Its gradient is taken once with
    ``create_graph=True`` (kept: :attr:`gradient` is ``∇ loss`` on the block) and every product
    differentiates ``<∇loss, v>`` once more (the graph is retained for the next product), so a
    product costs one backward pass. Rows outside ``S`` are held fixed: this is the
    Hessian of the loss restricted to the block, not a block of the inverse."""

    def __init__(self, loss, block):
        self.block = block
        self._grads = torch.autograd.grad(loss, block.params, create_graph=True, allow_unused=True)
        self.gradient = block.gather([None if g is None else g.detach() for g in self._grads])
        self.products = 0

    def __call__(self, v):
        self.products += 1
        dot = 0.0
        for g, rows, part in zip(self._grads, self.block.rows, self.block.split(v)):
            if g is not None and g.requires_grad:
                dot = dot + (g[rows] * part).sum()
        if not torch.is_tensor(dot):            # the loss is linear in the block: H = 0
            return torch.zeros_like(v)
        hv = torch.autograd.grad(dot, self.block.params, retain_graph=True, allow_unused=True)
        return self.block.gather(hv).detach()


class GaussNewtonOperator:
    """``v -> G_SS v`` with the generalised Gauss-Newton matrix of a pairwise loss
    ``Σ_i φ(x_i) + R(θ)``: ``G = Jᵀ diag(w) J + ∇²R``, ``J = ∂x/∂θ_S`` (the margins' Jacobian on
    the block), ``w_i = φ''(x_i) >= 0`` given, and ``R`` (the regulariser and whatever else the
    loss adds) by exact double backward. It drops the ``Σ φ'(x_i) ∇²x_i`` term, the part of the
    Hessian that makes a bilinear or deep score's Hessian indefinite, so ``G`` is positive
    semi-definite whenever ``∇²R`` is (Martens 2010; Schraudolph 2002).

    ``Jv`` is taken by the double-backward trick (``Jv = ∂/∂u <Jᵀu, v>``, linear in a dummy
    ``u``); the graphs are built once and retained, so a product costs three backward passes."""

    def __init__(self, margins, weights, remainder, block):
        self.block = block
        self.weights = weights.detach()
        self._margins = margins
        self._u = torch.zeros_like(margins, requires_grad=True)
        self._jt_u = torch.autograd.grad(margins, block.params, grad_outputs=self._u, create_graph=True,
                                         allow_unused=True)
        self._remainder = None if remainder is None else HessianOperator(remainder, block)
        self.products = 0

    def __call__(self, v):
        self.products += 1
        dot = 0.0
        for g, rows, part in zip(self._jt_u, self.block.rows, self.block.split(v)):
            if g is not None:
                dot = dot + (g[rows] * part).sum()
        out = torch.zeros_like(v)
        if torch.is_tensor(dot) and dot.requires_grad:
            (jv,) = torch.autograd.grad(dot, self._u, retain_graph=True)
            back = torch.autograd.grad(self._margins, self.block.params, grad_outputs=self.weights * jv.detach(),
                                       retain_graph=True, allow_unused=True)
            out = out + self.block.gather(back).detach()
        if self._remainder is not None:
            out = out + self._remainder(v)
        return out


@dataclass
class CGResult:
    x: torch.Tensor
    iterations: int
    residual: float                  # ||b - (H + λI) x|| / ||b|| (the recursion's residual)
    stop: str                        # "tolerance", "iterations", "negative curvature", "trust region", "zero right-hand side"
    residuals: list = field(default_factory=list)      # relative residual after each iteration


def conjugate_gradient(matvec, b, damping=0.0, iterations=50, tolerance=1e-3, radius=None):
    """Solve ``(H + damping·I) x = b`` from ``x = 0`` by conjugate gradient (``matvec(v) = H v``,
    ``H`` symmetric). Stops when ``||r|| <= tolerance·||b||``, after ``iterations`` products, at a
    direction ``p`` with ``pᵀ(H + λI)p <= 0`` (the iterate so far is returned: the truncated
    Newton step of a non-convex problem), or -- with ``radius`` -- where the iterate would leave
    the ball ``||x|| <= radius`` (it stops on the sphere along ``p``: Steihaug's truncated CG, the
    trust-region Newton step; CG iterates grow in norm monotonically, so no later one is inside)."""
    x = torch.zeros_like(b)
    b_norm = float(b.norm())
    if b_norm == 0.0:
        return CGResult(x, 0, 0.0, "zero right-hand side")
    r, p = b.clone(), b.clone()
    rr = float(r @ r)
    residuals = []
    for k in range(1, int(iterations) + 1):
        ap = matvec(p) + damping * p
        curvature = float(p @ ap)
        if curvature <= 0.0 or curvature != curvature:
            return CGResult(x, k - 1, (rr ** 0.5) / b_norm, "negative curvature", residuals)
        alpha = rr / curvature
        if radius is not None and float((x + alpha * p).norm()) >= radius:
            # τ >= 0 with ||x + τ p|| = radius
            xp, pp, xx = float(x @ p), float(p @ p), float(x @ x)
            tau = (-xp + max(xp * xp + pp * (radius * radius - xx), 0.0) ** 0.5) / pp
            x = x + tau * p
            r = r - tau * ap
            residuals.append(float(r.norm()) / b_norm)
            return CGResult(x, k, residuals[-1], "trust region", residuals)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = float(r @ r)
        residuals.append((rr_new ** 0.5) / b_norm)
        if residuals[-1] <= tolerance:
            return CGResult(x, k, residuals[-1], "tolerance", residuals)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return CGResult(x, int(iterations), residuals[-1] if residuals else 1.0, "iterations", residuals)


def newton_step(forget_loss, retain_loss, block, damping, iterations=50, tolerance=1e-3, extra_gradient=None):
    """The influence step on ``block``: ``x = (∇²retain_loss + damping·I)⁻¹ (∇forget_loss + extra)``.

    With ``forget_loss = Σ_{i∈D_f} ℓ_i`` and ``retain_loss = Σ_{i∈D_r} ℓ_i`` (sums, not means)
    at the optimum of ``Σ_{i∈D} ℓ_i``, ``θ + x`` is the Newton step of the retained objective
    from that optimum (see docs/influence.md). ``extra_gradient`` (flat, optional) is added to
    the right-hand side. Returns ``(x, CGResult, gradient of forget_loss)``."""
    g = block_gradient(forget_loss, block)
    if extra_gradient is not None:
        g = g + extra_gradient
    hessian = HessianOperator(retain_loss, block)
    result = conjugate_gradient(hessian, g, damping=damping, iterations=iterations, tolerance=tolerance)
    return result.x, result, g
