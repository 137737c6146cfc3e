"""``sisa``: SISA training, exact unlearning by sharding (Bourtoule et al., "Machine
Unlearning", IEEE S&P 2021), the baseline recommendation-unlearning benchmarks use.

The training interactions ``D`` are split into ``K = sisa_shards`` disjoint shards
``D_1 .. D_K`` (``sisa_split``: ``user`` puts all of a user's interactions in one shard, shards
balanced by interaction count; ``random`` splits the interactions at random). Submodel ``k`` is
the configured backbone trained from scratch on ``D_k`` alone, with the run's training settings
(epochs, learning rate, early stopping on validation) and seed ``seed + k``; graph backbones
(MMGCN) build their graph from their own shard. The ensemble scores a pair by the mean of the
submodels' scores::

    s_ui = (1/K) Σ_k s_ui^(k)

A deletion request ``D_f`` retrains, from scratch on ``D_k \\ D_f``, only the shards with
``D_k ∩ D_f ≠ ∅``; every other submodel is kept as it is (bit-identical), which makes the
ensemble exactly what training on ``D \\ D_f`` would have produced. ``seconds`` counts that
retraining only; the K original submodels (SISA's "original model", trained before any request)
are trained untimed, or loaded from ``<output_dir>/cache`` (``unlearn_cache``).

Deviations from the paper: no slicing (each shard is trained in one go: the backbones train in
a minute, so checkpointing slices would save little), and scores are averaged rather than
label votes (recommendation ranks a catalogue; it has no labels to vote on). With
``sisa_parallel`` the shards train as Ray tasks of one CPU each (:mod:`recbole_tru.cluster`,
which attaches to ``ray_address`` when set); without it, one after another in this process.
"""
import contextlib
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.sampler import Sampler
from recbole.utils import InputType

from recbole_tru.checkpoint import config_fingerprint, data_fingerprint, read_checkpoint, save_checkpoint
from recbole_tru.config import PLUGIN_PREFIXES
from recbole_tru.data.retained import with_overrides
from recbole_tru.training import build_model, fit
from recbole_tru.unlearn.base import UnlearnTrainer

SPLITS = ("user", "random")


