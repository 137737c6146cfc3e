"""``tru``: targeted reverse update (after arXiv 2604.02183; the project's own formulation,
documented in ``../shared/design/TRU.md`` and the README).

Three coordinated interventions, then a repair, each switched by its own config key:

1. **Capacity-aware layer isolation** (``tru_reset``, ``tru_route``, ``tru_isolate``,
   ``tru_budget``). Capacity that the deleted data owns is reset to its never-trained state
   (the rows of users left with no interaction; the ID rows of items left with none -- their
   content branches stay, the retrained model still scores their content). The forget gradient
   is routed to the user-side rows of the affected users; during the targeted update only the
   isolation mask (those rows, optionally only the ``tru_budget`` share with the highest
   forget/retain sensitivity) moves at all.
2. **Ranking fusion gate** (``tru_gate``, ``tru_stop``). Before every ``tru_check_steps`` steps
   the forget pairs and a live reference of never-trained pairs are ranked under the CURRENT
   model: validation pairs of the affected users for partially deleted users; items with no (or
   the fewest) retained interactions for deleted items (ranks against the whole catalogue, or
   estimated from a seeded item sample of ``tru_rank_sample`` items on a larger catalogue, so
   a check's cost does not grow with it). Forget pairs are quantile-matched to the
   reference and weighted by ``g = clip(tanh((log r_target - log r_ui) / T), 0, 1)``; the
   guarded stop ends the update when the distance to the reference (``tru_stop_metric``: the
   Recall@k gap over the same users, or the KS distance) is below ``tru_stop_delta`` or rose
   ``tru_stop_patience`` checks in a row, and restores the lowest-distance state.
3. **Branch-wise modality scaling** (``tru_scaling``). Each branch (``id`` and one per
   modality) is its own optimizer parameter group with learning-rate multiplier
   ``α_b = clip(1 + cos(∇_b L_f, ∇_b L_r), tru_alpha_min, 1)``, re-measured every
   ``tru_scale_refresh`` steps on the masked rows.

Both phases step with :class:`~recbole_tru.unlearn.optim.RowAdam` (Adam's updates, touching only
the rows that have had a gradient), so a step costs what the request moves, not the tables.

Repair (``tru_repair_epochs``): BPR on a sample of ``tru_repair_budget × |D_f|`` retained
interactions from the neighbourhood of the targeted update (the users and items of the gated
pairs), dense shared layers frozen unless ``tru_repair_dense``. When the guarded stop returns
the state before any targeted step, only the reset edited the model: the repair then covers the
reset items' pairs only (``tru_repair_budget`` × their number), or nothing.

The targeted step minimises ``λ_f · mean(g · L_rev) + λ_r · L_bpr(retain batch)``, the retain
batch drawn from the affected users' retained interactions. Routing is implemented with a
surrogate: the routed forget gradient ``G`` (masked rows only) is computed with
``torch.autograd.grad`` and added to the retain loss as ``Σ <G, θ>``, whose gradient is ``G``,
so RecBole's own ``_train_epoch`` loop performs the step.
"""
import time

import numpy as np
import torch
from recbole.trainer import Trainer

from recbole_tru.losses import bpr_loss, reverse_bpr_loss
from recbole_tru.quick_start import build_model
from recbole_tru.unlearn.base import UnlearnTrainer, cycle
from recbole_tru.unlearn.capacity import describe, forget_scores_and_retain_loss, pair_scores, reset_rows, row_mask
from recbole_tru.unlearn.data import FORGET_PAIR
from recbole_tru.unlearn.gate import (GuardedStop, gate_weights, ks_distance, matched_targets,
                                      matched_targets_per_user, recall_gap)
