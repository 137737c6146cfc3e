"""The shadow recommender: labelled membership data for the attacks (Shokri et al., S&P 2017;
Zhang et al., CCS 2021).

The shadow is the target's backbone with the same config, trained by RecBole's trainer on the
ORIGINAL training interactions (before any request) of a random share (``audit_shadow_share``)
of the training users, the *shadow-in* users; the others are *shadow-out*. It does not depend
on the deletion request, so it is trained once per original model and cached beside it
(``unlearn_cache``): repeated requests against one original share it. Its members (for the
attacks) are the shadow-in users' training pairs minus every pair the audit evaluates on (the
forget set among them); its non-members are pairs it never trained on. Users the request
deletes are dropped from the labelled shadow-in/out users of the user-level attack.

Deviation from the classic shadow set-up: every interaction of the data set belongs to the
target's training data, so the shadow's training data is a subset of the target's members,
not a disjoint data set.
"""
import hashlib
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.sampler import Sampler

from recbole_tru.data.retained import with_overrides
from recbole_tru.training import cached_fit, fit


@dataclass
class Shadow:
    model: torch.nn.Module
    in_users: np.ndarray         # users whose training pairs the shadow trained on (sorted)
    out_users: np.ndarray        # the other training users (sorted)
    rows: np.ndarray             # rows of data.train_dataset (the original training data) it trained on
    summary: dict                # the fit summary (epochs, seconds, ...)


def train_shadow(config, data, rng):
    """Train (or load from the cache) the shadow model on the original training pairs of a
    random share of the training users (seeded by ``rng``; independent of the request)."""
    share = config["audit_shadow_share"]
    if not 0 < share < 1:
        raise ValueError(f"config key 'audit_shadow_share' must be in (0, 1), got {share!r}")
    train = data.train_dataset
    train_users = train.inter_feat[train.uid_field].numpy().astype(np.int64)
    users = np.unique(train_users)
    if len(users) < 2:
        raise ValueError("the shadow model needs at least two training users")
    n_in = int(np.clip(round(share * len(users)), 1, len(users) - 1))
    in_users = np.sort(rng.choice(users, size=n_in, replace=False))
    out_users = np.setdiff1d(users, in_users)
    rows = np.flatnonzero(np.isin(train_users, in_users))
    shadow_config = config
    if config["audit_shadow_epochs"]:
        shadow_config = with_overrides(config, epochs=int(config["audit_shadow_epochs"]))
    train_loader = data.original_loader(rows)
    valid_loader = validation_loader(config, data, train_loader.dataset, in_users)
    if config["unlearn_cache"]:
        model, summary, _, cached = cached_fit(shadow_config, train_loader, valid_loader,
                                               Path(config["output_dir"]) / "cache", "shadow",
                                               _digest(train_loader.dataset, valid_loader.dataset))
    else:
        (model, _, summary), cached = fit(shadow_config, train_loader, valid_loader, show_progress=False), False
    getLogger().info(f"audit: shadow model {'loaded' if cached else 'trained'} on {len(rows)} pairs of {n_in} users "
                     f"({summary['epochs']} epochs, {summary['seconds']:.1f} s)")
    return Shadow(model=model, in_users=in_users, out_users=out_users, rows=rows, summary=summary)


def _digest(*datasets):
    """The cache key of the shadow's training and validation pairs."""
    digest = hashlib.sha256()
    for ds in datasets:
        for field in (ds.uid_field, ds.iid_field):
            digest.update(np.ascontiguousarray(ds.inter_feat[field].numpy()).tobytes())
    return "shadow-" + digest.hexdigest()[:16]


def validation_loader(config, data, shadow_train, in_users):
    """Full-sort validation on the shadow-in users' validation pairs (the validation split
    before the request: early stopping), with their shadow training items masked."""
    original = data.original_valid_dataset
    inter = original.inter_feat
    keep = np.isin(inter[original.uid_field].numpy(), in_users)
    if not keep.any():        # no validation pair: validate on all (early stopping only)
        keep[:] = True
    valid = original.copy(inter[torch.from_numpy(np.flatnonzero(keep))])
    sampler = Sampler(["train", "valid"], [shadow_train, valid]).set_phase("valid")
    return FullSortEvalDataLoader(config, valid, sampler, shuffle=False)
