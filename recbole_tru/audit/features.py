"""What a membership attack sees of a model: per-pair features of its full-catalogue scores.

For pairs ``(u, i)`` and a model's scores ``s_u·`` over the catalogue (one forward pass per
block of users, no loop over pairs), with the user's *reference pool* ``N(u)`` = the items
``u`` has no known interaction with (``known``: every split of the original data, forgotten
pairs included) and ``H(u)`` = ``u``'s retained training items:

* ``score``        ``s_ui`` (raw);
* ``log_rank``     ``log r_ui``, ``r_ui = 1 + |{j ∈ N(u) : s_uj > s_ui}|`` (1 = above every
                   never-interacted item);
* ``pct``          ``r_ui / (|N(u)| + 1)`` (rank percentile, comparable across users);
* ``margin_top1``  ``s_ui - max_{j∈N(u)} s_uj``;
* ``margin_top10`` ``s_ui - mean of the 10 highest s_uj, j ∈ N(u)``;
* ``zscore``       ``(s_ui - mean_{N(u)} s) / std_{N(u)} s``;
* ``margin_hist``  ``s_ui - mean_{j∈H(u)\\{i}} s_uj`` (score against the user's own retained
                   history, leave-one-out; the pool mean when the user has none);
* ``delta``        ``s_ui - s_ui`` under the ORIGINAL model (0 for the original itself),
                   added by the caller that has the original's scores.

Deviation from ranking TRU's way (retained history masked): ranks and margins are taken
against the never-interacted items only, so every pair of a user -- member, forgotten or held
out -- is compared with the same reference and not with the user's other positives. It is
also a statistic TRU does not calibrate (TRU matches ranks under the retained-history mask).
"""
import numpy as np
import torch

from recbole_tru.model.ranking import user_scores

OUTPUT_FEATURES = ("score", "log_rank", "pct", "margin_top1", "margin_top10", "zscore", "margin_hist")
DELTA = "delta"
TOP = 10


def dense_mask(history, block, n_items):
    """BoolTensor [len(block), n_items]: True where the item is in the user's ``history``."""
    indptr, indices = history
    counts = indptr[block + 1] - indptr[block]
    rows = np.repeat(np.arange(len(block)), counts)
    cols = np.concatenate([indices[indptr[u]:indptr[u + 1]] for u in block]) if counts.sum() else np.zeros(0, np.int64)
    mask = torch.zeros(len(block), n_items, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    return mask


@torch.no_grad()
def pair_features(model, users, items, known, history, chunk=256):
    """Features (see the module docstring, all but ``delta``) of the pairs ``(users, items)``:
    ``{name: float64 ndarray [n_pairs]}``. ``known`` and ``history`` are CSR per user."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    out = {name: np.empty(len(users)) for name in OUTPUT_FEATURES}
    unique = np.unique(users)
    for start in range(0, len(unique), chunk):
        block = unique[start:start + chunk]
        scores = user_scores(model, block).cpu()                       # [B, n_items], item 0 = -inf
        n_items = scores.shape[1]
        known_mask = dense_mask(known, block, n_items)
        known_mask[:, 0] = True
        pool = scores.masked_fill(known_mask, -torch.inf)
        in_pool = ~known_mask
        n_pool = in_pool.sum(1).clamp(min=1)
        finite = torch.where(in_pool, scores, torch.zeros(()))
        mean = finite.sum(1) / n_pool
        std = (torch.where(in_pool, (scores - mean[:, None]) ** 2, torch.zeros(())).sum(1) / n_pool).sqrt()
        top = pool.topk(min(TOP, n_items - 1), dim=1).values
        top = torch.where(torch.isfinite(top), top, mean[:, None])     # users with < TOP pool items
        hist_mask = dense_mask(history, block, n_items)
        hist_sum = torch.where(hist_mask, scores, torch.zeros(())).sum(1)
        hist_n = hist_mask.sum(1)

        pos = np.flatnonzero(np.isin(users, block))
        row = torch.from_numpy(np.searchsorted(block, users[pos]))
        col = torch.from_numpy(items[pos])
        own = scores[row, col]
        rank = 1 + (pool[row] > own[:, None]).sum(1)
        in_hist = hist_mask[row, col]
        loo_n = hist_n[row] - in_hist.long()
        loo_mean = (hist_sum[row] - torch.where(in_hist, own, torch.zeros(()))) / loo_n.clamp(min=1)
        loo_mean = torch.where(loo_n > 0, loo_mean, mean[row])
        values = {
            "score": own,
            "log_rank": rank.double().log(),
            "pct": rank.double() / (n_pool[row].double() + 1),
            "margin_top1": own - top[row, 0],
            "margin_top10": own - top[row].mean(1),
            "zscore": (own - mean[row]) / std[row].clamp(min=1e-12),
            "margin_hist": own - loo_mean,
        }
        for name, value in values.items():
            out[name][pos] = value.double().numpy()
    return out
