"""The shadow recommender: labelled membership data for the attacks (Shokri et al., S&P 2017;
Zhang et al., CCS 2021).

The shadow is the target's backbone with the same config, trained by RecBole's trainer on the
retained training interactions of a random share (``audit_shadow_share``) of the retained
users, the *shadow-in* users; the others are *shadow-out*. Its members are the shadow-in
users' retained pairs; its non-members are pairs it never trained on. It is trained once per
unlearning run and reused for every audited model.

Deviation from the classic shadow set-up: every interaction of the data set belongs to the
target's training data, so the shadow's training data is a subset of the target's members
(never of the forget set, nor of any pair the audit evaluates on), not a disjoint data set.
"""
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.sampler import Sampler

from recbole_tru.quick_start import fit
from recbole_tru.unlearn.data import with_overrides


@dataclass
class Shadow:
    model: torch.nn.Module
    in_users: np.ndarray         # users whose retained pairs the shadow trained on (sorted)
    out_users: np.ndarray        # the other retained users (sorted)
    rows: np.ndarray             # rows of data.retain_dataset it trained on
    summary: dict                # the fit summary (epochs, seconds, ...)


def train_shadow(config, data, rng):
    """Train the shadow model on a random share of the retained users (seeded by ``rng``)."""
    share = config["audit_shadow_share"]
    if not 0 < share < 1:
        raise ValueError(f"config key 'audit_shadow_share' must be in (0, 1), got {share!r}")
    users = np.unique(data.retain_users)
    if len(users) < 2:
        raise ValueError("the shadow model needs at least two retained users")
    n_in = int(np.clip(round(share * len(users)), 1, len(users) - 1))
    in_users = np.sort(rng.choice(users, size=n_in, replace=False))
    out_users = np.setdiff1d(users, in_users)
    rows = np.flatnonzero(np.isin(data.retain_users, in_users))
    shadow_config = config
    if config["audit_shadow_epochs"]:
        shadow_config = with_overrides(config, epochs=int(config["audit_shadow_epochs"]))
    train_loader = data.retain_loader(rows=rows)
    model, _, summary = fit(shadow_config, train_loader, _valid_loader(config, data, train_loader.dataset, in_users),
                            show_progress=False)
    getLogger().info(f"audit: shadow model trained on {len(rows)} pairs of {n_in} users "
                     f"({summary['epochs']} epochs, {summary['seconds']:.1f} s)")
    return Shadow(model=model, in_users=in_users, out_users=out_users, rows=rows, summary=summary)


def _valid_loader(config, data, shadow_train, in_users):
    """Full-sort validation on the shadow-in users' validation pairs (early stopping), with
    their shadow training items masked."""
    inter = data.valid_dataset.inter_feat
    keep = np.isin(data.valid_users, in_users)
    if not keep.any():        # no validation pair: validate on all (early stopping only)
        keep[:] = True
    valid = data.valid_dataset.copy(inter[torch.from_numpy(np.flatnonzero(keep))])
    sampler = Sampler(["train", "valid"], [shadow_train, valid]).set_phase("valid")
    return FullSortEvalDataLoader(config, valid, sampler, shuffle=False)
