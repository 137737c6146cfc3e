"""``tru``: targeted reverse update (after arXiv 2604.02183; the project's own formulation,
defined in ``docs/tru.md``).

Three coordinated interventions, then a repair, each switched by its own config key:

1. **Capacity-aware layer isolation** (``tru_reset``, ``tru_route``, ``tru_isolate``,
   ``tru_budget``): capacity the deleted data owns (rows of users left with no interaction, ID
   rows of items left with none) is reset to its never-trained state; the forget gradient is
   routed to the affected users' rows (and, ``tru_route_items``, the ID rows of the items they
   forget), and only that isolation mask (optionally only the
   ``tru_budget`` most forget/retain-sensitive share) moves during the targeted update.
2. **Ranking fusion gate** (``tru_gate``, ``tru_stop``): every ``tru_check_steps`` steps (sooner
   near the distance's projected crossing of 0, ``tru_check_adaptive``) the
   forget pairs and a reference of never-trained pairs are ranked under the current model
   (exactly, or on a seeded ``tru_rank_sample`` of the catalogue); forget pairs are
   quantile-matched to the reference and weighted by ``g = clip(tanh((log r_target - log
   r_ui) / T), 0, 1)``; the guarded stop ends the update when the distance to the reference
   (``tru_stop_metric``) is below ``tru_stop_delta`` (or, with ``tru_stop_noise``, below a rank
   AUC's null standard error: a small request cannot be told from the reference any closer) or
   rose ``tru_stop_patience`` checks in a row, and restores the lowest-distance state; with
   ``tru_stop_refine``, a check that finds the forget pairs past their reference searches the
   line between its state and the previous check's for the crossing (a small request's few
   pairs pass it within a few steps).
3. **Branch-wise modality scaling** (``tru_scaling``): each branch (``id``, one per modality)
   is an optimizer group with learning-rate multiplier ``α_b = clip(1 + cos(∇_b L_f, ∇_b L_r),
   tru_alpha_min, 1)``, re-measured every ``tru_scale_refresh`` steps on the masked rows.

Repair (``tru_repair_epochs``): BPR on ``tru_repair_budget × |D_f|`` retained interactions
around the update, at ``tru_repair_learning_rate`` (``~``: the backbone's ``learning_rate``),
dense shared layers frozen unless ``tru_repair_dense``; when the stop returns the state before
any targeted step, it covers the reset items' pairs only, or nothing. With ``tru_repair_first``
it runs after the reset and before the targeted update, so the guarded stop judges the state
TRU returns (the repair's lift of the forget pairs is then under the stop). Both
update phases step with :class:`~recbole_tru.unlearn.optim.RowAdam` and (``tru_sparse_grad``) take
row-sparse gradients from the tables' lookups, so a step costs what the request moves, not the
tables.

The targeted step minimises ``λ_f · mean(g · L_rev) + λ_r · L_bpr(retain batch)``; routing adds
the masked forget gradient ``G`` (``torch.autograd.grad``) as the surrogate ``Σ <G, θ>``.

:meth:`TRUTrainer.unlearn` runs the named phases :meth:`~TRUTrainer.reset`,
:meth:`~TRUTrainer.targeted_update` and :meth:`~TRUTrainer.repair`; each of their passes is one
call of RecBole's ``Trainer._train_epoch`` with the phase's ``loss_func``, and the guarded stop
ends a pass before a step (:class:`~recbole_tru.unlearn.base.UntilStop`). With ``tru_solve:
rows`` (VBPR) the partially deleted users' pairs are not stepped but placed last in closed form,
:meth:`~TRUTrainer.solve`. ``phase_seconds`` records the time of ``reset``, ``checks``,
``targeted_steps`` (without the checks), ``repair``, and where they run ``support`` and ``solve``.
"""
import contextlib
import time
from logging import getLogger

import numpy as np
import torch
from recbole.trainer import Trainer

from recbole_tru.data.retained import FORGET_PAIR
from recbole_tru.losses import gated_forget_loss
from recbole_tru.model.ranking import pair_ranks, sample_items, user_scores
from recbole_tru.training import build_model
from recbole_tru.unlearn.base import UnlearnTrainer, UntilStop, cycle
from recbole_tru.unlearn.capacity import (describe, forget_scores_and_retain_loss, reset_rows, row_mask,
                                          user_sensitivity)
from recbole_tru.unlearn.gate import (GuardedStop, cold_items, gate_check, reference_pairs, retained_support,
                                      score_profiles)
from recbole_tru.unlearn.optim import RowAdam, dense, mask_rows, project_rows, row_inner, sparse_lookups

# Streams of TRU's generators, keyed with forget_seed: np.random.default_rng([forget_seed, stream]).
RANK_SAMPLE_STREAM = 1                                  # the checks' item sample
DRAW_STREAM = 2                                         # reference pairs and repair sample
PARTNER_SAMPLE_STREAM = 3                               # the users sampled for tru_push_project's bases
SUPPORT_SAMPLE_STREAM = 4                               # the users whose scores give tru_match_order's profiles
MATCH_QUANTILE_STREAM = 5                               # tru_match_quantiles: drawn -> each pair's quantile offset
SUPPORT_USERS = 1024                                    # at most this many users' scores per item profile
SOLVE_RIDGE = 1e-3                                      # tru_solve: ridge of a user's pair system, x its mean diagonal
SOLVE_SHRINK = 0.1                                      # tru_solve: ridge of the score metric G, x its mean diagonal
SOLVE_USERS = 512                                       # tru_solve: users scored against the catalogue at a time
# tru_sparse_grad: auto: row-sparse gradients from this many table rows (users + items) on. Measured
# (benchmarks/results/tru_seconds_*.md, one thread): 2,625 rows (ml-100k-mm) dense 7 % faster; 26,000
# (synthetic Baby) sparse faster, not clearly; 62,000 (Clothing) sparse 30 % faster.
SPARSE_ROWS = 10_000


