"""TRU's ranking fusion gate and guarded stop (pure functions of rank arrays).

A forget pair should end up ranked like a pair the model never trained on. Forget ranks are
quantile-matched to a live reference of non-member ranks (1-D optimal transport: sort both),
and only pairs ranked above their matched target keep a push, measured in log-rank because
membership shows at the top of the list::

    g = clip(tanh((log r_target - log r_ui) / T), 0, 1)

``g`` is 0 at or below the target and grows with the log-rank gap above it.
"""
from logging import getLogger

import numpy as np
from scipy import sparse


def matched_targets(forget_ranks, reference_ranks, offsets=None):
    """Target rank of each forget pair: the reference quantile at the pair's own quantile
    among the forget ranks (ties broken by position). Interpolated in log-rank. The j-th of n
    pairs takes quantile ``(j + o) / n``: ``o`` = 0.5, or the pair's own ``offsets`` entry in
    [0, 1) (``tru_match_quantiles: drawn``)."""
    forget_ranks = np.asarray(forget_ranks, dtype=np.float64)
    reference = np.log(np.sort(np.asarray(reference_ranks, dtype=np.float64)))
    if len(reference) == 0:
        raise ValueError("the gate's reference (never-trained pairs) is empty")
    order = np.argsort(forget_ranks, kind="stable")
    offset = 0.5 if offsets is None else np.asarray(offsets, dtype=np.float64)[order]
    quantiles = (np.arange(len(forget_ranks)) + offset) / len(forget_ranks)
    positions = quantiles * len(reference) - 0.5
    targets = np.empty(len(forget_ranks))
    targets[order] = np.exp(np.interp(positions, np.arange(len(reference)), reference))
    return targets


def matched_targets_per_user(forget_users, forget_ranks, reference_users, reference_ranks, min_reference=3,
                             min_forget=1, offsets=None):
    """:func:`matched_targets` within each user (a forget pair is matched to its own user's
    never-trained pairs); users with fewer than ``min_reference`` reference pairs, or fewer than
    ``min_forget`` forget pairs (``tru_match_min_pairs``: a user's one or two pairs take the middle
    quantiles of the user's reference whatever their order), are matched to the pooled reference
    in the pooled order. Vectorised over users (no loop): one sort of each side. ``offsets``:
    :func:`matched_targets`'s, within each user's pairs."""
    forget_users, forget_ranks = np.asarray(forget_users), np.asarray(forget_ranks, dtype=np.float64)
    reference_users, reference_ranks = np.asarray(reference_users), np.asarray(reference_ranks, dtype=np.float64)
    targets = matched_targets(forget_ranks, reference_ranks, offsets)
    if len(forget_ranks) == 0:
        return targets
    ref_order = np.lexsort((reference_ranks, reference_users))          # by user, then rank
    ref_u, ref_log = reference_users[ref_order], np.log(reference_ranks[ref_order])
    order = np.lexsort((np.arange(len(forget_ranks)), forget_ranks, forget_users))   # ties by position
    users = forget_users[order]
    first = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])        # start of each user's run
    counts = np.diff(np.r_[first, len(users)])
    within = np.arange(len(users)) - np.repeat(first, counts)
    pairs_of_user = np.repeat(counts, counts)                           # per pair: its user's forget pairs
    offset = 0.5 if offsets is None else np.asarray(offsets, dtype=np.float64)[order]
    quantiles = (within + offset) / pairs_of_user
    lo, hi = np.searchsorted(ref_u, users, "left"), np.searchsorted(ref_u, users, "right")
    m = hi - lo
    own = (m >= min_reference) & (pairs_of_user >= min_forget)
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


def score_profiles(scores):
    """Each item's score profile over a sample of users, for :func:`retained_support`: ``scores``
    [users, items] transposed, each item's column scaled to unit norm (its scores as a direction,
    its bias kept: a retrained model keeps popular items high as well as similar ones; centring
    the columns, i.e. correlations, matched retraining worse on the calibration requests).
    Returns [items, users]; an all-zero column stays zero."""
    v = np.asarray(scores, dtype=np.float64).T
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def retained_support(profiles, forget_users, forget_items, retain_users, retain_items):
    """How strongly each forget pair (u, i) is implied by what u keeps: the mean cosine of item i's
    score profile with those of u's retained items, ``mean_{k in R_u} <p_i, p_k>``
    (``profiles``: :func:`score_profiles`, rows indexed by item id). A retrained model ranks a
    forgotten pair by that evidence alone, so with ``tru_match_order: support`` the pairs with the
    most of it are matched to the reference's top quantiles. 0 for a user with no retained pair."""
    forget_users, forget_items = np.asarray(forget_users, dtype=np.int64), np.asarray(forget_items, dtype=np.int64)
    users, where = np.unique(forget_users, return_inverse=True)
    keep = np.isin(retain_users, users)
    rows = np.searchsorted(users, np.asarray(retain_users)[keep])
    counts = np.bincount(rows, minlength=len(users)).astype(np.float64)
    # each user's mean retained profile: a [users, items] averaging matrix times the profiles
    averaging = sparse.csr_matrix((1.0 / counts[rows], (rows, np.asarray(retain_items)[keep])),
                                  shape=(len(users), profiles.shape[0]))
    centroids = np.asarray(averaging @ profiles)
    return np.einsum("pd,pd->p", profiles[forget_items], centroids[where])


