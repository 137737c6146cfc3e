"""Interaction-level membership inference: was the pair ``(u, i)`` in the model's training data?

Pair sets (drawn once per unlearning run, seeded by ``audit_seed``):

* fitting members      a sample of retained training pairs (at most ``audit_pairs``);
* fitting non-members  a random half of the held-out test pairs, plus ``audit_unseen_ratio``
                       sampled never-interacted pairs ``(u, j)`` per such pair (same users; ``j``
                       in no split of ``u``), ``audit_pairs`` in all at most;
* evaluation           ALL forget pairs (the members to detect) vs the OTHER half of the test
                       pairs (real interactions no model trained on). Retraining makes a forgotten
                       pair a held-out interaction like those, so its AUC is ~0.5.

The fitting and evaluation sets are disjoint (asserted): no pair used to fit an attack counts in
its evaluation. Attacks are fitted anew on each audited model's own features (the attacker
queries that model), except ``shadow``, fitted once on the shadow model's features of its own
members (shadow-in users' retained pairs) and non-members (their validation and fitting-half
test pairs, plus sampled unseen pairs) and applied to every audited model.

The suite (config ``audit_attacks``), each reported separately: TRU matches forgotten pairs'
rank percentiles to validation pairs', so a rank-only attack partly measures what TRU
optimises; the others read what TRU does not target directly.

* ``rank``      threshold on ``-log_rank``;
* ``score``     threshold on the raw score;
* ``margin``    logistic on the margins to the user's top-1 / top-10 never-interacted items;
* ``logistic``  logistic on every output feature (the headline ``mia_auc``);
* ``boosting``  gradient-boosted trees on every output feature (non-linear);
* ``delta``     logistic on ``score`` and ``delta`` (score change from the original model),
                fitted, like the others, on the audited model's members vs non-members;
* ``drop``      threshold on ``-delta``, orientation fixed, nothing fitted: the pairs whose score
                fell most since the original are called deleted (the attacker of Chen et al.,
                CCS 2021, holding the old and the new model). ``delta``'s fitting sets hold no
                deleted pair, so its weight on the score change is set by how the update moved
                pairs that were not deleted: on VBPR's calibration requests it has opposite
                signs for the retrained model and for TRU in the interaction regime and flips
                between requests in the user regime, and its AUC with it (``docs/audit.md``);
                ``drop`` asks the deletion question directly;
* ``shadow``    logistic on scale-free features, fitted on the shadow model.

Read every AUC against the retrained model's AUC of the same attack, not against 0.5 alone:
``delta`` sees that retraining lowered the forgotten pairs' scores (the deletion leak of
Chen et al., CCS 2021), and in the ``user`` / ``item`` regimes forget pairs belong to users /
items no retained pair trains, unlike the test pairs they are compared with, so retrain's AUC
is far from 0.5 there (the user-level attack, :mod:`recbole_tru.audit.user`, is the one for
deleted users).
"""
from dataclasses import dataclass

import numpy as np

from recbole_tru.audit.attacks import make_attack
from recbole_tru.audit.features import DELTA, OUTPUT_FEATURES, pair_features
from recbole_tru.data.split import csr

SCALE_FREE = ("log_rank", "pct", "zscore")
PAIR = "pair"       # entry of a feature mapping: the pair's key u * n_items + i (not a feature)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the suite: ``make(seed) -> Attack``; fitted on the audited model's
    fitting pairs (``fit_on="target"``) or once on the shadow model's (``"shadow"``)."""

    name: str
    make: object
    fit_on: str = "target"


def _spec(name, kind, fit_on="target", **kwargs):
    return AttackSpec(name, lambda seed: make_attack(kind, seed=seed, **kwargs), fit_on)


SUITE = {
    "rank": _spec("rank", "threshold", column="log_rank", sign=-1),
    "score": _spec("score", "threshold", column="score", sign=1),
    "margin": _spec("margin", "logistic", columns=["margin_top1", "margin_top10"]),
    "logistic": _spec("logistic", "logistic", columns=list(OUTPUT_FEATURES)),
    "boosting": _spec("boosting", "boosting", columns=list(OUTPUT_FEATURES)),
    "delta": _spec("delta", "logistic", columns=["score", DELTA]),
    "drop": _spec("drop", "threshold", column=DELTA, sign=-1),
    "shadow": _spec("shadow", "logistic", fit_on="shadow", columns=list(SCALE_FREE)),
}