class TRUTrainer(UnlearnTrainer):
    name = "tru"

    def __init__(self, config, model, data):
        super().__init__(config, model, data)
        f = data.forget
        self.capacity = describe(model)
        self.params = dict(model.named_parameters())
        deleted_user_pair = np.isin(f.users, f.deleted_users)
        self.item_pair = np.isin(f.items, f.deleted_items) & ~deleted_user_pair
        self.partial_pair = ~deleted_user_pair & ~self.item_pair
        self.gated = np.flatnonzero(~deleted_user_pair)           # pairs the targeted update pushes
        self.affected_users = np.unique(f.users[self.partial_pair])   # partially deleted users
        self.gated_items = np.unique(f.items[self.item_pair])          # deleted items with gated pairs
        self.max_epochs = int(self.option("epochs"))
        self.repair_epochs = int(self.option("repair_epochs"))
        self.lambda_f, self.lambda_r = float(self.option("forget_weight")), float(self.option("retain_weight"))
        self.weights = np.zeros(len(f.rows))                       # gate value per forget pair
        self.weights[self.gated] = 1.0
        self.step = 0                                              # targeted steps taken
        self._next_check = 0                                       # the step of the next gate check
        self.stop_reason = None
        self.show_progress = False
        self.repair_pairs = None                                   # None: the gated pairs, budget × |D_f|
        self._forget = None                                        # forget batches of a gated repair
        self.checks = []                                           # one record per gate check
        self.alphas = {}
        self.routed_rows = {}                                      # param name -> row mask
        self.push_bases = {}                                       # tru_push_project: param name -> [width, r]
        self.match_order = None                                    # tru_match_order: support -> key per forget pair
        self.units = None                                          # users whose rows the update may move (tru_budget)
        self.match_offsets = self._match_offsets()                 # tru_match_quantiles: drawn -> offset per forget pair
        self.solving = self._solving()                             # tru_solve: rows, on a backbone that allows it
        # pairs the targeted update steps: the gated ones, less the partial pairs the solve places
        self.stepped = self.gated[self.item_pair[self.gated]] if self.solving else self.gated
        # TRU's own draws (reference pairs, repair sample) and the checks' item sample each have a
        # stream of their own, apart from the request draw's (recbole_tru.data.forget: forget_seed alone)
        self._rng = np.random.default_rng([int(config["forget_seed"]), DRAW_STREAM])
        self._reference = None                                     # never-trained pairs, drawn once
        self._frozen_ranks = None                                  # reference ranks at the first check
        # the checks' item sample (None: exact ranks): drawn once, from a generator of its own
        self.rank_sample = sample_items(data.n_items, self.option("rank_sample"),
                                        np.random.default_rng([int(config["forget_seed"]), RANK_SAMPLE_STREAM]))

    # ------------------------------------------------------------------ the phases
    def train_loader(self):
        return self.data.forget_loader(self.option("batch_size"), pairs=self.stepped)

    def unlearn(self, show_progress=False):
        start = time.perf_counter()
        self.show_progress = show_progress
        with self._lookups():
            self._unlearn()
        self.seconds = time.perf_counter() - start - self._callback_seconds
        return self.model

    def _lookups(self):
        """``tru_sparse_grad``: the row tables' lookups give row-sparse gradients while TRU runs
        (:func:`~recbole_tru.unlearn.optim.sparse_lookups`), so a step's gradient, masks and
        optimizer cost what its batches touch, not the tables. ``auto``: where the tables have at
        least ``SPARSE_ROWS`` rows in all (users + items); on small tables the dense gradient is
        the cheaper. Never under RecBole's ``clip_grad_norm`` (it reads gradients whole), nor for
        a backbone whose tables are read whole (``tables_read_whole``: MMGCN's propagation gives
        dense gradients anyway)."""
        if not self.sparse_grad() or self.config["clip_grad_norm"] or getattr(self.model, "tables_read_whole", False):
            return contextlib.nullcontext()
        tables = [name for name, _ in self.capacity.user_tables + self.capacity.item_id_tables]
        return sparse_lookups(self.model, tables)

    def sparse_grad(self):
        """Whether ``tru_sparse_grad`` (True, False or ``auto``) asks for row-sparse gradients here."""
        value = self.option("sparse_grad")
        if isinstance(value, str) and value.lower() == "auto":
            return self.data.n_users + self.data.n_items >= SPARSE_ROWS
        if not isinstance(value, bool):
            raise ValueError(f"config key 'tru_sparse_grad' must be True, False or auto, got {value!r}")
        return value

    def _unlearn(self):
        self.reset()
        if len(self.gated) == 0:
            self.stop_reason = "nothing to update: every forgotten pair belongs to a fully deleted user"
        elif self.max_epochs > 0 and len(self.stepped) == 0:
            self.stop_reason = "no pair to step: the partially deleted users' pairs are solved (tru_solve: rows)"
            self.repair(first_epoch=0)
        elif self.max_epochs > 0 and self.option("repair_first"):
            self._reference_pairs()              # drawn before the repair's sample, as in the default order
            self.repair(first_epoch=0)
            self._unfreeze()
            self.targeted_update()
        elif self.max_epochs > 0:
            epochs, repair = self.targeted_update()
            if repair:
                self.repair(first_epoch=epochs)
        else:
            self.stop_reason = "no targeted update (tru_epochs: 0)"
            self.repair(first_epoch=0)
        self._unfreeze()
        if self.solving:
            self.solve()

    def reset(self):
        """Phase 1 (``tru_reset``): re-draw the capacity the deleted data owns."""
        if self.option("reset"):
            with self._timed("reset"):
                self.reset_owned_capacity()

    def targeted_update(self):
        """Phase 2: gated, routed reverse steps on the gated forget pairs, branch-scaled, until the
        guarded stop or ``tru_epochs`` passes. Returns ``(passes run, whether to repair)``."""
        self._start_targeted()
        loader, start, checks = self.train_loader(), time.perf_counter(), self.phase_seconds.get("checks", 0.0)
        for epoch in range(self.max_epochs):
            batches = UntilStop(loader, self._stop_before_step)
            loss = Trainer._train_epoch(self, batches, epoch, loss_func=self.targeted_loss,
                                        show_progress=self.show_progress)
            if batches.stopped or epoch + 1 == self.max_epochs:
                break
            self._after_epoch(epoch, loss, phase="targeted")
        checks = self.phase_seconds.get("checks", 0.0) - checks
        self.phase_seconds["targeted_steps"] = time.perf_counter() - start - checks
        repair = self._end_targeted(self.stopper.reason if batches.stopped else "epochs")
        self._after_epoch(epoch, loss, phase="targeted")     # the last pass: recorded after the restore
        return epoch + 1, repair

    def _stop_before_step(self):
        """At the scheduled steps (every ``tru_check_steps``, or sooner with
        ``tru_check_adaptive``): re-rank (the gate's weights) and ask the guarded stop."""
        if self.step < self._next_check:
            return False
        previous = self._last_check_state
        distance = self.check()
        record = self.checks[-1]
        self._next_check = self.step + self.check_interval()
        if self.option("stop") != "guarded":
            return False
        stop = self.stopper.update(distance, self._snapshot, self._noise())
        if int(self.option("stop_refine")) > 0:
            below = self.stopper.below(distance, self._noise())
            if not below and previous is not None and self._refine_crossing(previous, record):
                return True
            self._last_check_state = (self._moving_state(), record)
        return stop

    def _moving_state(self):
        """What the targeted update can have moved since the last check, ``{name: (rows, values)}``:
        under isolation the routed rows of each routed table (``rows`` their indices), else every
        trainable parameter whole (``rows`` None). A copy that costs what the request moves."""
        out = {}
        for name, p in self.params.items():
            if p.requires_grad:
                rows = self._moving_rows.get(name)
                out[name] = (rows, (p.detach() if rows is None else p.detach()[rows]).clone())
        return out

    def _load_moving(self, state):
        with torch.no_grad():
            for name, (rows, values) in state.items():
                if rows is None:
                    self.params[name].copy_(values)
                else:
                    self.params[name][rows] = values

    def _crossing(self, before, after):
        """The group whose signed reading changed sign between two check records (the forget pairs
        passed their reference in between), or None; the partially deleted users' group first."""
        for name in ("partial", "item"):
            a, b = before.get(f"signed_{name}"), after.get(f"signed_{name}")
            if a is not None and b is not None and a * b < 0:
                return name
        return None

    def _refine_crossing(self, previous, record_after):
        """``tru_stop_refine``: when the last check finds the forget pairs on the other side of their
        reference than the check before (a request's few pairs can pass it within
        ``tru_check_steps`` steps), search the straight line between the two checks' states for
        the crossing, ``tru_stop_refine`` checks at most (regula falsi on the crossing group's
        signed reading: ``θ(t) = θ_prev + t (θ_last - θ_prev)``, ``t = s_prev / (s_prev - s_last)``),
        each state offered to the guarded stop as a candidate. True (stop) once one is below
        ``max(tru_stop_delta, noise floor)``; otherwise the update goes on from the last check's
        state (``record_after``), gate weights as that check left them."""
        state_before, record_before = previous
        group = self._crossing(record_before, record_after)
        if group is None:
            return False
        state_after, weights = self._moving_state(), self.weights.copy()
        low, high = (state_before, record_before[f"signed_{group}"]), (state_after, record_after[f"signed_{group}"])
        for _ in range(int(self.option("stop_refine"))):
            t = low[1] / (low[1] - high[1])
            state = {name: (rows, low[0][name][1] + t * (values - low[0][name][1]))
                     for name, (rows, values) in high[0].items()}
            self._load_moving(state)
            distance = self._check(phase="refine")
            signed = self.checks[-1].get(f"signed_{group}")
            self.checks[-1]["t"] = float(t)
            if self.stopper.offer(distance, self._snapshot, self._noise()):
                return True
            if signed is None or signed == 0:
                break
            if signed * low[1] > 0:
                low = (state, signed)
            else:
                high = (state, signed)
        self._load_moving(state_after)
        self.weights[:] = weights
        self.checks.append({**record_after, "phase": "refine end"})
        return False

    def check_interval(self):
        """Steps to the next check: ``tru_check_steps``; with ``tru_check_adaptive``, fewer when the
        last two checks project the distance to reach 0 (forget pairs ranked like the reference)
        sooner: ``clip(floor(distance / rate), 1, tru_check_steps)`` with ``rate`` the drop of
        the distance per step between them, so the next check lands at or before the projected
        crossing. A small request moves its few pairs far in a few steps: checked every
        ``tru_check_steps`` steps, the stop can find the distance well above 0 at one check and
        already far past it (overshot) at the next."""
        steps = int(self.option("check_steps"))
        checks = [c for c in self.checks if "distance" in c and not c.get("phase", "").startswith("refine")]
        if not self.option("check_adaptive") or len(checks) < 2:
            return steps
        last, before = checks[-1], checks[-2]
        rate = (before["distance"] - last["distance"]) / max(last["step"] - before["step"], 1)
        if rate <= 0:
            return steps
        return int(np.clip(np.floor(last["distance"] / rate), 1, steps))

    def repair(self, first_epoch):
        """Phase 3: ``tru_repair_epochs`` BPR passes over retained interactions sampled around
        the update (a fresh sample each pass; dense shared layers frozen unless ``tru_repair_dense``)."""
        if self.repair_epochs <= 0:
            return
        self._start_repair()
        with self._timed("repair"):
            for epoch in range(first_epoch, first_epoch + self.repair_epochs):
                loader = self._repair_loader()
                if loader is None:
                    break
                loss = Trainer._train_epoch(self, loader, epoch, loss_func=self._repair_loss(),
                                            show_progress=self.show_progress)
                self._after_epoch(epoch, loss, phase="repair")

    # ------------------------------------------------------------------ solve
    def _solving(self):
        """Whether ``tru_solve: rows`` applies: partially deleted users' pairs exist and the
        backbone's score is linear in a user's rows (:meth:`~recbole_tru.model.base.
        MultimodalRecommender.linear_user_side`); elsewhere (MMGCN) the option changes nothing."""
        value = self.option("solve") or "none"
        if value == "none" or not self.partial_pair.any():
            return False
        side = getattr(self.model, "linear_user_side", None)
        with torch.no_grad():
            linear = side is not None and side(torch.ones(1, dtype=torch.long, device=self.device)) is not None
        if not linear:
            getLogger().info(f"TRU: tru_solve: {value}: {type(self.model).__name__}'s score is not linear in a "
                             f"user's rows; the partially deleted users' pairs are stepped as without it")
        return linear

    def solve(self):
        """Phase 4 (``tru_solve: rows``), last, in place of the targeted steps on the partially
        deleted users' pairs (those steps match the targets only as far as the stop lets them:
        the forget ranks keep the original's shape, shifted). For a backbone whose score is
        linear in the user's rows, ``s_ui = z_i · x_u + b_i``, each such user's forget pairs are
        put at their matched targets in closed form: the smallest change ``Δ`` of ``x_u`` in the
        metric of the user's scores over the catalogue (:func:`score_metric_inverse`: ``ΔᵀGΔ`` is
        about the mean squared change of the user's scores) under which each forget pair
        scores what the catalogue's item at its target rank scores (the user's other forget
        pairs with better targets counted above it)::

            Δ = G⁻¹ Z_Fᵀ (Z_F G⁻¹ Z_Fᵀ + ε I)⁻¹ (τ - s_F)

        ``tru_solve_passes`` passes, the targets re-matched after each (the reference's ranks move
        with the rows, and so does the catalogue item at a target's rank)."""
        if self.match_order is None:                    # no targeted update ran: measured here
            self.match_order = self._match_order()
        with self._timed("solve"), torch.no_grad():
            z, _, layout = self.model.linear_user_side(torch.arange(1, self.data.n_items, device=self.device))
            z = z.double()
            g_inv = score_metric_inverse(z)
            units = self.affected_users if self.units is None else self.units
            for _ in range(int(self.option("solve_passes"))):
                targets = np.full(len(self.data.forget.rows), np.nan)
                self._check(phase="solve", targets_out=targets)
                self._solve_pass(targets, units, z, g_inv, layout)
            self._check(phase="solved")
        self.stop_reason = f"{self.stop_reason}; the partially deleted users' pairs solved (tru_solve: rows)"

    def _solve_pass(self, targets, units, z, g_inv, layout):
        """One pass of :meth:`solve`: every partial pair of a user in ``units`` with a target."""
        f = self.data.forget
        pairs = np.flatnonzero(self.partial_pair & np.isin(f.users, units) & np.isfinite(targets))
        if len(pairs) == 0:
            return
        block_users, inverse, counts = np.unique(f.users[pairs], return_inverse=True, return_counts=True)
        by_count = np.argsort(counts, kind="stable")    # users with as many pairs share a block: less padding
        block_users, inverse = block_users[by_count], np.argsort(by_count)[inverse]
        order = np.argsort(inverse, kind="stable")
        pairs, inverse = pairs[order], inverse[order]
        items = f.items[pairs]
        history = self.data.train_history()
        offsets = dict(self.capacity.user_tables)
        for start in range(0, len(block_users), SOLVE_USERS):
            block = block_users[start:start + SOLVE_USERS]
            take = (inverse >= start) & (inverse < start + len(block))
            row = torch.as_tensor(inverse[take] - start, device=self.device)
            item = torch.as_tensor(items[take], device=self.device)
            scores = user_scores(self.model, block, history).double()
            current = scores[row, item]
            scores[row, item] = -torch.inf                  # the list the targets are read from
            ranked = torch.sort(scores, dim=1, descending=True).values
            finite = torch.isfinite(ranked).sum(1)[row]
            # rank t = t - 1 items above: the user's pairs with a higher target among them
            target = targets[pairs[take]]
            above = torch.as_tensor(_within_user_order(inverse[take], target), device=self.device)
            position = torch.clamp(torch.as_tensor(target, device=self.device) - 1.5 - above, min=0)
            position = torch.minimum(position, (finite - 1).double())
            low = position.floor().long()
            high = torch.minimum(low + 1, finite - 1)
            frac = position - low
            tau = ranked[row, low] * (1 - frac) + ranked[row, high] * frac
            delta = _min_change(z[item - 1], tau - current, row, len(block), g_inv)
            column = 0
            for name, width in layout:
                rows = torch.as_tensor(block + offsets.get(name, 0), device=self.params[name].device)
                self.params[name][rows] += delta[:, column:column + width].to(self.params[name].dtype)
                column += width

    # ------------------------------------------------------------------ isolation: reset
    def reset_owned_capacity(self):
        """Re-draw the rows owned by deleted data from the model's own seeded initialisation.
        Users left with no interaction are exact there (retraining never samples them); items
        are sampled as negatives by retraining, so ``tru_reset_items: cold`` adds to their
        initial rows the mean drift of the reference cold items
        (:func:`~recbole_tru.unlearn.capacity.reset_rows` with donors)."""
        f = self.data.forget
        if len(f.deleted_users) == 0 and len(f.deleted_items) == 0:
            return
        fresh = build_model(self.config, self.data.retain_dataset)
        reset_rows(self.model, fresh, self.capacity.user_tables, f.deleted_users)
        cold = self.option("reset_items") == "cold" and len(f.deleted_items)
        donors = cold_items(self.data, int(self.option("cold_items"))) if cold else ()
        reset_rows(self.model, fresh, self.capacity.item_id_tables, f.deleted_items, donors)

    # ------------------------------------------------------------------ isolation: masks
    def _routes(self):
        """Where each group's forget gradient goes: ``[(pair mask, {param: row mask})]``.
        Partially deleted users' pairs -> those users' rows (the budget-selected ones) and,
        with ``tru_route_items``, the ID rows of the items they forget; pairs of deleted items ->
        the items' own ID rows (capacity they own)."""
        def masks(tables, ids):
            out = {}
            for name, offset in tables:
                m = row_mask(self.params[name], offset, ids)
                out[name] = torch.clamp(out[name] + m, max=1) if name in out else m
            return out

        partial = {} if self.solving else masks(self.capacity.user_tables, self.units)   # solved, not stepped
        if self.option("route_items") and not self.solving:
            items = np.unique(self.data.forget.items[self.partial_pair])
            tables = self.capacity.item_id_tables
            if not self.option("route_item_bias"):      # a one-column item table is a bias: it moves the item for every user
                tables = [(n, off) for n, off in tables if self.params[n].dim() < 2 or self.params[n].shape[1] > 1]
            for name, m in masks(tables, items).items():
                partial[name] = torch.clamp(partial[name] + m, max=1) if name in partial else m
        routes = [(self.partial_pair, partial)]
        if self.item_pair.any():
            routes.append((self.item_pair, masks(self.capacity.item_id_tables, self.gated_items)))
        return routes

    def _start_targeted(self):
        self.units = self._select_units()
        self.routes = [(torch.as_tensor(pairs, device=self.device), rows) for pairs, rows in self._routes()]
        self.routed_rows = {}                           # union of the routes: the isolation mask
        for _, rows in self.routes:
            for name, m in rows.items():
                self.routed_rows[name] = torch.clamp(self.routed_rows[name] + m, max=1) if name in self.routed_rows else m
        dense = set(self.capacity.dense(self.model))
        if self.option("isolate"):
            trainable = set(self.routed_rows)
            for name, mask in self.routed_rows.items():
                self._hooks.append(self.params[name].register_hook(lambda g, m=mask: mask_rows(g, m)))
        else:
            trainable = {n for n in self.params if n not in dense or self.option("update_dense")}
        self._freeze(trainable)
        self.optimizer = self._branch_optimizer(self.option("learning_rate"))
        self._moving_rows = {}                          # param name -> the row indices the update moves (isolation)
        if self.option("isolate"):       # the hooks zero every other row: the optimizer reads these only
            self._moving_rows = {name: mask.view(-1).nonzero().squeeze(1) for name, mask in self.routed_rows.items()
                                 if self.params[name].dim() == 2}
            for name, rows in self._moving_rows.items():
                self.optimizer.restrict(self.params[name], rows)
        self.push_bases = self._push_bases()
        self.match_order = self._match_order()
        self._retain = cycle(self._affected_retain_loader())
        self.stopper = GuardedStop(self.option("stop_delta"), self.option("stop_patience"))
        self._last_check_state = None                   # (moving state, check record) of the last check, tru_stop_refine

    def _push_bases(self):
        """``tru_push_project`` = r > 0: for each table of the partially deleted users' route that
        the backbone gives partner vectors for (:meth:`partner_sides`), the top r right singular
        vectors [width, r] of those vectors (uncentred), from every item / user, or from the checks'
        item sample and a seeded sample of as many users where a side is larger; measured once,
        after the reset. ``{}`` when off or when the backbone has none."""
        r = int(self.option("push_project") or 0)
        partner_sides = getattr(self.model, "partner_sides", None)      # RecBole's own models have none
        if r <= 0 or partner_sides is None or not self.partial_pair.any():
            return {}
        items = self.rank_sample if self.rank_sample is not None else np.arange(1, self.data.n_items)
        users = self._user_sample(self.option("rank_sample"), PARTNER_SAMPLE_STREAM)
        with torch.no_grad():
            sides = partner_sides(torch.as_tensor(users, device=self.device), torch.as_tensor(items, device=self.device))
        bases = {}
        for name in self.routes[0][1]:                  # the partially deleted users' route
            if name in sides:
                _, _, vh = torch.linalg.svd(sides[name].double(), full_matrices=False)
                bases[name] = vh[:r].T.to(self.params[name].dtype)
        return bases

    def _user_sample(self, size, stream):
        """User ids ``1 .. n_users - 1``, or a seeded uniform sample of ``size`` of them
        (:func:`~recbole_tru.model.ranking.sample_items` on its own generator stream) where there
        are more."""
        users = sample_items(self.data.n_users, size, np.random.default_rng([int(self.config["forget_seed"]), stream]))
        return users if users is not None else np.arange(1, self.data.n_users)

    def _match_order(self):
        """``tru_match_order``: ``rank`` (None: the partially deleted users' forget pairs are matched
        to the reference in the order of their current ranks) or ``support``: in the order of
        their support from what each user keeps (:func:`~recbole_tru.unlearn.gate.retained_support`;
        the key is its negative), the item profiles from the scores of up to ``SUPPORT_USERS``
        seeded users; measured once, after the reset."""
        value = self.option("match_order")
        if value == "rank" or not self.partial_pair.any():
            return None
        with self._timed("support"):
            scores = user_scores(self.model, self._user_sample(SUPPORT_USERS, SUPPORT_SAMPLE_STREAM)).cpu().numpy()
            scores[:, 0] = 0.0                          # padding item 0 (-inf): its profile is all zero
            profiles = score_profiles(scores)
            f = self.data.forget
            key = np.full(len(f.rows), np.nan)
            pairs = np.flatnonzero(self.partial_pair)
            key[pairs] = -retained_support(profiles, f.users[pairs], f.items[pairs],
                                           self.data.retain_users, self.data.retain_items)
        return key

    def _match_offsets(self):
        """``tru_match_quantiles``: ``mid`` (None: the j-th of a user's k forget pairs takes the
        reference quantile ``(j + 0.5) / k``) or ``drawn``: ``(j + u) / k`` with ``u`` uniform in
        [0, 1), one per forget pair, drawn once per run from a generator of its own. A user's one
        forget pair then takes a random quantile of the user's reference, as a held-out pair of a
        retrained model does, not its median (which lies outside the top k of a top-k metric
        whenever fewer than half of the user's reference pairs are in it)."""
        value = self.option("match_quantiles") or "mid"
        if value == "mid":
            return None
        rng = np.random.default_rng([int(self.config["forget_seed"]), MATCH_QUANTILE_STREAM])
        return rng.random(len(self.data.forget.rows))

    def _affected_retain_loader(self):
        """Retain batches of the targeted step: the retained interactions of the users of the
        gated pairs (all retained interactions if they have none)."""
        rows = self.data.neighbourhood_rows(users=np.unique(self.data.forget.users[self.stepped]))
        return self.data.retain_loader(self.option("batch_size"), rows=rows if len(rows) else None)

    def _branch_optimizer(self, lr):
        """Adam with one parameter group per branch (the branch-scaling handle); RowAdam: the
        same updates, at a cost that follows the moving rows, not the tables."""
        branch_of = self.capacity.branch_of()
        groups = {}
        for name, p in self.params.items():
            if p.requires_grad:
                groups.setdefault(branch_of.get(name, "id"), []).append(p)
        self.alphas = {b: 1.0 for b in groups}
        return RowAdam([{"params": ps, "lr": lr, "branch": b} for b, ps in groups.items()], lr=lr)

    def _select_units(self):
        """Affected users whose rows the forget update may move: all of them (``tru_budget`` =
        1), or the top share by sensitivity S = mean(ĝ_f²) / (mean(F_r) + ε)."""
        budget = float(self.option("budget"))
        if not 0 < budget <= 1:
            raise ValueError(f"config key 'tru_budget' must be in (0, 1], got {budget}")
        if budget >= 1 or len(self.affected_users) <= 1:
            return self.affected_users
        g_f2, f_r = self.sensitivity(int(self.option("budget_batches")))
        score = g_f2 / (f_r + 1e-12)
        keep = max(1, int(np.ceil(budget * len(self.affected_users))))
        order = np.argsort(-score[self.affected_users], kind="stable")
        return np.sort(self.affected_users[order[:keep]])

    def sensitivity(self, batches):
        """Per-user forget sensitivity and retain Fisher (:func:`~recbole_tru.unlearn.capacity.user_sensitivity`)."""
        tables = [(self.params[n], off) for n, off in self.capacity.user_tables]
        return user_sensitivity(self.model, tables, self.data.n_users, iter(cycle(self.train_loader())),
                                iter(cycle(self._affected_retain_loader())), batches, self.device)

    # ------------------------------------------------------------------ gate and stop
    def _reference_pairs(self):
        if self._reference is None:
            cold = cold_items(self.data, int(self.option("cold_items"))) if self.item_pair.any() else None
            self._reference = reference_pairs(self.data, self.partial_pair, self.item_pair, cold,
                                              int(self.option("reference_size")), self._rng)
        return self._reference

    def check(self):
        """Re-rank the forget pairs (and, with ``tru_reference: live``, the reference) under the
        current model; update the gate weights; return the stop's distance."""
        with self._timed("checks"):
            return self._check()

    def _check(self, two_sided=None, phase=None, targets_out=None):
        f, groups = self.data.forget, self._reference_pairs()
        history = self.data.train_history()
        ref_users = np.concatenate([u for u, _ in groups.values()])
        ref_items = np.concatenate([i for _, i in groups.values()])
        users = np.concatenate([f.users[self.gated], ref_users])
        items = np.concatenate([f.items[self.gated], ref_items])
        live = self.option("reference") == "live" or self._frozen_ranks is None
        if not live:                      # frozen: the reference was ranked once, before any edit
            users, items = users[:len(self.gated)], items[:len(self.gated)]
        ranks = pair_ranks(self.model, users, items, history, candidates=self.rank_sample)
        forget_ranks = np.full(len(f.rows), np.nan)
        forget_ranks[self.gated] = ranks[:len(self.gated)]
        if live:
            ref_ranks, start = {}, len(self.gated)
            for name, (u, _) in groups.items():
                ref_ranks[name] = ranks[start:start + len(u)]
                start += len(u)
            if self._frozen_ranks is None:
                self._frozen_ranks = ref_ranks
        else:
            ref_ranks = self._frozen_ranks
        masks = {"partial": self.partial_pair, "item": self.item_pair}
        if self.solving and phase not in ("solve", "solved"):     # the solve places the partial pairs
            masks = {"item": self.item_pair}
        record = {"step": self.step, **gate_check(
            f.users, forget_ranks, masks, groups, ref_ranks, self.weights, match=self.option("match"),
            gate=self.option("gate"), temperature=float(self.option("temperature")),
            stop_metric={"partial": self.option("stop_metric"),
                         "item": self.option("item_stop_metric") or self.option("stop_metric")},
            stop_k=int(self.option("stop_k")), order=self.match_order, min_forget=int(self.option("match_min_pairs")),
            targets_out=targets_out, offsets=self.match_offsets,
            two_sided=bool(self.option("gate_two_sided")) if two_sided is None else two_sided)}
        if phase:
            record["phase"] = phase
        self.checks.append(record)
        return record["distance"]

    def _noise(self):
        """The last check's noise floor for the guarded stop (``tru_stop_noise``), else 0."""
        return float(self.checks[-1].get("noise", 0.0)) if self.option("stop_noise") else 0.0

    def _snapshot(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ the targeted step
    def targeted_loss(self, interaction):
        """The loss of one targeted step on a batch of gated forget pairs (its gradient is the
        routed, gated forget gradient plus the retain gradient)."""
        model = self.model
        self.step += 1
        retain = next(self._retain).to(self.device)
        pos, neg, retain_loss = forget_scores_and_retain_loss(model, interaction, retain)
        gate = torch.as_tensor(self.weights[interaction[FORGET_PAIR].cpu().numpy()], dtype=pos.dtype, device=self.device)
        loss_r = self.lambda_r * retain_loss
        refresh = self.option("scaling") and (self.step - 1) % int(self.option("scale_refresh")) == 0
        if not self.option("route"):
            loss_f = self.lambda_f * gated_forget_loss(pos, neg, gate)
            if refresh:
                self._rescale(loss_f, loss_r)
            return loss_f + loss_r
        grads = self._routed_forget_gradients(pos, neg, gate, interaction[FORGET_PAIR])
        if refresh:
            self._rescale(grads, loss_r)
        return loss_r + self._surrogate(grads)

    def _routed_forget_gradients(self, pos, neg, gate, pair_ids):
        """The gated forget loss's gradient, each route's pairs to that route's rows only:
        ``{param name: gradient}`` (detached)."""
        grads = {}
        for route, (pairs, rows) in enumerate(self.routes):
            weight = gate * pairs[pair_ids].to(gate.dtype)
            if not weight.any():
                continue
            names = [n for n in rows if self.params[n].requires_grad]
            loss_f = self.lambda_f * gated_forget_loss(pos, neg, weight)
            routed = torch.autograd.grad(loss_f, [self.params[n] for n in names], retain_graph=True, allow_unused=True)
            for n, g in zip(names, routed):
                if g is not None:
                    g = mask_rows(g, rows[n]).detach()
                    if route == 0 and n in self.push_bases:      # the partially deleted users' route
                        g = project_rows(g, self.push_bases[n])
                    grads[n] = grads[n] + g if n in grads else g
        return grads

    def _surrogate(self, grads):
        """``Σ <G, θ>``: a loss whose gradient is ``G`` (so RecBole's loop takes the step)."""
        return sum(row_inner(g, self.params[n]) for n, g in grads.items())

    def _rescale(self, forget, loss_r):
        """Set each branch's learning-rate multiplier from the forget/retain gradient cosine on
        the routed rows. ``forget``: routed gradients by name, or the forget loss."""
        names = list(self.routed_rows)
        routed = [self.params[n] for n in names]
        if not isinstance(forget, dict):
            grads = torch.autograd.grad(forget, routed, retain_graph=True, allow_unused=True)
            forget = {n: mask_rows(g, self.routed_rows[n]) for n, g in zip(names, grads) if g is not None}
        retain = torch.autograd.grad(loss_r, routed, retain_graph=True, allow_unused=True)
        retain = {n: mask_rows(g, self.routed_rows[n]) for n, g in zip(names, retain) if g is not None}
        branch_of = self.capacity.branch_of()
        record = {"step": self.step}
        for group in self.optimizer.param_groups:
            b = group["branch"]
            keys = [n for n in names if branch_of.get(n, "id") == b and n in forget and n in retain]
            if not keys:
                continue
            gf = torch.cat([dense(forget[n]).flatten() for n in keys])
            gr = torch.cat([dense(retain[n]).flatten() for n in keys])
            cos = float(torch.nn.functional.cosine_similarity(gf, gr, dim=0, eps=1e-12))
            alpha = float(np.clip(1.0 + cos, float(self.option("alpha_min")), 1.0))
            self.alphas[b] = alpha
            group["lr"] = float(self.option("learning_rate")) * alpha
            record[f"cos_{b}"], record[f"alpha_{b}"] = cos, alpha
        self.checks.append(record)

    def _end_targeted(self, reason):
        """Return the guarded stop's best state; whether (and around which pairs) to repair."""
        if self.option("stop") == "guarded":
            if reason == "epochs":       # the last steps have not been checked yet
                self.stopper.update(self.check(), self._snapshot, self._noise())
            if self.stopper.best_state is not None:
                self.model.load_state_dict(self.stopper.best_state)
        self.stop_reason = reason
        self._unfreeze()
        if self.option("repair_first"):
            self.stop_reason = f"{reason}; repaired before the targeted update"
            return False
        if self.option("stop") == "guarded" and self.stopper.best_check == 0:
            # the returned state is the one before any targeted step (the first check already met
            # the stop, or every step made it worse): only the reset edited the model, so the
            # repair covers the reset items' pairs only (reset users are exact, as in the user regime)
            if self.solving:             # the solve edits the partially deleted users: the repair covers them too
                self.stop_reason = (f"{reason}; returned the state before any targeted step on the deleted items' "
                                    f"pairs, repair around every gated pair")
                return True
            reset_pairs = self.gated[self.item_pair[self.gated]] if self.option("reset") else self.gated[:0]
            if len(reset_pairs) == 0:
                self.stop_reason = f"{reason}; returned the state before any targeted step, no repair"
                return False
            self.stop_reason = (f"{reason}; returned the state before any targeted step, repair around "
                                f"the {len(np.unique(self.data.forget.items[reset_pairs]))} reset item(s) only")
            self.repair_pairs = reset_pairs
        return True

    # ------------------------------------------------------------------ repair
    def _start_repair(self):
        dense = set(self.capacity.dense(self.model))
        self._freeze({n for n in self.params if n not in dense or self.option("repair_dense")})
        params = [p for p in self.params.values() if p.requires_grad]
        self.optimizer = RowAdam(params, lr=self.repair_learning_rate())

    def _repair_loss(self):
        """The repair's loss function: the backbone's BPR loss, or, with ``tru_repair_gate``
        (``down``, ``both``, ``guarded``) after a targeted update, that loss plus the gated,
        routed forget loss of one batch of the gated forget pairs, the gate re-measured every
        ``tru_check_steps`` repair steps (``both``: two-sided; ``guarded``: only toward the
        reference, :meth:`_guard_repair_gate`). The options failed their calibration rule
        (``docs/tru.md``); ``none`` is the default."""
        mode = self.option("repair_gate") or "none"
        if mode not in ("none", "down", "both", "guarded"):
            raise ValueError(f"config key 'tru_repair_gate' must be none, down, both or guarded, got {mode!r}")
        if mode == "none" or self.repair_pairs is not None or self.step == 0 or not self.option("route"):
            return self.model.calculate_loss
        if self._forget is None:
            self._forget, self._repair_steps = cycle(self.train_loader()), 0
        every = int(self.option("check_steps"))

        def loss(interaction):
            if self._repair_steps % every == 0:
                with self._timed("checks"):
                    self._check(two_sided=mode != "down", phase="repair")
                    if mode == "guarded":
                        self._guard_repair_gate()
            self._repair_steps += 1
            forget = next(self._forget).to(self.device)
            pos, neg, bpr = forget_scores_and_retain_loss(self.model, forget, interaction)
            pair_ids = forget[FORGET_PAIR]
            gate = torch.as_tensor(self.weights[pair_ids.cpu().numpy()], dtype=pos.dtype, device=self.device)
            return bpr + self._surrogate(self._routed_forget_gradients(pos, neg, gate, pair_ids))
        return loss

    def _guard_repair_gate(self):
        """``tru_repair_gate: guarded``: per group, after a repair check, keep the push only in
        the direction that brings the forget pairs back to the reference: down (the pairs above
        their targets) while they rank above it by more than the stop's threshold (Recall@k gap:
        ``tru_stop_delta``; rank AUC: that or its noise floor), up (the pairs below their
        targets) while they rank below it by as much, and none within it."""
        record, delta = self.checks[-1], float(self.option("stop_delta"))
        for name, mask in (("partial", self.partial_pair), ("item", self.item_pair)):
            if f"signed_{name}" not in record:
                continue
            noise = record.get(f"auc_noise_{name}", 0.0)       # the check's floor, for a group stopped on the AUC
            threshold, signed = max(delta, noise if self.option("stop_noise") else 0.0), record[f"signed_{name}"]
            direction = 1 if signed > threshold else -1 if signed < -threshold else 0
            w = self.weights[mask]
            self.weights[mask] = np.clip(w, 0, None) if direction > 0 else np.clip(w, None, 0) if direction < 0 else 0.0
            record[f"repair_push_{name}"] = direction

    def repair_learning_rate(self):
        """``tru_repair_learning_rate``, or (``~``) the backbone's own training ``learning_rate``:
        the repair is BPR on retained data, the objective that rate was chosen for."""
        lr = self.option("repair_learning_rate")
        return float(self.config["learning_rate"] if lr is None else lr)

    def repair_rows(self):
        """``tru_repair_budget × |D_f|`` retained rows sampled from the neighbourhood of the
        targeted update: retained interactions of the users and items of the gated pairs.
        Pairs of fully deleted users are not gated (their rows are reset, exactly as retraining
        leaves them), so a request of whole users has no repair."""
        f = self.data.forget
        pairs = self.gated if self.repair_pairs is None else self.repair_pairs
        rows = self.data.neighbourhood_rows(users=np.unique(f.users[pairs]), items=np.unique(f.items[pairs]))
        n = int(round(float(self.option("repair_budget")) * (len(f.rows) if self.repair_pairs is None else len(pairs))))
        if len(rows) == 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        return self._rng.choice(rows, size=n, replace=n > len(rows))

    def _repair_loader(self):
        rows = self.repair_rows()
        self.last_repair_rows = rows
        if len(rows) == 0:
            return None
        return self.data.retain_loader(self.option("repair_batch_size"), rows=rows)


def score_metric_inverse(z):
    """``G⁻¹`` for ``G = ZᵀZ / n + SOLVE_SHRINK · mean(diag(ZᵀZ / n)) · I`` (float64): ``ΔᵀGΔ`` is
    the mean squared change of the scores ``Z Δ`` over the ``n`` items, plus a shrinkage that
    keeps a user's row from moving far along directions the item vectors barely vary in (VBPR's
    projected content is low-rank: ``ZᵀZ`` is singular on ml-100k-mm), relative to the scale of
    the vectors, so the same on any data set."""
    z = z.double()
    g = z.T @ z / len(z)
    shrink = SOLVE_SHRINK * g.diagonal().mean()
    return torch.linalg.inv(g + shrink * torch.eye(g.shape[0], dtype=g.dtype, device=g.device))


def _within_user_order(rows, targets):
    """Per pair, how many of its row's (user's) pairs have a better (lower) target rank (ties by
    position); ``rows`` sorted."""
    order = np.lexsort((np.arange(len(rows)), targets, rows))
    first = np.searchsorted(rows[order], rows[order], "left")
    out = np.empty(len(rows), dtype=np.float64)
    out[order] = np.arange(len(rows)) - first
    return out


def _min_change(z_pairs, residual, row, n_rows, g_inv):
    """Per row r: ``Δ_r = G⁻¹ Z_rᵀ (Z_r G⁻¹ Z_rᵀ + ε I)⁻¹ e_r`` [n_rows, width], the change of
    smallest ``Δᵀ G Δ`` with ``Z_r Δ = e_r`` (least squares, ridge ``ε = SOLVE_RIDGE`` x the
    system's mean diagonal, where a row has more pairs than the width). ``z_pairs`` [P, width],
    ``residual`` [P] and ``row`` [P] (which row each pair changes; sorted)."""
    counts = torch.bincount(row, minlength=n_rows)
    width, k = z_pairs.shape[1], int(counts.max())
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(row), device=row.device) - first[row]
    zp = z_pairs.new_zeros(n_rows, k, width)
    zp[row, slot] = z_pairs
    e = residual.new_zeros(n_rows, k)
    e[row, slot] = residual
    w = zp @ g_inv                                              # [n_rows, k, width]: Z G⁻¹
    system = w @ zp.transpose(1, 2)                             # Z G⁻¹ Zᵀ
    used = torch.arange(k, device=row.device)[None, :] < counts[:, None]
    diag = torch.diagonal(system, dim1=1, dim2=2)
    ridge = SOLVE_RIDGE * (diag * used).sum(1) / counts.clamp(min=1)
    eye = torch.eye(k, dtype=system.dtype, device=system.device)
    system = system + eye * torch.where(used, ridge[:, None], torch.ones_like(diag))[:, :, None]
    alpha = torch.linalg.solve(system, e.unsqueeze(-1)).squeeze(-1)
    return (alpha.unsqueeze(1) @ w).squeeze(1)
