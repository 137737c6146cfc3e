"""``influence``: influence-function unlearning, one damped Newton step on the rows the request
touches (SCIF, Li et al., WWW 2023; IFRU, Zhang et al., 2023). Defined in docs/influence.md.

With ``ℓ_i`` the training loss of one (user, positive, negative) triple -- BPR plus the
model's L2 penalty on the triple's rows, i.e. ``B · calculate_loss`` of a batch is the sum of
its ``ℓ_i`` -- training minimises ``(1/n) Σ_{i∈D} ℓ_i`` and retraining ``(1/n_r) Σ_{i∈D_r} ℓ_i``.
At the original optimum ``θ*``, ``Σ_{D_r} ∇ℓ_i = -Σ_{D_f} ∇ℓ_i``, so the Newton step of the
retained objective is

    θ ← θ* + s · (Σ_{i∈D_r} ∇²ℓ_i + λI)⁻¹ Σ_{i∈D_f} ∇ℓ_i        (on the selected rows S only)

i.e. ``θ* + (1/n_r) H_r⁻¹ Σ_{D_f} ∇ℓ_i`` with ``H_r`` the MEAN retained Hessian: the scaling is
``1/n_r``, not ``1/n``. ``λ`` (``influence_damping``) is in the same sum units (λ = 1 adds one
interaction's worth of unit curvature), ``s`` is ``influence_scale`` (1 = the literal step).

* **S, the rows that move** (SCIF's selection): every user table row of the forget pairs' users
  and every item-ID row of their items (``describe(model)``); on a graph backbone also up to
  ``influence_neighbours`` 1-hop collaborative neighbours (users of the affected items' retained
  interactions, items of the affected users'), those with the largest forget gradient. Dense
  shared layers (projections, graph layers) and every other row stay fixed.
* **The gradient** ``Σ_{D_f} ∇ℓ_i`` over every forget pair with ``influence_negatives`` fixed
  sampled negatives (averaged), on the graph the model was trained on. On a graph backbone
  ``influence_graph_term`` adds IFRU's spill-over term ``Σ_{D_r}[∇ℓ_i(G) - ∇ℓ_i(G_r)]`` (the
  retained triples' gradients change because the graph lost the deleted edges).
* **The Hessian** ``Σ_{D_r} ∇²ℓ_i`` on S, estimated on a seeded sample of ``influence_retain_sample``
  retained triples that touch S (one fixed negative each, weight |N|/m) -- by default its
  Gauss-Newton part (``influence_hessian``), positive semi-definite -- applied through
  Hessian-vector products (:mod:`~recbole_tru.unlearn.hessian`); the system is solved by
  conjugate gradient (``influence_cg_iterations``, ``influence_cg_tolerance``) inside a trust
  radius ``‖s·x‖ <= influence_trust_radius · ‖θ*_S‖`` (Steihaug), which keeps MMGCN from collapsing.
* **Fully deleted users and items** (``influence_reset``): the retained objective does not
  depend on their rows (H_r is 0 there), so a Newton step is undefined; their rows are reset to
  the seeded initial state, where retraining leaves capacity nobody trains (as TRU's reset).
"""
import time

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_tru.model.base import MultimodalRecommender
from recbole_tru.training import build_model
from recbole_tru.unlearn.base import UnlearnTrainer
from recbole_tru.unlearn.capacity import describe, pair_scores, reset_rows
from recbole_tru.unlearn.hessian import (GaussNewtonOperator, HessianOperator, RowBlock, block_gradient,
                                         conjugate_gradient)

# key -> (test, what is allowed); checked when the trainer is built
OPTION_RULES = {
    "damping": (lambda v: v >= 0, "a number >= 0"),
    "scale": (lambda v: v > 0, "a number > 0"),
    "cg_iterations": (lambda v: int(v) == v and v > 0, "an integer > 0"),
    "cg_tolerance": (lambda v: v > 0, "a number > 0"),
    "retain_sample": (lambda v: int(v) == v and v > 0, "an integer > 0"),
    "negatives": (lambda v: int(v) == v and v > 0, "an integer > 0"),
    "neighbours": (lambda v: int(v) == v and v >= 0, "an integer >= 0"),
    "trust_radius": (lambda v: v >= 0, "a number >= 0"),
}
HESSIANS = ("gauss_newton", "exact")