def gate_weights(forget_ranks, target_ranks, temperature, two_sided=False):
    """``clip(tanh((log r_target - log r_ui) / T), 0, 1)`` per pair. ``two_sided``: not clipped
    at 0, so a pair ranked *below* its target gets a negative weight (-1 at the floor): the
    caller pulls it back up (:func:`recbole_tru.losses.gated_forget_loss`)."""
    if temperature <= 0:
        raise ValueError(f"gate temperature must be > 0, got {temperature}")
    gap = np.log(np.asarray(target_ranks, dtype=np.float64)) - np.log(np.asarray(forget_ranks, dtype=np.float64))
    return np.clip(np.tanh(gap / temperature), -1.0 if two_sided else 0.0, 1.0)


def ks_distance(a, b):
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| (rank-invariant)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                               - np.searchsorted(b, grid, side="right") / len(b))))


def auc_distance(forget_ranks, reference_ranks):
    """``|P(r_f < r_ref) + P(r_f = r_ref)/2 - 1/2|``: how far a rank-only membership test that
    calls a pair a member when it ranks higher is from chance, forget pairs vs never-trained
    pairs (the Mann-Whitney AUC of the two rank samples, folded at 0.5). It reads the whole rank
    distribution, where Recall@k reads its top only."""
    return abs(auc_signed(forget_ranks, reference_ranks))


def auc_signed(forget_ranks, reference_ranks):
    """``P(r_f < r_ref) + P(r_f = r_ref)/2 - 1/2``: :func:`auc_distance` before the fold; positive
    when the forget pairs rank above (smaller rank than) the reference."""
    f = np.asarray(forget_ranks, dtype=np.float64)
    ref = np.sort(np.asarray(reference_ranks, dtype=np.float64))
    if len(f) == 0 or len(ref) == 0:
        return float("nan")
    right = np.searchsorted(ref, f, side="right")
    above = len(ref) - right                                        # reference pairs ranked below (larger rank)
    ties = right - np.searchsorted(ref, f, side="left")
    return float((above.sum() + 0.5 * ties.sum()) / (len(f) * len(ref)) - 0.5)


def auc_noise(n_forget, n_reference):
    """Standard error of the rank AUC of ``n_forget`` against ``n_reference`` pairs when the two
    come from one distribution (Mann-Whitney under the null, no ties): ``sqrt((n_f + n_r + 1) /
    (12 n_f n_r))``. Below it, :func:`auc_distance` cannot tell the forget pairs from the
    reference: a one-item request of 10 pairs has a floor of ~0.09, a 5 % request of thousands
    ~0.005."""
    if n_forget <= 0 or n_reference <= 0:
        return float("nan")
    return float(np.sqrt((n_forget + n_reference + 1) / (12.0 * n_forget * n_reference)))


def user_shares(users, ranks, k, only=None):
    """``(sorted users, each one's share of pairs ranked <= k)``. ``only``: restrict to these users."""
    users, hits = np.asarray(users), (np.asarray(ranks) <= k).astype(np.float64)
    if only is not None:
        keep = np.isin(users, only)
        users, hits = users[keep], hits[keep]
    uniq, inverse = np.unique(users, return_inverse=True)
    return uniq, np.bincount(inverse, weights=hits, minlength=len(uniq)) / np.bincount(inverse, minlength=len(uniq))


def user_recall(users, ranks, k, only=None):
    """Mean over users of (pairs ranked <= k) / (pairs of the user): RecBole's Recall@k with the
    pairs as ground truth. ``only``: restrict to these users."""
    _, shares = user_shares(users, ranks, k, only)
    return float(np.mean(shares)) if len(shares) else float("nan")