def assign_shards(users, n_shards, split, seed):
    """Shard index [n] of each training interaction (``users`` [n]: the user of each).

    ``user``: users in a seeded random order are cut into ``n_shards`` runs of about equal
    interaction count (a user's interactions never straddle shards); ``random``: a seeded
    permutation of the interactions cut into equal parts."""
    if split not in SPLITS:
        raise ValueError(f"config key 'sisa_split' must be one of {', '.join(SPLITS)}, got {split!r}")
    users = np.asarray(users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if split == "random":
        shard = np.empty(len(users), dtype=np.int64)
        shard[rng.permutation(len(users))] = np.arange(len(users)) * n_shards // len(users)
    else:
        order = rng.permutation(np.unique(users))
        counts = np.bincount(users)[order]
        middle = np.cumsum(counts) - counts / 2                # a user goes where its middle falls
        shard_of_user = np.zeros(users.max() + 1, dtype=np.int64)
        shard_of_user[order] = np.minimum((middle * n_shards / counts.sum()).astype(np.int64), n_shards - 1)
        shard = shard_of_user[users]
    empty = sorted(set(range(n_shards)) - set(np.unique(shard).tolist()))
    if empty:
        raise ValueError(f"sisa_shards={n_shards} leaves shard(s) {empty} empty ({split} split of "
                         f"{len(np.unique(users))} users / {len(users)} interactions): use fewer shards")
    return shard


def shard_dataset(train_dataset, rows):
    return train_dataset.copy(train_dataset.inter_feat[torch.as_tensor(np.sort(rows))])


def submodel_config(config, shard):
    """Submodel ``shard``'s config: its own seed (``model_seed`` too when set)."""
    seeds = {"seed": int(config["seed"]) + shard}
    if config["model_seed"] is not None:
        seeds["model_seed"] = int(config["model_seed"]) + shard
    return with_overrides(config, **seeds)


def train_shard(shared, job):
    """Train submodel ``job['shard']`` from scratch on rows ``job['rows']`` of
    ``shared['train']`` (negatives: items the user has no interaction with in those rows),
    early-stopped on ``shared['valid']``. Module level, so a Ray task can run it.
    Returns ``(state_dict on CPU, fit summary)``."""
    # RecBole sets numpy's removed aliases (np.float, ...) when a Config is BUILT; a Ray
    # worker only unpickles one, so it sets them here (idempotent)
    shared["config"].compatibility_settings()
    config = submodel_config(shared["config"], job["shard"])
    dataset = shard_dataset(shared["train"], job["rows"])
    sampler = Sampler(["train"], [dataset]).set_phase("train")
    loader = TrainDataLoader(config, dataset, sampler, shuffle=True)
    model, _, summary = fit(config, loader, shared["valid"], show_progress=False)
    summary = {**summary, "node_id": _ray_node()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, summary


def _ray_node():
    """The Ray node a shard trained on (None outside Ray; Ray is not imported for that)."""
    if "ray" not in sys.modules:
        return None
    from recbole_tru.cluster import node_id

    return node_id()


class SISAEnsemble(GeneralRecommender):
    """K submodels behind one RecBole model: ``predict`` / ``full_sort_predict`` return the
    mean of the submodels' scores ([B] / [B * n_items]). It is only ever evaluated: each
    submodel is trained on its own shard."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset, submodels):
        super().__init__(config, dataset)
        self.submodels = nn.ModuleList(submodels)

    def calculate_loss(self, interaction):
        raise NotImplementedError("a SISA ensemble is not trained as a whole: each submodel trains on its shard")

    def predict(self, interaction):
        return torch.stack([m.predict(interaction) for m in self.submodels]).mean(0)

    def full_sort_predict(self, interaction):
        return torch.stack([m.full_sort_predict(interaction) for m in self.submodels]).mean(0)


class SISATrainer(UnlearnTrainer):
    name = "sisa"

    def __init__(self, config, model, data):
        super().__init__(config, model, data)
        self.n_shards = int(config["sisa_shards"])
        if self.n_shards < 1:
            raise ValueError(f"config key 'sisa_shards' must be >= 1, got {self.n_shards}")
        train = data.train_dataset
        self.shard_of_row = assign_shards(train.inter_feat[train.uid_field].numpy(), self.n_shards,
                                          config["sisa_split"], config["seed"])
        forgotten = np.zeros(len(self.shard_of_row), dtype=bool)
        forgotten[data.forget.rows] = True
        self.forgotten = forgotten
        self.retrained_shards = sorted(np.unique(self.shard_of_row[forgotten]).tolist())
        self.original_states, self.states = [], []
        self.original_seconds = 0.0

    def option(self, key):
        """SISA's own keys are ``sisa_*``; its submodels train with the run's training settings
        (``epochs``, ``learning_rate``, ...), exactly as the retrained reference does."""
        own = f"sisa_{key}"
        return self.config[own] if own in self.config.final_config_dict else self.config[key]

    def rows(self, shard, retained):
        keep = self.shard_of_row == shard
        if retained:
            keep &= ~self.forgotten
        return np.flatnonzero(keep)

    # ------------------------------------------------------------------ training the shards
    def _session(self):
        if not self.config["sisa_parallel"]:
            return contextlib.nullcontext()
        from recbole_tru.cluster import ray_session   # the Ray layer (only with sisa_parallel)

        return ray_session(self.config["ray_address"])

    def _train(self, shared, jobs):
        if not jobs:
            return []
        if self.config["sisa_parallel"]:
            from recbole_tru.cluster import parallel_map

            return parallel_map(train_shard, shared, jobs, self.config["ray_address"])
        return [train_shard(shared, job) for job in jobs]

    def _original_valid_loader(self):
        """Validation as a model trained BEFORE the request saw it: every validation pair,
        history = the full training data."""
        data = self.data
        valid = data.original_valid_dataset
        sampler = Sampler(["train", "valid"], [data.train_dataset, valid]).set_phase("valid")
        return FullSortEvalDataLoader(self.config, valid, sampler, shuffle=False)

    def _cache_paths(self, valid_loader):
        """One cache file per original submodel, keyed by config, data files, training rows,
        shard assignment and validation pairs."""
        data, cfg = self.data, self.config
        train, valid = data.train_dataset, valid_loader.dataset
        digest = hashlib.sha256()
        for ds in (train, valid):
            for f in (ds.uid_field, ds.iid_field):
                digest.update(np.ascontiguousarray(ds.inter_feat[f].numpy()).tobytes())
        digest.update(self.shard_of_row.tobytes())
        key = hashlib.sha256((config_fingerprint(cfg, exclude_prefixes=PLUGIN_PREFIXES)
                              + data_fingerprint(cfg["data_path"]) + digest.hexdigest()).encode()).hexdigest()[:16]
        folder = Path(cfg["output_dir"]) / "cache"
        return [folder / f"{cfg['model']}-{cfg['dataset']}-sisa{k}of{self.n_shards}-{key}.pth"
                for k in range(self.n_shards)]

    def train_original(self):
        """The K submodels on the ORIGINAL shards (before the request), cached."""
        valid = self._original_valid_loader()
        paths = self._cache_paths(valid)
        use_cache = self.config["unlearn_cache"]
        states = [read_checkpoint(p)["state_dict"] if use_cache and p.exists() else None for p in paths]
        jobs = [{"shard": k, "rows": self.rows(k, retained=False)} for k, s in enumerate(states) if s is None]
        start = time.perf_counter()
        trained = self._train({"config": self.config, "train": self.data.train_dataset, "valid": valid}, jobs)
        self.original_seconds = time.perf_counter() - start
        for job, (state, summary) in zip(jobs, trained):
            states[job["shard"]] = state
            self.log.append({"phase": "original", "shard": job["shard"], "rows": len(job["rows"]), **summary})
            if use_cache:
                save_checkpoint(paths[job["shard"]], self._submodel(job["shard"], False, state),
                                {"model": self.config["model"], "dataset": self.config["dataset"],
                                 "tag": f"sisa{job['shard']}of{self.n_shards}", "summary": summary})
        return states

    def _submodel(self, shard, retained, state):
        model = build_model(submodel_config(self.config, shard),
                            shard_dataset(self.data.train_dataset, self.rows(shard, retained)))
        model.load_state_dict(state)
        return model

    def ensemble(self, states, retained):
        """The ensemble of submodels with ``states``, each built on its own shard (retained rows
        of the retrained shards when ``retained``)."""
        subs = [self._submodel(k, retained and k in self.retrained_shards, s) for k, s in enumerate(states)]
        return SISAEnsemble(self.config, self.data.retain_dataset, subs).to(self.config["device"])

    # ------------------------------------------------------------------ unlearning
    def unlearn(self, show_progress=False):
        with self._session():
            self.original_states = self.train_original()
            jobs = [{"shard": k, "rows": self.rows(k, retained=True)} for k in self.retrained_shards]
            start = time.perf_counter()            # SISA's unlearning: the touched shards only
            trained = self._train({"config": self.config, "train": self.data.train_dataset,
                                   "valid": self.data.eval_loader("valid")}, jobs)
            self.seconds = time.perf_counter() - start
        self.states = list(self.original_states)
        for job, (state, summary) in zip(jobs, trained):
            self.states[job["shard"]] = state
            self.log.append({"phase": "retrain", "shard": job["shard"], "rows": len(job["rows"]), **summary})
        self.log.append({"phase": "summary", "shards": self.n_shards, "split": self.config["sisa_split"],
                         "retrained_shards": self.retrained_shards,
                         "shard_rows": np.bincount(self.shard_of_row, minlength=self.n_shards).tolist(),
                         "original_seconds": self.original_seconds, "unlearn_seconds": self.seconds})
        self.model = self.ensemble(self.states, retained=True)
        return self.model
