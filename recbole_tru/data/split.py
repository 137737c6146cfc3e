"""Splits the plugin makes beyond RecBole's: users held out of every split before training
(the user-level audit's never-seen users), loaders for already split data sets, and the CSR
view of a user's distinct items that ranking masks and the audit read.
"""
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from recbole.data.utils import create_samplers, get_dataloader


def csr(users, items, n_users):
    """CSR ``(indptr [n_users + 1], indices)`` of the distinct items of each user."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_items = int(items.max()) + 1 if len(items) else 1
    keys = np.unique(users * n_items + items)
    users, items = keys // n_items, keys % n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items


HOLDOUT_STREAM = 3        # seed stream of the hold-out draw (independent of the audit's others)


@dataclass
class HeldOutUsers:
    """Users removed from every split before training: never seen by any model."""

    users: np.ndarray            # sorted user ids
    history_users: np.ndarray    # their training interactions (user, item)
    history_items: np.ndarray

    def history(self, n_users):
        return csr(self.history_users, self.history_items, n_users)

    def digest(self):
        """A short key of the held-out users (for checkpoint caches: a model trained with
        these users held out is a different model)."""
        return hashlib.sha256(np.ascontiguousarray(self.users, np.int64).tobytes()).hexdigest()[:16]


def _without_users(dataset, users):
    uid = dataset.inter_feat[dataset.uid_field].numpy()
    return dataset.copy(dataset.inter_feat[torch.from_numpy(np.flatnonzero(~np.isin(uid, users)))])


def hold_out_users(config, train_dataset, valid_dataset, test_dataset):
    """Hold out ``audit_user_holdout`` of the users with training interactions (seeded by
    ``audit_seed``): returns ``((train, valid, test) without any of their rows, HeldOutUsers)``.
    Call it before training the original model, so that no model ever trains on them."""
    share = config["audit_user_holdout"]
    if not 0 < share < 1:
        raise ValueError(f"config key 'audit_user_holdout' must be in (0, 1), got {share!r}")
    inter = train_dataset.inter_feat
    users = inter[train_dataset.uid_field].numpy().astype(np.int64)
    items = inter[train_dataset.iid_field].numpy().astype(np.int64)
    active = np.unique(users)
    n = int(np.clip(round(share * len(active)), 1, len(active) - 1))
    rng = np.random.default_rng([int(config["audit_seed"]), HOLDOUT_STREAM])
    chosen = np.sort(rng.choice(active, size=n, replace=False))
    mine = np.isin(users, chosen)
    held = HeldOutUsers(chosen, users[mine], items[mine])
    datasets = tuple(_without_users(d, chosen) for d in (train_dataset, valid_dataset, test_dataset))
    return datasets, held


def split_loaders(config, train_dataset, valid_dataset, test_dataset):
    """RecBole's train / valid / test loaders for already split data sets, built the way
    ``recbole.data.data_preparation`` builds them."""

    built = [train_dataset, valid_dataset, test_dataset]
    train_sampler, valid_sampler, test_sampler = create_samplers(config, train_dataset, built)
    return (get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"]),
            get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False),
            get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False))