def recall_pair(forget_users, forget_ranks, reference_users, reference_ranks, k):
    """``(Recall@k(forget pairs), Recall@k(reference pairs))`` over the users having both. When no
    user has both (the affected users have no validation pairs, so the reference holds other
    users' pairs: :func:`reference_pairs`), each side is averaged over its own users (pooled)
    rather than over an empty set."""
    both = np.intersect1d(forget_users, reference_users)
    only = both if len(both) else None
    return (user_recall(forget_users, forget_ranks, k, only),
            user_recall(reference_users, reference_ranks, k, only))


def recall_difference(forget_users, forget_ranks, reference_users, reference_ranks, k):
    """``(d, se)``: ``d`` = Recall@k(forget pairs) - Recall@k(reference pairs) over the users having
    both (:func:`recall_pair`), and its standard error as a paired mean over those users,
    ``sd_u(f_u - r_u) / sqrt(n)`` with ``f_u``, ``r_u`` each user's share of pairs ranked <= k.
    It is what sampling the two sets of pairs alone makes ``d`` vary by when forget and reference
    pairs are alike; NaN se for fewer than two users with both."""
    both = np.intersect1d(forget_users, reference_users)
    if len(both) < 2:
        d = np.subtract(*recall_pair(forget_users, forget_ranks, reference_users, reference_ranks, k))
        return float(d), float("nan")
    # each side restricted to ``both``: the same sorted users, so the shares line up
    diff = user_shares(forget_users, forget_ranks, k, both)[1] - user_shares(reference_users, reference_ranks, k, both)[1]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def recall_gap(forget_users, forget_ranks, reference_users, reference_ranks, k):
    """|Recall@k(forget pairs) - Recall@k(reference pairs)|, each as :func:`recall_pair` reads it."""
    forget, reference = recall_pair(forget_users, forget_ranks, reference_users, reference_ranks, k)
    return abs(forget - reference)


class GuardedStop:
    """Stop when the distance falls below ``delta`` (or below the check's ``noise`` floor, when
    that is larger) or has risen ``patience`` checks in a row; remember the state with the lowest
    distance seen (the caller restores it)."""

    def __init__(self, delta, patience=2):
        self.delta, self.patience = float(delta), int(patience)
        self.best = np.inf
        self.best_state = None
        self.best_check = -1
        self.last = None
        self.rises = 0
        self.checks = 0
        self.reason = None

    def update(self, distance, snapshot, noise=0.0):
        """Record ``distance``; ``snapshot()`` is called only when it is the best so far.
        Returns True when it is time to stop: ``distance < max(delta, noise)`` (``noise``: the
        distance's standard error under "no difference", :func:`gate_check`'s ``noise``), or a
        rise ``patience`` checks in a row. A NaN distance is an error: it compares false with
        everything, so the stop would neither stop nor remember a state."""
        if not np.isfinite(distance):
            raise ValueError(f"TRU's stop distance is {distance} at check {self.checks}: the forget pairs or their "
                             f"reference are empty (see recbole_tru.unlearn.gate.reference_pairs)")
        if distance < self.best:
            self.best, self.best_state, self.best_check = distance, snapshot(), self.checks
        self.rises = self.rises + 1 if self.last is not None and distance > self.last else 0
        self.last = distance
        self.checks += 1
        if distance < self.delta:
            self.reason = f"distance {distance:.4f} < delta {self.delta}"
        elif self.below(distance, noise):
            self.reason = f"distance {distance:.4f} < its noise floor {noise:.4f} (delta {self.delta})"
        elif self.rises >= self.patience:
            self.reason = f"distance rose {self.rises} checks in a row"
        return self.reason is not None

    def below(self, distance, noise=0.0):
        """The stop's target: ``distance < max(delta, noise)`` (``noise`` as in :meth:`update`)."""
        return distance < max(self.delta, noise)

    def offer(self, distance, snapshot, noise=0.0):
        """A state between two checks (``tru_stop_refine``): remembered when its ``distance`` is the
        lowest so far, without counting as a check (no rise). Returns True, with the reason, when
        it meets the stop's target (:meth:`below`)."""
        if np.isfinite(distance) and distance < self.best:
            self.best, self.best_state, self.best_check = distance, snapshot(), max(self.checks, 1)
        if self.below(distance, noise):
            self.reason = (f"crossing refined: distance {distance:.4f} < {max(self.delta, noise):.4f} "
                           f"between two checks")
            return True
        return False


def cold_items(data, n):
    """Items a retrained model has (almost) no positive evidence for: the ``n`` non-deleted
    items with the fewest retained interactions (ties by id)."""
    counts = np.bincount(data.retain_items, minlength=data.n_items).astype(float)
    counts[0] = np.inf
    counts[data.forget.deleted_items] = np.inf
    order = np.lexsort((np.arange(len(counts)), counts))
    return order[:n][np.isfinite(counts[order[:n]])]


