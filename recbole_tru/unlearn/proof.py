"""Proof of deletion: the forgotten pairs are in nothing the unlearned model reads at run time.

TRU.md, "Before any update: delete the data": every method first removes ``D_f`` from the
retained training interactions, the interaction graph of graph backbones, negative sampling
and the history masks of evaluation. :func:`deletion_proof` checks each of these on the data
and the model of a finished run, pair by pair, and returns named checks::

    {"retained_interactions": {"passed": True, "found": 0, "detail": "..."}, ...}

``found`` counts forgotten pairs (or request-covered rows) still present; a check passes when it
is 0. The forgotten pairs are the forget set's training pairs plus the request's pairs found
only in the validation/test split. A graph is any sparse ``(n_users + n_items)²`` tensor the
model holds (MMGCN's ``adjacency`` and ``adjacency_t``, LightGCN's ``norm_adj_matrix``), with
user ``u`` at row ``u`` and item ``i`` at row ``n_users + i``, as in RecBole; a model without
one gets "not applicable" (passed). Parameters are not data: what they still remember is the
membership audit's question, not this proof's.
"""
import numpy as np
import torch

from recbole_tru.data.forget import heldout_keep_mask


def forgotten_keys(forget, n_items):
    """Sorted unique keys ``u * n_items + i`` of the forgotten training pairs and the
    requested pairs."""
    pairs = np.concatenate([np.stack([forget.users, forget.items], axis=1).astype(np.int64),
                            forget.requested_pairs.reshape(-1, 2).astype(np.int64)])
    return np.unique(pairs[:, 0] * n_items + pairs[:, 1])


def _check(found, total, where):
    found = int(found)
    return {"passed": found == 0, "found": found,
            "detail": f"{found} of {total} forgotten or requested pairs found in {where}"}


def _dataset_keys(dataset, n_items):
    inter = dataset.inter_feat
    users = inter[dataset.uid_field].numpy().astype(np.int64)
    items = inter[dataset.iid_field].numpy().astype(np.int64)
    return users * n_items + items


def _csr_keys(csr, n_items):
    indptr, indices = csr
    users = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return users * n_items + np.asarray(indices, dtype=np.int64)


def _in_id_sets(id_sets, keys, n_items):
    """How many pairs ``keys`` have their item in ``id_sets[user]`` (a per-user container of
    item ids: a sampler's ``used_ids`` or a loader's ``uid2history_item``)."""
    found = 0
    for key in keys.tolist():
        u, i = divmod(key, n_items)
        ids = id_sets[u] if u < len(id_sets) else None
        if ids is None:
            continue
        if isinstance(ids, torch.Tensor):
            ids = set(ids.tolist())
        found += i in ids
    return found


def model_graphs(model):
    """``{name: sparse tensor}``: the model's user-item graphs (see the module docstring)."""
    n = getattr(model, "n_users", 0) + getattr(model, "n_items", 0)
    tensors = dict(model.named_buffers())
    for module_name, module in model.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                tensors[f"{module_name}.{name}" if module_name else name] = value
    return {name: t for name, t in tensors.items()
            if t.layout != torch.strided and tuple(t.shape) == (n, n)}


def _graph_edges(matrix):
    """(rows, cols) of the stored entries with a non-zero value."""
    coo = matrix.to_sparse_coo().coalesce() if matrix.layout != torch.sparse_coo else matrix.coalesce()
    keep = coo.values() != 0
    rows, cols = coo.indices()[:, keep].cpu().numpy().astype(np.int64)
    return rows, cols


def graph_check(model, keys, n_items):
    graphs = model_graphs(model)
    if not graphs:
        return {"passed": True, "found": 0,
                "detail": f"not applicable: {type(model).__name__} has no interaction graph"}
    n_users = model.n_users
    users, items = np.divmod(keys, n_items)
    found, parts = 0, []
    for name, matrix in sorted(graphs.items()):
        rows, cols = _graph_edges(matrix)
        n = matrix.shape[0]
        edges = rows * n + cols
        forward = np.isin(users * n + (n_users + items), edges)     # (u, n_users + i)
        backward = np.isin((n_users + items) * n + users, edges)    # (n_users + i, u)
        hits = int(forward.sum() + backward.sum())
        found += hits
        parts.append(f"{name}: {hits} of {2 * len(keys)} directed edges")
    return {"passed": found == 0, "found": found,
            "detail": f"forgotten edges in the model's graph ({'; '.join(parts)})"}


def deletion_proof(data, model):
    """Named checks that no forgotten pair remains in what ``model`` reads (see module).

    Args:
        data (UnlearnData): the run's retained data and forget set.
        model: the unlearned model (built on ``data.retain_dataset``).

    Returns:
        dict: ``{check: {"passed": bool, "found": int, "detail": str}}``.
    """
    n_items = data.n_items
    keys = forgotten_keys(data.forget, n_items)
    total = len(keys)
    proof = {
        "retained_interactions": _check(np.isin(_dataset_keys(data.retain_dataset, n_items), keys).sum(), total,
                                        "the retained training interactions"),
        "graph": graph_check(model, keys, n_items),
        "negative_sampler": _check(_in_id_sets(data.retain_loader()._sampler.used_ids, keys, n_items), total,
                                   "the retain loader's negative sampler's used ids (they may be sampled as "
                                   "negatives, never as positives)"),
        "train_history": _check(np.isin(_csr_keys(data.train_history(), n_items), keys).sum(), total,
                                "the training history mask"),
        "eval_history": _check(np.isin(_csr_keys(data.eval_history(), n_items), keys).sum(), total,
                               "the evaluation history mask (retained training + validation)"),
    }
    for phase in ("valid", "test", "forget"):
        loader = data.eval_loader(phase)
        proof[f"{phase}_loader_history"] = _check(_in_id_sets(loader.uid2history_item, keys, n_items), total,
                                                  f"the history masked by RecBole's {phase} loader")
    covered = sum(int((~heldout_keep_mask(data.forget, ds)).sum()) for ds in (data.valid_dataset, data.test_dataset))
    proof["heldout_targets"] = {"passed": covered == 0, "found": covered,
                                "detail": f"{covered} validation/test rows of requested users, items or pairs "
                                          f"left as evaluation targets"}
    return proof


def proof_passed(proof):
    return all(check["passed"] for check in proof.values())