def is_graph_model(model):
    """Whether ``model`` propagates over an interaction graph built from its training data (a
    sparse buffer or attribute: MMGCN's ``adjacency``, LightGCN's ``norm_adj_matrix``)."""
    tensors = list(model.buffers()) + [v for v in vars(model).values() if torch.is_tensor(v)]
    return any(t.layout != torch.strided for t in tensors)


def sample_negatives(rng, users, n_items, history, count):
    """[len(users), count] item ids in ``1..n_items-1`` (0 is RecBole's padding) that are not in
    the user's ``history`` (sorted int64 keys ``user · n_items + item``), drawn uniformly."""
    users = np.asarray(users, dtype=np.int64)[:, None]
    out = rng.integers(1, n_items, size=(len(users), count))
    for _ in range(100):
        bad = np.isin(users * n_items + out, history)
        if not bad.any():
            break
        out[bad] = rng.integers(1, n_items, size=int(bad.sum()))
    return out


class InfluenceTrainer(UnlearnTrainer):
    name = "influence"

    def __init__(self, config, model, data):
        super().__init__(config, model, data)
        for key, (test, allowed) in OPTION_RULES.items():
            value = self.option(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not test(value):
                raise ValueError(f"config key 'influence_{key}' must be {allowed}, got {value!r}")
        if self.option("hessian") not in HESSIANS:
            raise ValueError(f"config key 'influence_hessian' must be one of {', '.join(HESSIANS)}, "
                             f"got {self.option('hessian')!r}")
        self.capacity = describe(model)
        self.params = dict(model.named_parameters())
        self.graph = is_graph_model(model)
        self._rng = np.random.default_rng([int(config["forget_seed"]), 17])
        self.stop_reason = None
        self.checks = []              # CG: one record per iteration (relative residual)
        self.selection = {}           # what moved: users, items, neighbours, reset ids

    def option(self, key):
        """``influence_<key>``; keys it does not declare (``epochs``, ``learning_rate``, read by
        the base trainer) fall back to the run's training settings. The method has no epochs."""
        own = f"{self.name}_{key}"
        return self.config[own] if own in self.config.final_config_dict else self.config[key]

    # ------------------------------------------------------------------ the method
    def unlearn(self, show_progress=False):
        start = time.perf_counter()
        f = self.data.forget
        empty = np.zeros(0, dtype=np.int64)
        reset = bool(self.option("reset"))
        reset_users = f.deleted_users if reset else empty
        reset_items = f.deleted_items if reset else empty
        users = np.setdiff1d(np.unique(f.users), reset_users)
        items = np.setdiff1d(np.unique(f.items), reset_items)
        names = sorted({n for n, _ in self.capacity.user_tables + self.capacity.item_id_tables})
        self._freeze(set(names))
        try:
            with self._timed("gradient"):
                scorer = self._graph_scorer(names)
                forget_loss = self._forget_loss(scorer)
                grads = torch.autograd.grad(forget_loss, [dict(scorer.named_parameters())[n] for n in names],
                                            allow_unused=True)
                grads = dict(zip(names, grads))
            with self._timed("select"):
                n_users, n_items = self._neighbours(users, items, reset_users, reset_items, grads)
                self.selection = {"users": users, "items": items, "neighbour_users": n_users,
                                  "neighbour_items": n_items, "reset_users": reset_users, "reset_items": reset_items}
                all_users, all_items = np.union1d(users, n_users), np.union1d(items, n_items)
                block = self._block(names, all_users, all_items)
                g = block.gather([grads[n] for n in block.names])
            record = {"phase": "influence", "users": len(users), "items": len(items),
                      "neighbour_users": len(n_users), "neighbour_items": len(n_items),
                      "reset_users": len(reset_users), "reset_items": len(reset_items),
                      "rows": int(sum(len(r) for r in block.rows)), "parameters": block.size,
                      "gradient_norm": float(g.norm())}
            if block.size == 0:
                self.stop_reason = "nothing to solve: no row of a partially affected user or item"
                record.update(cg_iterations=0, cg_residual=0.0, cg_stop=None, step_norm=0.0)
            else:
                with self._timed("solve"):
                    x, result, record_solve = self._solve(block, g, all_users, all_items, scorer, names)
                record.update(record_solve)
                with self._timed("update"):
                    step = float(self.option("scale")) * x
                    block.add_(step)
                record["step_norm"] = float(step.norm())
                self.stop_reason = (f"cg {result.stop} after {result.iterations} iteration(s), "
                                    f"relative residual {result.residual:.2e}")
            with self._timed("reset"):
                self._reset(reset_users, reset_items)
        finally:
            self._unfreeze()
        record["seconds"] = time.perf_counter() - start
        record.update({f"seconds_{part}": t for part, t in self.phase_seconds.items()})
        self._after_epoch(0, float(forget_loss.detach()), **record)
        self.seconds = time.perf_counter() - start - self._callback_seconds
        return self.model

    # ------------------------------------------------------------------ parts
    def _graph_scorer(self, names):
        """The model the forget gradient is taken on: for a graph backbone a copy built on the
        ORIGINAL training graph (the forget triples' loss is the original objective's), with
        the same parameter values; otherwise the model itself."""
        if not self.graph:
            return self.model
        scorer = build_model(self.config, self.data.train_dataset)
        scorer.load_state_dict(self.model.state_dict())
        for n, p in scorer.named_parameters():
            p.requires_grad_(n in names)
        return scorer

    def _batch(self, users, items, negatives):
        m = self.model
        return Interaction({m.USER_ID: torch.as_tensor(users, dtype=torch.long),
                            m.ITEM_ID: torch.as_tensor(items, dtype=torch.long),
                            m.NEG_ITEM_ID: torch.as_tensor(negatives, dtype=torch.long)}).to(self.device)

    def _history(self, retained_only):
        d, f = self.data, self.data.forget
        users, items = d.retain_users, d.retain_items
        if not retained_only:
            users, items = np.concatenate([users, f.users]), np.concatenate([items, f.items])
        return np.unique(users.astype(np.int64) * d.n_items + items)

    def _forget_loss(self, scorer):
        """``Σ_{i∈D_f} ℓ_i``: every forget pair with ``influence_negatives`` negatives the user never
        interacted with (the original training's sampler), the pair's loss their mean."""
        f, k = self.data.forget, int(self.option("negatives"))
        negatives = sample_negatives(self._rng, f.users, self.data.n_items, self._history(False), k)
        batch = self._batch(np.repeat(f.users, k), np.repeat(f.items, k), negatives.reshape(-1))
        return len(f.users) * scorer.calculate_loss(batch)

    def _neighbours(self, users, items, reset_users, reset_items, grads):
        """Graph backbones: up to ``influence_neighbours`` 1-hop neighbours of the affected rows
        (users of the affected items' retained interactions, items of the affected users'), the
        ones with the largest forget-gradient norm over their rows. None otherwise."""
        empty = np.zeros(0, dtype=np.int64)
        cap = int(self.option("neighbours"))
        if not self.graph or cap == 0:
            return empty, empty
        d = self.data
        rows = d.neighbourhood_rows(users=users, items=items)
        cand_users = np.setdiff1d(np.unique(d.retain_users[rows]), np.union1d(users, reset_users))
        cand_items = np.setdiff1d(np.unique(d.retain_items[rows]), np.union1d(items, reset_items))
        score_u, score_i = np.zeros(d.n_users), np.zeros(d.n_items)
        for tables, score in ((self.capacity.user_tables, score_u), (self.capacity.item_id_tables, score_i)):
            for name, offset in tables:
                g = grads[name]
                if g is not None:
                    rows_g = g[offset:offset + len(score)].detach()
                    score += rows_g.pow(2).reshape(len(score), -1).sum(1).cpu().numpy()
        kind = np.concatenate([np.zeros(len(cand_users), int), np.ones(len(cand_items), int)])
        ids = np.concatenate([cand_users, cand_items])
        score = np.concatenate([score_u[cand_users], score_i[cand_items]])
        order = np.lexsort((ids, kind, -score))
        keep = order[(score[order] > 0)][:cap]
        return np.sort(ids[keep[kind[keep] == 0]]), np.sort(ids[keep[kind[keep] == 1]])

    def _block(self, names, users, items):
        """:class:`RowBlock` of every user-table row of ``users`` and item-ID row of ``items``."""
        rows = {n: [] for n in names}
        for tables, ids in ((self.capacity.user_tables, users), (self.capacity.item_id_tables, items)):
            for name, offset in tables:
                rows[name].append(np.asarray(ids, dtype=np.int64) + offset)
        names = [n for n in names if sum(len(r) for r in rows[n])]
        block = RowBlock([self.params[n] for n in names], [np.unique(np.concatenate(rows[n])) for n in names])
        block.names = names
        return block

    def _retain_sample(self, users, items):
        """Seeded sample of the retained triples touching the selected users or items (N), one
        fixed negative each (retraining's sampler: no retained item); returns (batch, |N|)."""
        d = self.data
        rows = d.neighbourhood_rows(users=users, items=items)
        m = min(len(rows), int(self.option("retain_sample")))
        if m == 0:
            return None, 0
        sample = np.sort(self._rng.choice(rows, size=m, replace=False))
        u, i = d.retain_users[sample], d.retain_items[sample]
        negatives = sample_negatives(self._rng, u, d.n_items, self._history(True), 1)[:, 0]
        return self._batch(u, i, negatives), len(rows)

    def _solve(self, block, g, users, items, scorer, names):
        """``x = (Σ_{D_r} ∇²ℓ_i + λI)⁻¹ g`` on the block, the Hessian (or its Gauss-Newton part,
        ``influence_hessian``) estimated on the retain sample with weight |N|/m."""
        batch, n_neighbourhood = self._retain_sample(users, items)
        record = {"neighbourhood_interactions": n_neighbourhood, "retain_sample": 0 if batch is None else len(batch)}
        if batch is None:       # no retained triple reaches S: H_r = 0, only the damping remains
            matvec = lambda v: torch.zeros_like(v)
        else:
            matvec = self._hessian(batch, n_neighbourhood / len(batch), block)
            if self.graph and self.option("graph_term"):
                # IFRU's spill-over: Σ_{D_r} [∇ℓ_i(G) - ∇ℓ_i(G_r)], on the same sample
                loss = lambda model: n_neighbourhood * model.calculate_loss(batch)
                on_g = dict(zip(names, torch.autograd.grad(loss(scorer), [dict(scorer.named_parameters())[n]
                                                                           for n in names], allow_unused=True)))
                term = block.gather([on_g.get(n) for n in block.names]) - block_gradient(loss(self.model), block)
                record["graph_term_norm"] = float(term.norm())
                g = g + term
        if g.norm() > 0:        # diagnostics: curvature along the gradient, mean curvature (Hutchinson, 2 probes)
            record["curvature_along_gradient"] = float(g @ matvec(g) / (g @ g))
            probes = torch.Generator().manual_seed(int(self.config["forget_seed"]))
            z = (torch.randint(0, 2, (2, len(g)), generator=probes) * 2 - 1).to(g)
            record["curvature_mean"] = float(sum(zk @ matvec(zk) for zk in z) / (2 * len(g)))
        trust = float(self.option("trust_radius"))
        radius = trust * float(block.values().norm()) / max(float(self.option("scale")), 1e-12) if trust > 0 else None
        record["trust_radius"] = radius
        result = conjugate_gradient(matvec, g, damping=float(self.option("damping")),
                                    iterations=int(self.option("cg_iterations")),
                                    tolerance=float(self.option("cg_tolerance")), radius=radius)
        self.checks = [{"iteration": k, "relative_residual": r} for k, r in enumerate(result.residuals, 1)]
        record.update(cg_iterations=result.iterations, cg_residual=result.residual, cg_stop=result.stop,
                      hessian_products=getattr(matvec, "products", 0))
        return result.x, result, record

    def _hessian(self, batch, weight, block):
        """The retained Hessian operator on the block: ``weight · Σ_sample ∇²ℓ_i`` (``exact``), or
        its Gauss-Newton matrix ``Jᵀ diag(weight · σ(x)σ(-x)) J + weight · ∇²R`` with ``x = s_ui - s_uj``
        and ``R`` the rest of the training loss (the L2 penalty of a plugin backbone)."""
        model = self.model
        total = len(batch) * weight
        if self.option("hessian") == "exact":
            return HessianOperator(total * model.calculate_loss(batch), block)
        users, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
        pos_score, neg_score = pair_scores(model, users, pos, neg)
        margins = pos_score - neg_score
        curvature = weight * torch.sigmoid(margins) * torch.sigmoid(-margins)
        if isinstance(model, MultimodalRecommender):
            remainder = total * model.reg_weight * model.reg_loss(users, pos, neg)
        else:       # whatever the model's loss adds to BPR (exact, from the loss itself)
            remainder = total * model.calculate_loss(batch) - weight * (-F.logsigmoid(margins)).sum()
        return GaussNewtonOperator(margins, curvature, remainder, block)

    def _reset(self, users, items):
        """Rows of fully deleted users and ID rows of fully deleted items -> the seeded initial state."""
        if len(users) == 0 and len(items) == 0:
            return
        fresh = build_model(self.config, self.data.retain_dataset)
        reset_rows(self.model, fresh, self.capacity.user_tables, users)
        reset_rows(self.model, fresh, self.capacity.item_id_tables, items)