def reference_pairs(data, partial_pair, item_pair, cold, size, rng):
    """Never-trained pairs per group, drawn once with ``rng`` (their ranks are re-scored at each
    check): ``{"partial": (users, items)}`` -- validation pairs of the partially deleted users
    (any validation pairs if they have none) -- and ``{"item": ...}`` -- the deleted items'
    users paired with ``cold`` items, never a pair of the training history."""
    f, groups = data.forget, {}
    partial_users = np.unique(f.users[partial_pair])
    if len(partial_users):
        pick = np.flatnonzero(np.isin(data.valid_users, partial_users))
        if len(pick) == 0:
            getLogger().info(f"TRU: none of the {len(partial_users)} partially deleted user(s) has validation pairs; "
                             f"the reference is other users' validation pairs and the stop's Recall gap is pooled")
            pick = np.arange(len(data.valid_users))
        pick = rng.choice(pick, size=min(size, len(pick)), replace=False)
        groups["partial"] = (data.valid_users[pick], data.valid_items[pick])
    if item_pair.any():
        users = rng.choice(f.users[item_pair], size=size, replace=True)
        items = rng.choice(cold, size=size, replace=True)
        indptr, seen = data.train_history()
        fresh = np.array([i not in seen[indptr[u]:indptr[u + 1]] for u, i in zip(users, items)], dtype=bool)
        groups["item"] = (users[fresh], items[fresh])
    return groups


def gate_check(forget_users, forget_ranks, masks, groups, reference_ranks, weights, *, match, gate,
               temperature, stop_metric, stop_k, two_sided=False, order=None, min_forget=1, targets_out=None,
               offsets=None):
    """One check of the gate over the groups (``masks``: group -> forget-pair mask): sets the gate
    ``weights`` of each group's pairs in place (when ``gate``) and returns the check's record,
    whose ``distance`` (the stop's: Recall@``stop_k`` gap, rank AUC distance or KS, pair-weighted over groups) the
    guarded stop reads, and ``noise``: the same weighting of each group's noise floor (the AUC's
    standard error, :func:`auc_noise`, for a group stopped on the AUC; 0 for the others).
    ``order``: per forget pair, the key the partially deleted users' pairs are matched to the
    reference by (lower: a better reference quantile; ``tru_match_order: support``), instead of
    their current ranks; ``min_forget``, ``offsets`` (per forget pair): :func:`matched_targets_per_user`'s;
    ``targets_out``: an array [forget pairs] that receives each checked pair's matched target rank."""
    distance, noise, total, record = 0.0, 0.0, 0, {}
    for name, mask in masks.items():
        if name not in reference_ranks or not mask.any():
            continue
        idx, ref_users, ref = np.flatnonzero(mask), groups[name][0], reference_ranks[name]
        key = order[idx] if name == "partial" and order is not None else forget_ranks[idx]
        if name == "partial" and match == "user":
            targets = matched_targets_per_user(forget_users[idx], key, ref_users, ref, min_forget=min_forget,
                                               offsets=None if offsets is None else offsets[idx])
        else:
            targets = matched_targets(key, ref, None if offsets is None else offsets[idx])
        if targets_out is not None:
            targets_out[idx] = targets
        if gate:
            weights[idx] = gate_weights(forget_ranks[idx], targets, temperature, two_sided)
        ks = ks_distance(forget_ranks[idx], ref)
        record[f"ks_{name}"] = ks
        signed = auc_signed(forget_ranks[idx], ref)
        auc = abs(signed)
        record[f"auc_{name}"] = auc
        metric = stop_metric[name] if isinstance(stop_metric, dict) else stop_metric
        if metric == "recall":
            forget_recall, reference_recall = recall_pair(forget_users[idx], forget_ranks[idx], ref_users, ref, stop_k)
            signed = forget_recall - reference_recall
            gap = abs(signed)
            record[f"recall_gap_{name}"] = gap
            distance += gap * len(idx)
        elif metric == "auc":
            distance += auc * len(idx)
            record[f"auc_noise_{name}"] = auc_noise(len(idx), len(ref))
            noise += record[f"auc_noise_{name}"] * len(idx)
        else:
            distance += ks * len(idx)
        record[f"signed_{name}"] = signed       # the stop's reading before |.|: > 0, forget pairs above the reference
        total += len(idx)
        record[f"gate_{name}"] = float(weights[idx].mean())
        record[f"median_rank_{name}"] = float(np.median(forget_ranks[idx]))
        record[f"median_reference_rank_{name}"] = float(np.median(ref))
    record["distance"] = distance / max(total, 1)
    record["noise"] = noise / max(total, 1)
    return record
