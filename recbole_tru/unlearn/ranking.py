"""Full-catalogue rankings under the CURRENT parameters: pair ranks and top-K lists.

Ranks are 1-based (1 = top) among the items not masked for the user; item 0 (padding) is
never ranked. Masks are CSR ``(indptr, indices)`` histories (see ``UnlearnData``).
"""
import numpy as np
import torch
from recbole.data.interaction import Interaction


def drop_score_cache(model):
    """RecBole models that cache whole-catalogue embeddings between calls (LightGCN's
    ``restore_user_e``) are told to recompute: the parameters may have changed."""
    for name in ("restore_user_e", "restore_item_e"):
        if hasattr(model, name):
            setattr(model, name, None)


@torch.no_grad()
def user_scores(model, users, history=None):
    """Scores [len(users), n_items] with padding and ``history`` items set to -inf."""
    was_training = model.training
    model.eval()
    drop_score_cache(model)
    users_t = torch.as_tensor(users, dtype=torch.long, device=model.device)
    scores = model.full_sort_predict(Interaction({model.USER_ID: users_t})).view(len(users_t), -1).float()
    model.train(was_training)
    scores[:, 0] = -torch.inf
    if history is not None:
        indptr, indices = history
        users_np = np.asarray(users)
        counts = indptr[users_np + 1] - indptr[users_np]
        rows = np.repeat(np.arange(len(users_np)), counts)
        cols = np.concatenate([indices[indptr[u]:indptr[u + 1]] for u in users_np]) if len(rows) else np.zeros(0, np.int64)
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
    return scores


def _chunks(unique_users, size):
    for start in range(0, len(unique_users), size):
        yield unique_users[start:start + size]


def pair_ranks(model, users, items, history=None, chunk=512):
    """Rank (float, 1 = top) of each (user, item) pair among the user's unmasked items.
    The pair's own item must not be in ``history``."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    ranks = np.empty(len(users), dtype=np.float64)
    unique = np.unique(users)
    for block in _chunks(unique, chunk):
        scores = user_scores(model, block, history)
        pos = np.flatnonzero(np.isin(users, block))
        row = torch.from_numpy(np.searchsorted(block, users[pos]))
        own = scores[row, torch.from_numpy(items[pos])]
        ranks[pos] = 1 + (scores[row] > own[:, None]).sum(1).numpy()
    return ranks


def topk_lists(model, users, history=None, k=20, chunk=512):
    """Top-``k`` item ids [len(users), k] for each user (history masked)."""
    users = np.asarray(users, dtype=np.int64)
    out = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        out[start:start + len(block)] = user_scores(model, block, history).topk(k, dim=1).indices.numpy()
    return out