def suite_from(names, shadow=True):
    """The attack specs named in config ``audit_attacks`` (``shadow`` dropped without a shadow
    model); an unknown name is an error."""
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise ValueError(f"config key 'audit_attacks': unknown attack(s) {unknown}; known: {', '.join(SUITE)}")
    return [SUITE[n] for n in names if shadow or SUITE[n].fit_on != "shadow"]


@dataclass
class Pairs:
    users: np.ndarray
    items: np.ndarray

    def __post_init__(self):
        self.users = np.asarray(self.users, np.int64)
        self.items = np.asarray(self.items, np.int64)

    def __len__(self):
        return len(self.users)

    def keys(self, n_items):
        return self.users * n_items + self.items

    def take(self, index):
        return Pairs(self.users[index], self.items[index])

    def without(self, keys, n_items):
        """These pairs minus those whose key is in ``keys``."""
        return self.take(~np.isin(self.keys(n_items), keys))

    @staticmethod
    def concat(*parts):
        return Pairs(np.concatenate([p.users for p in parts]), np.concatenate([p.items for p in parts]))


def _pairs_of(dataset):
    inter = dataset.inter_feat
    return Pairs(inter[dataset.uid_field].numpy(), inter[dataset.iid_field].numpy())


def known_pairs(data):
    """Every known interaction: the ORIGINAL training split (forget set included), validation
    and test."""
    return Pairs.concat(_pairs_of(data.train_dataset), _pairs_of(data.valid_dataset), _pairs_of(data.test_dataset))


def sample_unseen(users, known_keys, n_items, rng, max_rounds=100):
    """One item per entry of ``users`` that the user has no known interaction with (uniform
    over such items, item 0 excluded; rejection sampling). ``known_keys``: sorted pair keys."""
    users = np.asarray(users, np.int64)
    items = np.zeros(len(users), np.int64)
    todo = np.arange(len(users))
    for _ in range(max_rounds):
        if not len(todo):
            return Pairs(users, items)
        draw = rng.integers(1, n_items, size=len(todo))
        keys = users[todo] * n_items + draw
        pos = np.searchsorted(known_keys, keys).clip(max=len(known_keys) - 1)
        ok = known_keys[pos] != keys
        items[todo[ok]] = draw[ok]
        todo = todo[~ok]
    raise ValueError(f"{len(todo)} user(s) have (almost) no never-interacted item to sample")


def _subsample(pairs, n, rng):
    return pairs if len(pairs) <= n else pairs.take(np.sort(rng.choice(len(pairs), size=n, replace=False)))


@dataclass
class PairSets:
    fit_members: Pairs
    fit_nonmembers: Pairs
    eval_members: Pairs
    eval_nonmembers: Pairs
    shadow_members: Pairs = None
    shadow_nonmembers: Pairs = None

    def named(self):
        return {k: v for k, v in vars(self).items() if v is not None}


