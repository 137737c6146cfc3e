"""Membership-inference attacks behind one interface: ``fit``, ``score``, ``report``.

An attack sees *features*: a mapping ``{name: ndarray [n]}`` (one row per candidate, e.g. a
user-item pair or a user; see :mod:`recbole_tru.audit.features`) or a plain 2-D array
``[n, d]``. It is fitted on known members (label 1) and known non-members (label 0) and
scores new candidates, higher = more likely a member. ``report`` is the ROC AUC of those
scores on a labelled evaluation set (0.5 = the attack cannot tell members from non-members).

Every attack is deterministic given its ``seed``. Attacks are made by name through
:func:`make_attack` (:data:`ATTACKS`), which fails loudly on an unknown name.
"""
import difflib

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def as_matrix(features, columns=None):
    """``features`` as a float64 matrix [n, d]: the named ``columns`` of a mapping (in that
    order), or a 1-D / 2-D array as it is."""
    if hasattr(features, "keys"):
        if columns is None:
            raise ValueError("features given by name need the attack's columns")
        missing = [c for c in columns if c not in features]
        if missing:
            raise KeyError(f"feature(s) {missing} not computed; available: {sorted(features)}")
        return np.column_stack([np.asarray(features[c], dtype=np.float64) for c in columns])
    matrix = np.asarray(features, dtype=np.float64)
    return matrix[:, None] if matrix.ndim == 1 else matrix


def auc(member_scores, nonmember_scores):
    """ROC AUC of scores (higher = member) for members vs non-members."""
    member_scores, nonmember_scores = np.asarray(member_scores), np.asarray(nonmember_scores)
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError(f"AUC needs members and non-members, got {len(member_scores)} and {len(nonmember_scores)}")
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(labels, np.r_[member_scores, nonmember_scores]))


class Attack:
    """A membership-inference attack: ``fit`` on labelled candidates, ``score`` new ones,
    ``report`` the AUC on an evaluation set never used to fit."""

    columns = None

    def fit(self, member_features, nonmember_features):
        members = as_matrix(member_features, self.columns)
        nonmembers = as_matrix(nonmember_features, self.columns)
        if len(members) == 0 or len(nonmembers) == 0:
            raise ValueError(f"{type(self).__name__}.fit needs members and non-members, "
                             f"got {len(members)} and {len(nonmembers)}")
        x = np.vstack([members, nonmembers])
        y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
        self._fit(np.nan_to_num(x), y)
        self.fitted = True
        return self

    def score(self, features):
        """Membership scores [n] (higher = more likely a member)."""
        if not getattr(self, "fitted", False):
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        return np.asarray(self._score(np.nan_to_num(as_matrix(features, self.columns))), dtype=np.float64)

    def report(self, member_eval, nonmember_eval):
        """ROC AUC on evaluation members vs non-members."""
        return auc(self.score(member_eval), self.score(nonmember_eval))

    def _fit(self, x, y):
        raise NotImplementedError

    def _score(self, x):
        raise NotImplementedError


class ThresholdAttack(Attack):
    """One feature as the score: ``sign * x[column]``. ``sign`` +1 (larger = member), -1
    (smaller = member) or ``None``: the orientation with the higher AUC on the fitting data
    (the only thing fitted)."""

    def __init__(self, column, sign=None, seed=None):
        if sign not in (1, -1, None):
            raise ValueError(f"ThresholdAttack sign must be +1, -1 or None (fitted), got {sign!r}")
        self.column, self.columns, self.sign = column, [column], sign
        self._fixed = sign is not None

    def _fit(self, x, y):
        if not self._fixed:
            self.sign = 1 if roc_auc_score(y, x[:, 0]) >= 0.5 else -1

    def _score(self, x):
        return self.sign * x[:, 0]


class _SklearnAttack(Attack):
    """Standardised features -> a seeded scikit-learn classifier; score = P(member)."""

    def __init__(self, columns=None, seed=0):
        self.columns = list(columns) if columns is not None else None
        self.seed = seed

    def classifier(self):
        raise NotImplementedError

    def _fit(self, x, y):
        self.model = make_pipeline(StandardScaler(), self.classifier()).fit(x, y)

    def _score(self, x):
        return self.model.predict_proba(x)[:, 1]


class LogisticAttack(_SklearnAttack):
    """Logistic regression on standardised features (Shokri et al.'s attack model reduced to
    its linear form)."""

    def classifier(self):
        return LogisticRegression(C=1.0, max_iter=2000, random_state=self.seed)


class BoostingAttack(_SklearnAttack):
    """Gradient-boosted trees (non-linear interactions of the features, e.g. score x rank)."""

    def classifier(self):
        return HistGradientBoostingClassifier(max_iter=100, max_depth=3, learning_rate=0.1,
                                              l2_regularization=1.0, random_state=self.seed)


class MLPAttack(_SklearnAttack):
    """A small multilayer perceptron (the attack classifier of Zhang et al., CCS 2021)."""

    def __init__(self, columns=None, seed=0, hidden=(32, 8)):
        super().__init__(columns, seed)
        self.hidden = tuple(hidden)

    def classifier(self):
        return MLPClassifier(hidden_layer_sizes=self.hidden, alpha=1e-3, max_iter=1000,
                             early_stopping=False, random_state=self.seed)


ATTACKS = {
    "threshold": ThresholdAttack,
    "logistic": LogisticAttack,
    "boosting": BoostingAttack,
    "mlp": MLPAttack,
}


def make_attack(kind, *args, **kwargs):
    """An attack of the registered ``kind``; an unknown kind is an error naming the known ones."""
    if kind not in ATTACKS:
        close = difflib.get_close_matches(str(kind), list(ATTACKS), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"Unknown attack '{kind}'.{hint} Known attacks: {', '.join(ATTACKS)}.")
    return ATTACKS[kind](*args, **kwargs)
