"""Everything an unlearning run reads, with the forget set deleted first.

From the training split and a :class:`~recbole_tru.data.forget.ForgetSet`, this builds the
retained data ``D_r = D \\ D_f`` and every loader the methods and the judge use. The forget set
is removed from everything the model reads: the retained training interactions (which a graph
backbone is rebuilt from), the negative sampler of every retain loader, and the history masks
of evaluation. Held-out rows the request covers (its users, items or pairs) are dropped from
validation and test.
"""
import copy

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.sampler import Sampler

from recbole_tru.data.dataset import resolve_eval_batch_size
from recbole_tru.data.forget import heldout_keep_mask

FORGET_PAIR = "forget_pair"      # field of forget batches: the pair's index in the forget set


def with_overrides(config, **values):
    """A shallow copy of ``config`` with some keys replaced (RecBole loaders read the batch
    size from the config they are given)."""
    new = copy.copy(config)
    new.final_config_dict = {**config.final_config_dict, **values}
    return new


def user_item_csr(users, items, n_users):
    """CSR ``(indptr [n_users + 1], indices)`` of the items of each user."""
    order = np.lexsort((items, users))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items[order]


def _read_only(csr):
    for array in csr:
        array.flags.writeable = False
    return csr


class UnlearnData:
    """The retained data, the forget set and their loaders (built once, shared by methods)."""

    def __init__(self, config, train_dataset, valid_dataset, test_dataset, forget):
        self.config = config
        resolve_eval_batch_size(config, train_dataset.item_num)          # a fresh Config may still say auto
        self.forget = forget
        self.deleted = forget            # everything deleted from the data (see focused())
        self.train_dataset = train_dataset
        inter = train_dataset.inter_feat
        keep = np.ones(len(inter), dtype=bool)
        keep[forget.rows] = False
        self.retain_dataset = train_dataset.copy(inter[torch.from_numpy(np.flatnonzero(keep))])
        forget_inter = inter[torch.from_numpy(forget.rows)]
        forget_inter.update(Interaction({FORGET_PAIR: torch.arange(len(forget.rows))}))
        self.forget_dataset = train_dataset.copy(forget_inter)
        self.original_valid_dataset = valid_dataset     # before the request (for models trained before it)
        self.valid_dataset = self._heldout(valid_dataset)
        self.test_dataset = self._heldout(test_dataset)
        self.n_users, self.n_items = train_dataset.user_num, train_dataset.item_num
        uid, iid = train_dataset.uid_field, train_dataset.iid_field
        self.retain_users = self.retain_dataset.inter_feat[uid].numpy().astype(np.int64)
        self.retain_items = self.retain_dataset.inter_feat[iid].numpy().astype(np.int64)
        self.valid_users = self.valid_dataset.inter_feat[uid].numpy().astype(np.int64)
        self.valid_items = self.valid_dataset.inter_feat[iid].numpy().astype(np.int64)
        self._heldout_sampler = Sampler(["train", "valid", "test"],
                                        [self.retain_dataset, self.valid_dataset, self.test_dataset])
        self._retain_sampler = Sampler(["train"], [self.retain_dataset]).set_phase("train")
        self._original_sampler = Sampler(["train"], [train_dataset]).set_phase("train")
        self._eval_loaders = {}          # phase -> FullSortEvalDataLoader (built once, re-iterable)
        self._histories = {}

    def _heldout(self, dataset):
        keep = heldout_keep_mask(self.deleted, dataset)
        return dataset.copy(dataset.inter_feat[torch.from_numpy(np.flatnonzero(keep))])

    def _forget_without_extra_field(self):
        inter = self.train_dataset.inter_feat[torch.from_numpy(self.deleted.rows)]
        return self.train_dataset.copy(inter)

    def focused(self, forget):
        """The same retained data (loaders, samplers, histories, evaluation: everything deleted
        stays deleted) with the methods' target narrowed to ``forget``, a part of this forget set
        (:func:`~recbole_tru.data.forget.new_part`: a chained request's new pairs). ``forget``
        and the forget batches are the part's; ``deleted`` and the ``forget`` evaluation loader
        stay the whole set's."""
        if not np.isin(forget.rows, self.deleted.rows).all():
            raise ValueError("focused(): the target must be a part of the deleted interactions")
        view = copy.copy(self)
        view.forget = forget
        inter = self.train_dataset.inter_feat[torch.from_numpy(forget.rows)]
        inter.update(Interaction({FORGET_PAIR: torch.arange(len(forget.rows))}))
        view.forget_dataset = self.train_dataset.copy(inter)
        return view

    # --- training loaders -----------------------------------------------------------------
    def retain_loader(self, batch_size=None, rows=None, shuffle=True):
        """BPR batches over the retained interactions (or the retained rows ``rows``), negatives
        drawn from items the user has no retained interaction with (deleted pairs included: a
        forgotten item may be a negative, never a positive)."""
        dataset = self.retain_dataset
        if rows is not None:
            dataset = dataset.copy(dataset.inter_feat[torch.as_tensor(rows)])
        config = with_overrides(self.config, train_batch_size=batch_size or self.config["train_batch_size"])
        return TrainDataLoader(config, dataset, self._retain_sampler, shuffle=shuffle)

    def original_loader(self, rows, batch_size=None, shuffle=True):
        """BPR batches over rows ``rows`` of the ORIGINAL training data (before the request),
        negatives drawn against the original training data: what a model trained before the
        request read (the audit's shadow model, cached per original)."""
        dataset = self.train_dataset.copy(self.train_dataset.inter_feat[torch.as_tensor(rows)])
        config = with_overrides(self.config, train_batch_size=batch_size or self.config["train_batch_size"])
        return TrainDataLoader(config, dataset, self._original_sampler, shuffle=shuffle)

    def forget_loader(self, batch_size=None, pairs=None, shuffle=True):
        """Batches of forget pairs (all, or the indices ``pairs``; field ``forget_pair`` = index
        in the forget set) with a negative the user never interacted with in the ORIGINAL
        training data."""
        dataset = self.forget_dataset
        if pairs is not None:
            dataset = dataset.copy(dataset.inter_feat[torch.as_tensor(pairs)])
        config = with_overrides(self.config, train_batch_size=batch_size or self.config["train_batch_size"])
        return TrainDataLoader(config, dataset, self._original_sampler, shuffle=shuffle)

    def neighbourhood_rows(self, users=(), items=()):
        """Rows of the retained interactions that touch ``users`` or ``items`` (one pass over
        the rows through id masks)."""
        user_mask = np.zeros(self.n_users, dtype=bool)
        user_mask[np.asarray(users, dtype=np.int64)] = True
        item_mask = np.zeros(self.n_items, dtype=bool)
        item_mask[np.asarray(items, dtype=np.int64)] = True
        return np.flatnonzero(user_mask[self.retain_users] | item_mask[self.retain_items])

    # --- evaluation loaders (RecBole full-sort) --------------------------------------------
    def eval_loader(self, phase):
        """``valid`` / ``test``: held-out pairs not covered by the request, history mask =
        retained training (+ validation for test). ``forget``: the forget set as ground truth,
        masking only retained history (retained training + validation). Each loader is
        built once per phase and batch size (RecBole builds its per-user tables in a Python
        loop over the rows) and re-iterated."""
        key = (phase, self.config["eval_batch_size"])
        if key not in self._eval_loaders:
            self._eval_loaders[key] = self._build_eval_loader(phase)
        return self._eval_loaders[key]

    def _build_eval_loader(self, phase):
        if phase == "forget":
            dataset = self._forget_without_extra_field()
            sampler = Sampler(["train", "valid", "forget"],
                              [self.retain_dataset, self.valid_dataset, dataset]).set_phase("forget")
        elif phase in ("valid", "test"):
            dataset = self.valid_dataset if phase == "valid" else self.test_dataset
            sampler = self._heldout_sampler.set_phase(phase)
        else:
            raise ValueError(f"unknown evaluation phase {phase!r}: valid, test or forget")
        return FullSortEvalDataLoader(self.config, dataset, sampler, shuffle=False)

    # --- histories for ranking ---------------------------------------------------------------
    def train_history(self):
        """CSR of retained training items per user (what rankings exclude); computed once."""
        if "train" not in self._histories:
            self._histories["train"] = _read_only(user_item_csr(self.retain_users, self.retain_items, self.n_users))
        return self._histories["train"]

    def eval_history(self):
        """CSR of retained training + validation items per user (the test-time mask); computed once."""
        if "eval" not in self._histories:
            self._histories["eval"] = _read_only(user_item_csr(
                np.concatenate([self.retain_users, self.valid_users]),
                np.concatenate([self.retain_items, self.valid_items]), self.n_users))
        return self._histories["eval"]