from recbole_tru.unlearn.optim import RowAdam
from recbole_tru.unlearn.ranking import pair_ranks, sample_items


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
        self.epochs = self.max_epochs + self.repair_epochs
        self.lambda_f, self.lambda_r = float(self.option("forget_weight")), float(self.option("retain_weight"))
        self.weights = np.zeros(len(f.rows))                       # gate value per forget pair
        self.weights[self.gated] = 1.0
        self.phase = "targeted"
        self.step = 0
        self.repair_pairs = None                                   # None: the gated pairs, budget × |D_f|
        self.checks = []                                           # one record per gate check
        self.alphas = {}
        self.routed_rows = {}                                      # param name -> row mask
        self._hooks = []
        self._frozen = []
        self._rng = np.random.default_rng(config["forget_seed"])
        self._reference = None
        self._frozen_ranks = None                                  # reference ranks at the first check
        # the checks' item sample (None: exact ranks), drawn once so every check uses the same
        # items; its own generator, so the other draws do not depend on whether it is sampled
        self.rank_sample = sample_items(data.n_items, self.option("rank_sample"),
                                        np.random.default_rng([int(config["forget_seed"]), 1]))

    # ------------------------------------------------------------------ orchestration
    def train_loader(self):
        return self.data.forget_loader(self.option("batch_size"), pairs=self.gated)

    def unlearn(self, show_progress=False):
        start = time.perf_counter()
        if self.option("reset"):
            self.reset_owned_capacity()
        if len(self.gated) and self.max_epochs > 0:
            self._start_targeted()
            self.fit(self.train_loader(), valid_data=None, saved=False, verbose=False, show_progress=show_progress)
        elif len(self.gated) and self.repair_epochs > 0 and len(self.repair_rows()):  # repair only
            self._start_repair()
            self.epochs = self.repair_epochs
            self.fit(self._repair_loader(), valid_data=None, saved=False, verbose=False, show_progress=show_progress)
        else:
            self.stop_reason = "nothing to update: every forgotten pair belongs to a fully deleted user"
        self._unfreeze()
        self.seconds = time.perf_counter() - start - self._callback_seconds
        return self.model

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.phase == "targeted":
            loss = Trainer._train_epoch(self, train_data, epoch_idx, loss_func=self.targeted_loss,
                                        show_progress=show_progress)
            phase = "targeted"
            if self.phase == "targeted" and epoch_idx + 1 >= self.max_epochs:
                self._end_targeted("epochs")
            elif self.phase == "stopping":
                self._end_targeted(self.stopper.reason)
        elif self.phase == "repair" and self.repair_done < self.repair_epochs:
            loader = self._repair_loader()
            if loader is None:
                return 0.0
            loss = Trainer._train_epoch(self, loader, epoch_idx,
                                        loss_func=self.model.calculate_loss, show_progress=show_progress)
            self.repair_done += 1
            phase = "repair"
        else:
            return 0.0
        self._after_epoch(epoch_idx, loss, phase=phase)
        return loss

    # ------------------------------------------------------------------ isolation: reset
    def reset_owned_capacity(self):
        """Re-draw the rows owned by deleted data from the model's own seeded initialisation."""
        f = self.data.forget
        if len(f.deleted_users) == 0 and len(f.deleted_items) == 0:
            return
        fresh = build_model(self.config, self.data.retain_dataset)
        reset_rows(self.model, fresh, self.capacity.user_tables, f.deleted_users)
        reset_rows(self.model, fresh, self.capacity.item_id_tables, f.deleted_items)

    # ------------------------------------------------------------------ isolation: masks
    def _routes(self):
        """Where each group's forget gradient goes: ``[(pair mask, {param: row mask})]``.
        Partially deleted users' pairs -> those users' rows (the budget-selected ones); pairs
        of deleted items -> the items' own ID rows (capacity they own)."""
        def masks(tables, ids):
            out = {}
            for name, offset in tables:
                m = row_mask(self.params[name], offset, ids)
                out[name] = torch.clamp(out[name] + m, max=1) if name in out else m
            return out

        partial = masks(self.capacity.user_tables, self.units)
        if self.option("route_items"):
            items = np.unique(self.data.forget.items[self.partial_pair])
            for name, m in masks(self.capacity.item_id_tables, items).items():
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
                self._hooks.append(self.params[name].register_hook(lambda g, m=mask: g * m))
        else:
            trainable = {n for n in self.params if n not in dense or self.option("update_dense")}
        self._freeze(trainable)
        self.optimizer = self._branch_optimizer(self.option("learning_rate"))
        if self.option("isolate"):       # the hooks zero every other row: the optimizer reads these only
            for name, mask in self.routed_rows.items():
                if self.params[name].dim() == 2:
                    self.optimizer.restrict(self.params[name], mask.view(-1).nonzero().squeeze(1))
        self._retain = cycle(self._affected_retain_loader())
        self.stopper = GuardedStop(self.option("stop_delta"), self.option("stop_patience"))

    def _affected_retain_loader(self):
        """Retain batches of the targeted step: the retained interactions of the users of the
        gated pairs (all retained interactions if they have none)."""
        rows = self.data.neighbourhood_rows(users=np.unique(self.data.forget.users[self.gated]))
        return self.data.retain_loader(self.option("batch_size"), rows=rows if len(rows) else None)

    def _freeze(self, trainable):
        self._frozen = [p for n, p in self.params.items() if n not in trainable and p.requires_grad]
        for p in self._frozen:
            p.requires_grad_(False)

    def _unfreeze(self):
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

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
        """Per-user mean squared forget gradient and retain Fisher over the user tables, from
        ``batches`` equal-size batches of each (per-example averages, same convention)."""
        model = self.model
        tables = [(self.params[n], off) for n, off in self.capacity.user_tables]
        g_f2 = np.zeros(self.data.n_users)
        f_r = np.zeros(self.data.n_users)
        forget = iter(cycle(self.train_loader()))
        retain = iter(cycle(self._affected_retain_loader()))
        for _ in range(batches):
            for source, acc, loss_fn in ((forget, g_f2, reverse_bpr_loss), (retain, f_r, bpr_loss)):
                batch = next(source).to(self.device)
                pos, neg = pair_scores(model, batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID])
                grads = torch.autograd.grad(loss_fn(pos, neg), [p for p, _ in tables], allow_unused=True)
                for (p, off), g in zip(tables, grads):
                    if g is not None:
                        rows = g[off:off + self.data.n_users].pow(2).reshape(self.data.n_users, -1).mean(1)
                        acc += rows.detach().cpu().numpy() / batches
        return g_f2, f_r

    # ------------------------------------------------------------------ gate and stop
    def _reference_pairs(self):
        """Never-trained pairs, fixed once (their RANKS are re-scored live at each check)."""
        if self._reference is None:
            f, data, cap = self.data.forget, self.data, int(self.option("reference_size"))
            groups = {}
            partial_users = np.unique(f.users[self.partial_pair])
            if len(partial_users):
                pick = np.flatnonzero(np.isin(data.valid_users, partial_users))
                if len(pick) == 0:
                    pick = np.arange(len(data.valid_users))
                pick = self._rng.choice(pick, size=min(cap, len(pick)), replace=False)
                groups["partial"] = (data.valid_users[pick], data.valid_items[pick])
            if self.item_pair.any():
                cold = self._cold_items()
                users = self._rng.choice(f.users[self.item_pair], size=cap, replace=True)
                items = self._rng.choice(cold, size=cap, replace=True)
                indptr, seen = data.train_history()
                fresh = np.array([i not in seen[indptr[u]:indptr[u + 1]] for u, i in zip(users, items)], dtype=bool)
                groups["item"] = (users[fresh], items[fresh])   # a ranked pair is never in the history
            self._reference = groups
        return self._reference

    def _cold_items(self):
        """Items a retrained model has (almost) no positive evidence for: the
        ``tru_cold_items`` non-deleted items with the fewest retained interactions."""
        counts = np.bincount(self.data.retain_items, minlength=self.data.n_items).astype(float)
        counts[0] = np.inf
        counts[self.data.forget.deleted_items] = np.inf
        order = np.lexsort((np.arange(len(counts)), counts))
        n = int(self.option("cold_items"))
        return order[:n][np.isfinite(counts[order[:n]])]

    def check(self):
        """Re-rank the forget pairs (and, with ``tru_reference: live``, the reference) under the
        current model; update the gate weights; return the KS distance."""
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
        distance, total = 0.0, 0
        record = {"step": self.step}
        for name, mask in (("partial", self.partial_pair), ("item", self.item_pair)):
            if name not in ref_ranks or not mask.any():
                continue
            idx = np.flatnonzero(mask)
            if name == "partial" and self.option("match") == "user":
                targets = matched_targets_per_user(f.users[idx], forget_ranks[idx], groups[name][0], ref_ranks[name])
            else:
                targets = matched_targets(forget_ranks[idx], ref_ranks[name])
            if self.option("gate"):
                self.weights[idx] = gate_weights(forget_ranks[idx], targets, float(self.option("temperature")))
            ks = ks_distance(forget_ranks[idx], ref_ranks[name])
            record[f"ks_{name}"] = ks
            if self.option("stop_metric") == "recall":
                gap = recall_gap(f.users[idx], forget_ranks[idx], groups[name][0], ref_ranks[name],
                                 int(self.option("stop_k")))
                record[f"recall_gap_{name}"] = gap
                distance += gap * len(idx)
            else:
                distance += ks * len(idx)
            total += len(idx)
            record[f"gate_{name}"] = float(self.weights[idx].mean())
            record[f"median_rank_{name}"] = float(np.median(forget_ranks[idx]))
            record[f"median_reference_rank_{name}"] = float(np.median(ref_ranks[name]))
        record["distance"] = distance / max(total, 1)
        self.checks.append(record)
        return record["distance"]

    def _snapshot(self):
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ the targeted step
    def targeted_loss(self, interaction):
        model = self.model
        if self.phase != "targeted":
            return torch.zeros((), device=self.device, requires_grad=True)
        if self.step % int(self.option("check_steps")) == 0:
            distance = self.check()
            if self.option("stop") == "guarded" and self.stopper.update(distance, self._snapshot):
                self.phase = "stopping"
                return torch.zeros((), device=self.device, requires_grad=True)
        self.step += 1
        retain = next(self._retain).to(self.device)
        pos, neg, retain_loss = forget_scores_and_retain_loss(model, interaction, retain)
        gate = torch.as_tensor(self.weights[interaction[FORGET_PAIR].cpu().numpy()], dtype=pos.dtype, device=self.device)
        loss_r = self.lambda_r * retain_loss
        refresh = self.option("scaling") and (self.step - 1) % int(self.option("scale_refresh")) == 0
        if not self.option("route"):
            loss_f = self.lambda_f * reverse_bpr_loss(pos, neg, weight=gate)
            if refresh:
                self._rescale(loss_f, loss_r)
            return loss_f + loss_r
        grads = {}
        pair_ids = interaction[FORGET_PAIR]
        for pairs, rows in self.routes:
            weight = gate * pairs[pair_ids].to(gate.dtype)
            if not weight.any():
                continue
            names = list(rows)
            loss_f = self.lambda_f * reverse_bpr_loss(pos, neg, weight=weight)
            routed = torch.autograd.grad(loss_f, [self.params[n] for n in names], retain_graph=True, allow_unused=True)
            for n, g in zip(names, routed):
                if g is not None:
                    g = (g * rows[n]).detach()
                    grads[n] = grads[n] + g if n in grads else g
        if refresh:
            self._rescale(grads, loss_r)
        surrogate = sum((g * self.params[n]).sum() for n, g in grads.items())
        return loss_r + surrogate

    def _rescale(self, forget, loss_r):
        """Set each branch's learning-rate multiplier from the forget/retain gradient cosine on
        the routed rows. ``forget``: routed gradients by name, or the forget loss."""
        names = list(self.routed_rows)
        routed = [self.params[n] for n in names]
        if not isinstance(forget, dict):
            grads = torch.autograd.grad(forget, routed, retain_graph=True, allow_unused=True)
            forget = {n: g * self.routed_rows[n] for n, g in zip(names, grads) if g is not None}
        retain = torch.autograd.grad(loss_r, routed, retain_graph=True, allow_unused=True)
        retain = {n: g * self.routed_rows[n] for n, g in zip(names, retain) if g is not None}
        branch_of = self.capacity.branch_of()
        record = {"step": self.step}
        for group in self.optimizer.param_groups:
            b = group["branch"]
            keys = [n for n in names if branch_of.get(n, "id") == b and n in forget and n in retain]
            if not keys:
                continue
            gf = torch.cat([forget[n].flatten() for n in keys])
            gr = torch.cat([retain[n].flatten() for n in keys])
            cos = float(torch.nn.functional.cosine_similarity(gf, gr, dim=0, eps=1e-12))
            alpha = float(np.clip(1.0 + cos, float(self.option("alpha_min")), 1.0))
            self.alphas[b] = alpha
            group["lr"] = float(self.option("learning_rate")) * alpha
            record[f"cos_{b}"], record[f"alpha_{b}"] = cos, alpha
        self.checks.append(record)

    def _end_targeted(self, reason):
        if self.option("stop") == "guarded":
            if reason == "epochs":       # the last steps have not been checked yet
                self.stopper.update(self.check(), self._snapshot)
            if self.stopper.best_state is not None:
                self.model.load_state_dict(self.stopper.best_state)
        self.stop_reason = reason
        self._unfreeze()
        if self.option("stop") == "guarded" and self.stopper.best_check == 0:
            # the returned state is the one before any targeted step (the first check already met
            # the stop, or every step made it worse): only the reset edited the model, so the
            # repair covers the reset items' pairs only (reset users are exact, as in the user regime)
            reset_pairs = self.gated[self.item_pair[self.gated]] if self.option("reset") else self.gated[:0]
            if len(reset_pairs) == 0:
                self.stop_reason = f"{reason}; returned the state before any targeted step, no repair"
                self.phase = "done"
                return
            self.stop_reason = (f"{reason}; returned the state before any targeted step, repair around "
                                f"the {len(np.unique(self.data.forget.items[reset_pairs]))} reset item(s) only")
            self.repair_pairs = reset_pairs
        self._start_repair()

    # ------------------------------------------------------------------ repair
    def _start_repair(self):
        self.phase = "repair"
        self.repair_done = 0
        dense = set(self.capacity.dense(self.model))
        self._freeze({n for n in self.params if n not in dense or self.option("repair_dense")})
        params = [p for p in self.params.values() if p.requires_grad]
        self.optimizer = RowAdam(params, lr=float(self.option("repair_learning_rate")))

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