def build_pair_sets(data, rng, max_pairs, unseen_ratio, shadow=None):
    """The audit's pair sets (see the module docstring); ``shadow``: a trained
    :class:`~recbole_tru.audit.shadow.Shadow` or None."""
    n_items = data.n_items
    known_keys = np.unique(known_pairs(data).keys(n_items))
    test = _pairs_of(data.test_dataset)
    if len(test) < 2:
        raise ValueError("the membership audit needs at least two test pairs")
    order = rng.permutation(len(test))
    fit_test, eval_test = test.take(np.sort(order[:len(test) // 2])), test.take(np.sort(order[len(test) // 2:]))
    eval_members = Pairs(data.forget.users, data.forget.items)
    eval_keys = np.concatenate([eval_members.keys(n_items), eval_test.keys(n_items)])

    retained = Pairs(data.retain_users, data.retain_items).without(eval_keys, n_items)
    fit_members = _subsample(retained, max_pairs, rng)
    fit_nonmembers = _nonmembers(fit_test.without(eval_keys, n_items), max_pairs, unseen_ratio,
                                 known_keys, n_items, rng)
    sets = PairSets(fit_members, fit_nonmembers, eval_members, eval_test)
    if shadow is not None:
        in_users = shadow.in_users
        train = data.train_dataset
        members = Pairs(train.inter_feat[train.uid_field].numpy()[shadow.rows].astype(np.int64),
                        train.inter_feat[train.iid_field].numpy()[shadow.rows].astype(np.int64)).without(eval_keys, n_items)
        held = Pairs.concat(_pairs_of(data.valid_dataset), fit_test)
        held = held.take(np.isin(held.users, in_users)).without(eval_keys, n_items)
        sets.shadow_members = _subsample(members, max_pairs, rng)
        sets.shadow_nonmembers = _nonmembers(held, max_pairs, unseen_ratio, known_keys, n_items, rng)
    check_disjoint(sets, n_items)
    return sets


def _nonmembers(held, max_pairs, unseen_ratio, known_keys, n_items, rng):
    """Held-out pairs plus ``unseen_ratio`` sampled never-interacted pairs per held-out pair
    (same users), ``max_pairs`` in all at most."""
    if len(held) == 0:
        raise ValueError("the membership audit found no held-out pair to fit on")
    n_held = min(len(held), max(1, int(round(max_pairs / (1 + unseen_ratio)))))
    held = _subsample(held, n_held, rng)
    n_unseen = int(round(unseen_ratio * len(held)))
    if n_unseen == 0:
        return held
    return Pairs.concat(held, sample_unseen(rng.choice(held.users, size=n_unseen), known_keys, n_items, rng))


def check_disjoint(sets, n_items):
    """Assert that no fitting pair (target or shadow) is an evaluation pair."""
    eval_keys = np.concatenate([sets.eval_members.keys(n_items), sets.eval_nonmembers.keys(n_items)])
    for name, pairs in sets.named().items():
        if name.startswith("eval_"):
            continue
        overlap = np.isin(pairs.keys(n_items), eval_keys)
        assert not overlap.any(), f"{overlap.sum()} pair(s) of {name} are also evaluation pairs"


class InteractionAudit:
    """The interaction-level attacks on fixed pair sets; :meth:`run` audits one model."""

    def __init__(self, data, sets, original, specs, seed, chunk=256, shadow_model=None):
        self.data, self.sets, self.specs, self.seed, self.chunk = data, sets, specs, seed, chunk
        self.n_items = data.n_items
        known = known_pairs(data)
        self.known = csr(known.users, known.items, data.n_users)
        self.history = data.train_history()
        self._target_sets = ("fit_members", "fit_nonmembers", "eval_members", "eval_nonmembers")
        self._original_scores = {name: f["score"] for name, f in self._features(original, self._target_sets).items()}
        self.shadow_attacks = {}
        shadow_specs = [s for s in specs if s.fit_on == "shadow"]
        if shadow_specs:
            if shadow_model is None or sets.shadow_members is None:
                raise ValueError("a shadow attack needs the shadow model and its pair sets")
            feats = self._features(shadow_model, ("shadow_members", "shadow_nonmembers"))
            for spec in shadow_specs:
                attack = spec.make(seed).fit(feats["shadow_members"], feats["shadow_nonmembers"])
                self.shadow_attacks[spec.name] = attack
            self.shadow_fit_auc = {name: a.report(feats["shadow_members"], feats["shadow_nonmembers"])
                                   for name, a in self.shadow_attacks.items()}

    def _features(self, model, names):
        """Features of ``model`` on the named pair sets, in one pass over the users."""
        parts = [getattr(self.sets, n) for n in names]
        pairs = Pairs.concat(*parts)
        feats = pair_features(model, pairs.users, pairs.items, self.known, self.history, self.chunk)
        feats[PAIR] = pairs.keys(self.n_items)
        out, start = {}, 0
        for name, part in zip(names, parts):
            out[name] = {k: v[start:start + len(part)] for k, v in feats.items()}
            start += len(part)
        return out

    def features(self, model):
        """``{set name: {feature: ndarray}}`` of ``model`` on the target's pair sets, ``delta``
        included."""
        feats = self._features(model, self._target_sets)
        for name, f in feats.items():
            f[DELTA] = f["score"] - self._original_scores[name]
        return feats

    def run(self, model):
        """``{attack name: AUC on forget pairs vs evaluation test pairs}`` for ``model``."""
        feats = self.features(model)
        members, nonmembers = feats["eval_members"], feats["eval_nonmembers"]
        out = {}
        for spec in self.specs:
            if spec.fit_on == "shadow":
                attack = self.shadow_attacks[spec.name]
            else:
                attack = spec.make(self.seed).fit(feats["fit_members"], feats["fit_nonmembers"])
            out[spec.name] = attack.report(members, nonmembers)
        return out
