"""Rankings under the CURRENT parameters: pair ranks and top-K lists.

Ranks are 1-based (1 = top) among the items not masked for the user; item 0 (padding) is
never ranked. Masks are CSR ``(indptr, indices)`` histories (see ``UnlearnData``).

:func:`pair_ranks` ranks against the whole catalogue, or, given ``candidates`` (a uniform
sample of item ids, :func:`sample_items`), estimates each rank from the sample: with ``a`` of
the ``n`` unmasked sampled items scoring above the pair and ``C`` other unmasked items in the
catalogue, ``rank = 1 + a * C / n`` (unbiased for the exact rank, whose ``a`` would be counted
over all ``C``). Its cost follows the sample, not the catalogue.
"""
from contextlib import contextmanager

import numpy as np
import torch
from recbole.data.interaction import Interaction


# pairs compared against the catalogue at once: the [pairs, n_items] comparison stays in cache
# (numpy's count_nonzero on 64-pair blocks measured 8x faster than one torch comparison + sum)
_COMPARE_PAIRS = 64


def drop_score_cache(model):
    """RecBole models that cache whole-catalogue embeddings between calls (LightGCN's
    ``restore_user_e``) are told to recompute: the parameters may have changed."""
    for name in ("restore_user_e", "restore_item_e"):
        if hasattr(model, name):
            setattr(model, name, None)


def history_entries(history, users):
    """``(rows, cols)``: for each position r of ``users``, one entry (r, item) per item in the
    user's CSR ``history`` row (vectorised gather, no loop over users)."""
    indptr, indices = history
    users = np.asarray(users, dtype=np.int64)
    starts, counts = indptr[users], indptr[users + 1] - indptr[users]
    rows = np.repeat(np.arange(len(users)), counts)
    if len(rows) == 0:
        return rows, np.zeros(0, dtype=np.int64)
    first = np.cumsum(counts) - counts                      # where each user's entries begin
    cols = indices[np.repeat(starts - first, counts) + np.arange(len(rows))]
    return rows, np.asarray(cols, dtype=np.int64)


@contextmanager
def scoring(model):
    """Evaluation mode without gradients, whole-catalogue caches dropped; the mode is restored."""
    was_training = model.training
    model.eval()
    drop_score_cache(model)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _ids(ids, model):
    return torch.as_tensor(ids, dtype=torch.long, device=model.device)


def user_scores(model, users, history=None):
    """Scores [len(users), n_items] with padding and ``history`` items set to -inf."""
    with scoring(model):
        users_t = _ids(users, model)
        scores = model.full_sort_predict(Interaction({model.USER_ID: users_t})).view(len(users_t), -1).float()
    scores[:, 0] = -torch.inf
    if history is not None:
        rows, cols = history_entries(history, users)
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
    return scores


def sample_items(n_items, size, rng):
    """``size`` distinct item ids drawn uniformly from ``1 .. n_items - 1`` (sorted), or None when
    ``size`` is 0 or the catalogue has no more items than that (exact ranks then)."""
    size = int(size or 0)
    if size <= 0 or size >= n_items - 1:
        return None
    return np.sort(rng.choice(np.arange(1, n_items, dtype=np.int64), size=size, replace=False))


def _item_scores(model, users, items):
    """Scores [len(users), len(items)] (``model.score_items`` where the model has it)."""
    with scoring(model):
        users_t, items_t = _ids(users, model), _ids(items, model)
        if hasattr(model, "score_items"):
            return model.score_items(users_t, items_t).float()
        full = model.full_sort_predict(Interaction({model.USER_ID: users_t})).view(len(users_t), -1)
        return full[:, items_t].float()


def _own_scores(model, users, items):
    """Scores of the aligned (user, item) pairs, as a numpy array."""
    with scoring(model):
        scores = model.predict(Interaction({model.USER_ID: _ids(users, model), model.ITEM_ID: _ids(items, model)}))
    return scores.float().cpu().numpy()


def pair_ranks(model, users, items, history=None, chunk=512, candidates=None):
    """Rank (float, 1 = top) of each (user, item) pair among the user's unmasked items.
    The pair's own item must not be in ``history``. Users are scored ``chunk`` at a time, each
    once however many pairs they have. ``candidates``: estimate from this item sample (see the
    module docstring) instead of ranking against the whole catalogue."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if candidates is not None:
        return _sampled_pair_ranks(model, users, items, history, chunk, np.asarray(candidates, dtype=np.int64))
    ranks = np.empty(len(users), dtype=np.float64)
    for block, pairs in _user_blocks(users, chunk):
        scores = user_scores(model, block, history).cpu().numpy()
        for pos, row in pairs:
            own = scores[row, items[pos]]
            ranks[pos] = 1 + np.count_nonzero(scores[row] > own[:, None], axis=1)
    return ranks


def _user_blocks(users, chunk):
    """Yield ``(block, pairs)``: up to ``chunk`` distinct users (sorted) and an iterator of
    ``(positions, rows)`` over their pairs, ``_COMPARE_PAIRS`` at a time (positions in ``users``,
    rows in ``block``); each user is in one block, however many pairs it has."""
    order = np.argsort(users, kind="stable")
    unique, first = np.unique(users[order], return_index=True)
    bounds = np.append(first, len(users))
    for start in range(0, len(unique), chunk):
        block = unique[start:start + chunk]
        block_pos = order[bounds[start]:bounds[min(start + chunk, len(unique))]]
        subs = [block_pos[sub:sub + _COMPARE_PAIRS] for sub in range(0, len(block_pos), _COMPARE_PAIRS)]
        yield block, ((pos, np.searchsorted(block, users[pos])) for pos in subs)


def _sampled_pair_ranks(model, users, items, history, chunk, candidates):
    n_items, m = model.n_items, len(candidates)
    ranks = np.empty(len(users), dtype=np.float64)
    own_all = _own_scores(model, users, items)
    own_col = np.minimum(np.searchsorted(candidates, items), m - 1)
    own_in = candidates[own_col] == items                      # the pair's item is in the sample
    for block, pairs in _user_blocks(users, chunk):
        scores = _item_scores(model, block, candidates).cpu().numpy()
        masked = np.zeros(len(block), dtype=np.int64)            # sampled items in the history
        others = np.full(len(block), n_items - 2, dtype=np.int64)  # unmasked items besides the pair's
        if history is not None:
            rows, cols = history_entries(history, block)
            pos = np.minimum(np.searchsorted(candidates, cols), m - 1)
            hit = candidates[pos] == cols
            scores[rows[hit], pos[hit]] = -np.inf
            masked = np.bincount(rows[hit], minlength=len(block))
            others = others - np.diff(history[0])[block]
        for pos, row in pairs:
            above = scores[row] > own_all[pos][:, None]
            above[np.flatnonzero(own_in[pos]), own_col[pos][own_in[pos]]] = False   # not the pair itself
            valid = m - masked[row] - own_in[pos]
            ranks[pos] = 1 + np.count_nonzero(above, axis=1) * others[row] / np.maximum(valid, 1)
    return ranks


def topk_lists(model, users, history=None, k=20, chunk=512):
    """Top-``k`` item ids [len(users), k] for each user (history masked)."""
    users = np.asarray(users, dtype=np.int64)
    out = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        out[start:start + len(block)] = user_scores(model, block, history).topk(k, dim=1).indices.numpy()
    return out
