"""TRU's ranking fusion gate and guarded stop (pure functions of rank arrays).

A forget pair should end up ranked like a pair the model never trained on. Forget ranks are
quantile-matched to a live reference of non-member ranks (1-D optimal transport: sort both),
and only pairs ranked above their matched target keep a push, measured in log-rank because
membership shows at the top of the list::

    g = clip(tanh((log r_target - log r_ui) / T), 0, 1)

``g`` is 0 at or below the target and grows with the log-rank gap above it.
"""
import numpy as np


def matched_targets(forget_ranks, reference_ranks):
    """Target rank of each forget pair: the reference quantile at the pair's own quantile
    among the forget ranks (ties broken by position). Interpolated in log-rank."""
    forget_ranks = np.asarray(forget_ranks, dtype=np.float64)
    reference = np.log(np.sort(np.asarray(reference_ranks, dtype=np.float64)))
    if len(reference) == 0:
        raise ValueError("the gate's reference (never-trained pairs) is empty")
    order = np.argsort(forget_ranks, kind="stable")
    quantiles = (np.arange(len(forget_ranks)) + 0.5) / len(forget_ranks)
    positions = quantiles * len(reference) - 0.5
    targets = np.empty(len(forget_ranks))
    targets[order] = np.exp(np.interp(positions, np.arange(len(reference)), reference))
    return targets


def matched_targets_per_user(forget_users, forget_ranks, reference_users, reference_ranks, min_reference=3):
    """:func:`matched_targets` within each user (a forget pair is matched to its own user's
    never-trained pairs); users with fewer than ``min_reference`` reference pairs are matched
    to the pooled reference. Vectorised over users (no loop): one sort of each side."""
    forget_users, forget_ranks = np.asarray(forget_users), np.asarray(forget_ranks, dtype=np.float64)
    reference_users, reference_ranks = np.asarray(reference_users), np.asarray(reference_ranks, dtype=np.float64)
    targets = matched_targets(forget_ranks, reference_ranks)
    if len(forget_ranks) == 0:
        return targets
    ref_order = np.lexsort((reference_ranks, reference_users))          # by user, then rank
    ref_u, ref_log = reference_users[ref_order], np.log(reference_ranks[ref_order])
    order = np.lexsort((np.arange(len(forget_ranks)), forget_ranks, forget_users))   # ties by position
    users = forget_users[order]
    first = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])        # start of each user's run
    counts = np.diff(np.r_[first, len(users)])
    within = np.arange(len(users)) - np.repeat(first, counts)
    quantiles = (within + 0.5) / np.repeat(counts, counts)
    lo, hi = np.searchsorted(ref_u, users, "left"), np.searchsorted(ref_u, users, "right")
    m = hi - lo
    own = m >= min_reference
    if not own.any():
        return targets
    lo, m, quantiles = lo[own], m[own], quantiles[own]
    positions = np.clip(quantiles * m - 0.5, 0, m - 1)                  # np.interp clips the same way
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, m - 1)
    frac = positions - below
    log_target = ref_log[lo + below] * (1 - frac) + ref_log[lo + above] * frac
    targets[order[own]] = np.exp(log_target)
    return targets


def gate_weights(forget_ranks, target_ranks, temperature):
    """``clip(tanh((log r_target - log r_ui) / T), 0, 1)`` per pair."""
    if temperature <= 0:
        raise ValueError(f"gate temperature must be > 0, got {temperature}")
    gap = np.log(np.asarray(target_ranks, dtype=np.float64)) - np.log(np.asarray(forget_ranks, dtype=np.float64))
    return np.clip(np.tanh(gap / temperature), 0.0, 1.0)


def ks_distance(a, b):
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| (rank-invariant)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                               - np.searchsorted(b, grid, side="right") / len(b))))


def user_recall(users, ranks, k, only=None):
    """Mean over users of (pairs ranked <= k) / (pairs of the user): RecBole's Recall@k with the
    pairs as ground truth. ``only``: restrict to these users."""
    users, hits = np.asarray(users), (np.asarray(ranks) <= k).astype(np.float64)
    if only is not None:
        keep = np.isin(users, only)
        users, hits = users[keep], hits[keep]
    if len(users) == 0:
        return float("nan")
    uniq, inverse = np.unique(users, return_inverse=True)
    return float(np.mean(np.bincount(inverse, weights=hits) / np.bincount(inverse)))


def recall_gap(forget_users, forget_ranks, reference_users, reference_ranks, k):
    """|Recall@k(forget pairs) - Recall@k(reference pairs)| over the users having both."""
    both = np.intersect1d(forget_users, reference_users)
    return abs(user_recall(forget_users, forget_ranks, k, both) - user_recall(reference_users, reference_ranks, k, both))


class GuardedStop:
    """Stop when the distance falls below ``delta`` or has risen ``patience`` checks in a row;
    remember the state with the lowest distance seen (the caller restores it)."""

    def __init__(self, delta, patience=2):
        self.delta, self.patience = float(delta), int(patience)
        self.best = np.inf
        self.best_state = None
        self.best_check = -1
        self.last = None
        self.rises = 0
        self.checks = 0
        self.reason = None

    def update(self, distance, snapshot):
        """Record ``distance``; ``snapshot()`` is called only when it is the best so far.
        Returns True when it is time to stop."""
        if distance < self.best:
            self.best, self.best_state, self.best_check = distance, snapshot(), self.checks
        self.rises = self.rises + 1 if self.last is not None and distance > self.last else 0
        self.last = distance
        self.checks += 1
        if distance < self.delta:
            self.reason = f"distance {distance:.4f} < delta {self.delta}"
        elif self.rises >= self.patience:
            self.reason = f"distance rose {self.rises} checks in a row"
        return self.reason is not None
