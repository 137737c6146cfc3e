"""Where a model's capacity lives, for any RecBole general model.

Plugin backbones declare it (:class:`~recbole_tru.model.base.MultimodalRecommender`); for
RecBole's own models (BPR, LightGCN, ...) it is read off their embedding tables: a table with
``n_users`` rows is a user table, one with ``n_items`` rows an item-ID table, one with
``n_users + n_items`` rows both (users first). Such models have a single ``id`` branch.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from recbole.data.interaction import Interaction

from recbole_tru.losses import bpr_loss, reverse_bpr_loss
from recbole_tru.model.base import MultimodalRecommender
from recbole_tru.unlearn.optim import dense


@dataclass
class Capacity:
    branches: dict          # branch -> [parameter name]
    user_tables: list       # [(parameter name, row offset)]
    item_id_tables: list    # [(parameter name, row offset)]

    def dense(self, model):
        """Names of parameters that are not row tables (shared projections, GCN layers)."""
        tables = {name for name, _ in self.user_tables + self.item_id_tables}
        return [name for name, _ in model.named_parameters() if name not in tables]

    def branch_of(self):
        return {name: branch for branch, names in self.branches.items() for name in names}


def describe(model):
    """The :class:`Capacity` of ``model``."""
    if isinstance(model, MultimodalRecommender):
        return Capacity(model.branches(), model.user_tables(), model.item_id_tables())
    users, items = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            rows, key = module.num_embeddings, f"{name}.weight"
            if rows == model.n_users + model.n_items:
                users.append((key, 0))
                items.append((key, model.n_users))
            elif rows == model.n_users:
                users.append((key, 0))
            elif rows == model.n_items:
                items.append((key, 0))
    return Capacity({"id": [name for name, _ in model.named_parameters()]}, users, items)


def pair_scores(model, users, *item_sets):
    """Differentiable scores of ``users`` [B] against each item LongTensor [B] in ``item_sets``
    (one forward pass for plugin backbones; one ``predict`` per set otherwise)."""
    if hasattr(model, "pair_scores"):
        return model.pair_scores(users, *item_sets)
    return tuple(model.predict(Interaction({model.USER_ID: users, model.ITEM_ID: items})) for items in item_sets)


def forget_scores_and_retain_loss(model, forget, retain):
    """``(s_ui, s_uj, L_bpr(retain))`` for a forget batch and a retain batch (RecBole
    ``Interaction`` objects with user, item and negative item). Plugin backbones score both
    batches in ONE forward pass (one graph propagation for MMGCN)."""
    fields = (model.USER_ID, model.ITEM_ID, model.NEG_ITEM_ID)
    if isinstance(model, MultimodalRecommender):
        n = len(forget[model.USER_ID])
        users, pos, neg = (torch.cat([forget[f], retain[f]]) for f in fields)
        pos_score, neg_score = model.pair_scores(users, pos, neg)
        retain_loss = bpr_loss(pos_score[n:], neg_score[n:])
        retain_loss = retain_loss + model.reg_weight * model.reg_loss(*(retain[f] for f in fields))
        return pos_score[:n], neg_score[:n], retain_loss
    pos_score, neg_score = pair_scores(model, *(forget[f] for f in fields))
    return pos_score, neg_score, model.calculate_loss(retain)


def row_mask(param, offset, ids):
    """Float mask [rows, 1...] of ``param`` that is 1 on rows ``offset + ids``."""
    mask = torch.zeros(param.shape[0], *([1] * (param.dim() - 1)), device=param.device)
    mask[torch.as_tensor(ids, dtype=torch.long, device=param.device) + offset] = 1.0
    return mask


@torch.no_grad()
def reset_rows(model, fresh, tables, ids, donors=()):
    """Copy rows ``offset + ids`` of every table in ``tables`` from ``fresh`` (a model built
    with the same config and seed, i.e. the never-trained initial state) into ``model``.

    With ``donors``, add to them the mean drift of the donor rows from their own initial state:
    ``θ_i = θ⁰_i + mean_d (θ_d - θ⁰_d)``. With the least-interacted retained items as donors,
    this is the row retraining would give an item that it only ever samples as a negative, to
    first order (the initial state plus what training does to an item with (almost) no
    positive evidence)."""
    if len(ids) == 0:
        return
    params, fresh_params = dict(model.named_parameters()), dict(fresh.named_parameters())
    for name, offset in tables:
        p = params[name]
        index = torch.as_tensor(ids, dtype=torch.long, device=p.device) + offset
        init = fresh_params[name].to(p.device)
        row = init[index]
        if len(donors):
            donor = torch.as_tensor(donors, dtype=torch.long, device=p.device) + offset
            row = row + (p[donor] - init[donor]).mean(0, keepdim=True)
        p[index] = row


def user_sensitivity(model, tables, n_users, forget_batches, retain_batches, batches, device):
    """Per-user mean squared forget gradient and retain Fisher over the user ``tables``
    (``[(parameter, row offset)]``), from ``batches`` equal-size batches of each source
    (per-example averages, the same convention for both). Returns ``(g_f2, f_r)`` [n_users]."""
    g_f2, f_r = np.zeros(n_users), np.zeros(n_users)
    for _ in range(batches):
        for source, acc, loss_fn in ((forget_batches, g_f2, reverse_bpr_loss), (retain_batches, f_r, bpr_loss)):
            batch = next(source).to(device)
            pos, neg = pair_scores(model, batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID])
            grads = torch.autograd.grad(loss_fn(pos, neg), [p for p, _ in tables], allow_unused=True)
            for (p, off), g in zip(tables, grads):
                if g is not None:
                    acc += dense(g)[off:off + n_users].pow(2).reshape(n_users, -1).mean(1).detach().cpu().numpy() / batches
    return g_f2, f_r
