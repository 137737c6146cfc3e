"""Likelihood-ratio membership attack with reference models (``lira``): offline LiRA with a fixed
variance (Carlini et al., S&P 2022, §VI), calibrated per pair like RMIA (Zarifzadeh et al., ICML
2024) and the unlearning game of RULI (USENIX Security 2025).

What makes the attack strong is per-pair calibration: a popular item scores high for every
user, member or not, so a raw score says little; how much higher the audited model scores the
pair than models that never trained on it says much more. The attack therefore trains ``K``
(``audit_lr_refs``, even) reference models, the backbone with the run's config, on random halves
of the ORIGINAL training interactions: ``K / 2`` random splits into two complementary halves, a
model on each half. Every training pair is thus left out of exactly one model per split, and
every held-out or never-interacted pair out of all; for each evaluated pair one left-out ("OUT")
model per split is used (for a pair outside the training data, one of the two at random, seeded),
so every pair is calibrated by exactly ``K / 2`` OUT models. The references do not depend on the
deletion request, so they are trained once per original and cached (``unlearn_cache``).

Per pair ``(u, i)`` the statistic is the score's z-score among the user's never-interacted items
(``zscore`` of :mod:`recbole_tru.audit.features`: scale-free, near-Gaussian, comparable across
models), and the attack's score is

    Λ(u, i) = z_target(u, i) - mean over the pair's OUT models of z_ref(u, i)

(the offline likelihood ratio under a Gaussian with a global variance, a constant that does not
change the ranking). Members of the audited model score above their OUT calibration. Evaluated on
the audit's evaluation sets (all forget pairs vs the held-out half of the test pairs), reported as
AUC and as the true-positive rate at a 1 % false-positive rate, the low-FPR figure the field
reports. No fitting on the audited model: the references are the attacker's knowledge.
"""
import hashlib
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from recbole_tru.audit.attacks import auc
from recbole_tru.audit.features import pair_features
from recbole_tru.audit.shadow import validation_loader
from recbole_tru.training import cached_fit, fit

LOW_FPR = 0.01


def tpr_at_fpr(member_scores, nonmember_scores, fpr=LOW_FPR):
    """The largest true-positive rate at a false-positive rate <= ``fpr`` (threshold attack on
    the scores, members high)."""
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    fprs, tprs, _ = roc_curve(labels, np.r_[member_scores, nonmember_scores])
    return float(tprs[fprs <= fpr].max())


@dataclass
class References:
    models: list                 # [K] reference models; models 2s and 2s+1 are split s's two halves
    first_half: np.ndarray       # [K/2, n_train] bool: training row in split s's first half
    summaries: list


def _digest(rows):
    return "reference-" + hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def train_references(config, data, rng):
    """Train (or load from the cache) the ``audit_lr_refs`` reference models (see the module)."""
    k = int(config["audit_lr_refs"])
    if k < 2 or k % 2:
        raise ValueError(f"config key 'audit_lr_refs' must be an even number >= 2, got {k!r}")
    n = len(data.train_dataset)
    users = np.unique(data.train_dataset.inter_feat[data.train_dataset.uid_field].numpy())
    halves = np.zeros((k // 2, n), dtype=bool)
    models, summaries = [], []
    cache = Path(config["output_dir"]) / "cache"
    for s in range(k // 2):
        halves[s, rng.permutation(n)[: n // 2]] = True
        for side in (halves[s], ~halves[s]):
            rows = np.flatnonzero(side)
            train_loader = data.original_loader(rows)
            valid_loader = validation_loader(config, data, train_loader.dataset, users)
            if config["unlearn_cache"]:
                model, summary, _, cached = cached_fit(config, train_loader, valid_loader, cache, "reference",
                                                       _digest(rows))
            else:
                (model, _, summary), cached = fit(config, train_loader, valid_loader, show_progress=False), False
            getLogger().info(f"audit: reference model {len(models) + 1}/{k} {'loaded' if cached else 'trained'} on "
                             f"{len(rows)} pairs ({summary['epochs']} epochs, {summary['seconds']:.1f} s)")
            models.append(model)
            summaries.append(summary)
    return References(models, halves, summaries)


class LikelihoodRatioAudit:
    """The ``lira`` attack on the audit's evaluation pairs; :meth:`run` audits one model."""

    def __init__(self, data, members, nonmembers, references, known, history, rng, chunk=256):
        self.known, self.history, self.chunk = known, history, chunk
        self.n_members = len(members)
        self.users = np.concatenate([members.users, nonmembers.users])
        self.items = np.concatenate([members.items, nonmembers.items])
        n_items = data.n_items
        train = data.train_dataset
        train_keys = (train.inter_feat[train.uid_field].numpy().astype(np.int64) * n_items
                      + train.inter_feat[train.iid_field].numpy().astype(np.int64))
        keys = self.users * n_items + self.items
        z = [self._z(model) for model in references.models]
        calibration = np.zeros(len(keys))
        for s, first in enumerate(references.first_half):
            in_first = np.isin(keys, train_keys[first])
            in_second = np.isin(keys, train_keys[~first])
            # the OUT model of this split: the half without the pair; neither half has it: a coin
            coin = rng.random(len(keys)) < 0.5
            use_second = in_first | (~in_second & coin)
            if (in_first & in_second).any():          # a duplicated interaction in both halves
                raise ValueError("the likelihood-ratio attack needs each training interaction once")
            calibration += np.where(use_second, z[2 * s + 1], z[2 * s])
        self.calibration = calibration / len(references.first_half)

    def _z(self, model):
        return pair_features(model, self.users, self.items, self.known, self.history, self.chunk)["zscore"]

    def scores(self, model):
        """``(member scores, non-member scores)``: Λ of the evaluation pairs under ``model``."""
        stat = self._z(model) - self.calibration
        return stat[:self.n_members], stat[self.n_members:]

    def run(self, model):
        """``{"auc", "tpr_at_1pct_fpr"}`` of the attack on ``model``."""
        members, nonmembers = self.scores(model)
        return {"auc": auc(members, nonmembers), "tpr_at_1pct_fpr": tpr_at_fpr(members, nonmembers)}
