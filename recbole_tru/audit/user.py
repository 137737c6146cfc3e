"""User-level membership inference, after Zhang et al., "Membership Inference Attacks Against
Recommender Systems" (CCS 2021): were this user's interactions in the training data?

The attacker sees a user's history ``H(u)`` and the model's top-``k`` recommendations ``R(u)``
(history masked). Items are vectors ``v_j`` from a factorisation of the interactions: here the
truncated SVD ``A ≈ U Σ Vᵀ`` of the retained training matrix (``k = audit_svd_dim``), with
``v_j = Σ^{1/2} V_j``. A user is the difference of centroids (their Eq. 1)::

    x_u = mean_{j ∈ H(u)} v_j  -  mean_{j ∈ R(u)} v_j        [audit_svd_dim]

A model fitted to ``u`` recommends items like ``u``'s history, so ``x_u`` is small and typed; a
model that never saw ``u`` recommends from its user-independent prior. The attack classifier is
trained on a shadow recommender (:mod:`recbole_tru.audit.shadow`): shadow-in users = members
(label 1), shadow-out users = non-members (label 0), histories = their retained training items.
It is evaluated on the audited model: deleted users (history = their deleted training items)
vs never-seen users, held out before any model is trained (:func:`recbole_tru.data.split.hold_out_users`).

Deviations: the item vectors come from a truncated SVD (the paper factorises the interaction
matrix too, by MF), and ``‖x_u‖`` is appended to ``x_u`` as one more feature, which lets the
logistic classifier (default; ``audit_user_classifier: mlp`` for the paper's MLP) use the
distance as well as its direction.
"""
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recbole_tru.audit.attacks import ThresholdAttack, make_attack
from recbole_tru.data.split import csr
from recbole_tru.model.ranking import topk_lists


def item_vectors(users, items, n_users, n_items, dim, rng):
    """Item vectors ``Σ^{1/2} V`` [n_items, dim'] of the truncated SVD of the binary
    interaction matrix (seeded start vector; ``dim' = min(dim, min(shape) - 1)``)."""
    matrix = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    k = int(min(dim, min(matrix.shape) - 1))
    v0 = rng.uniform(-1, 1, size=min(matrix.shape))
    _, s, vt = svds(matrix, k=k, v0=v0)
    order = np.argsort(-s)
    return (vt[order].T * np.sqrt(s[order])).astype(np.float64)


def user_features(model, users, history, vectors, k, chunk=512):
    """``{v0..v{d-1}: centroid differences, norm: ‖x_u‖}`` for ``users`` under ``model``
    (top-``k`` recommendations with the user's ``history`` masked)."""
    users = np.asarray(users, np.int64)
    indptr, indices = history
    recs = topk_lists(model, users, history, k, chunk)                # [n, k]
    rec_centroid = vectors[recs].mean(1)
    hist_centroid = np.zeros((len(users), vectors.shape[1]))
    for n, u in enumerate(users):
        mine = indices[indptr[u]:indptr[u + 1]]
        if len(mine):
            hist_centroid[n] = vectors[mine].mean(0)
    diff = hist_centroid - rec_centroid
    out = {f"v{j}": diff[:, j] for j in range(diff.shape[1])}
    out["norm"] = np.linalg.norm(diff, axis=1)
    return out


class UserAudit:
    """Zhang et al.'s attack: classifier fitted once on the shadow, :meth:`run` per model."""

    def __init__(self, config, data, shadow, held_out, rng, seed):
        self.k = int(config["audit_user_topk"])
        self.vectors = item_vectors(data.retain_users, data.retain_items, data.n_users, data.n_items,
                                    int(config["audit_svd_dim"]), rng)
        self.columns = [f"v{j}" for j in range(self.vectors.shape[1])] + ["norm"]
        history = data.train_history()
        gone = data.forget.deleted_users             # the request's users are no labelled example
        members = user_features(shadow.model, np.setdiff1d(shadow.in_users, gone), history, self.vectors, self.k)
        nonmembers = user_features(shadow.model, np.setdiff1d(shadow.out_users, gone), history, self.vectors, self.k)
        kind = config["audit_user_classifier"]
        if kind not in ("logistic", "mlp"):
            raise ValueError(f"config key 'audit_user_classifier' must be logistic or mlp, got {kind!r}")
        self.attack = make_attack(kind, columns=self.columns, seed=seed).fit(members, nonmembers)
        self.distance = ThresholdAttack("norm", sign=-1).fit(members, nonmembers)
        self.shadow_fit_auc = self.attack.report(members, nonmembers)
        forget = data.forget
        deleted = np.isin(forget.users, forget.deleted_users)
        self.deleted = np.unique(forget.users[deleted])
        self.deleted_history = csr(forget.users[deleted], forget.items[deleted], data.n_users)
        self.never = held_out.users
        self.never_history = held_out.history(data.n_users)
        if not len(self.deleted) or not len(self.never):
            raise ValueError("the user-level audit needs deleted users and held-out (never-seen) users")

    def run(self, model):
        """``(AUC of the shadow-trained classifier, {attack: AUC})``: deleted vs never-seen users."""
        members = user_features(model, self.deleted, self.deleted_history, self.vectors, self.k)
        nonmembers = user_features(model, self.never, self.never_history, self.vectors, self.k)
        out = {"shadow": self.attack.report(members, nonmembers),
               "distance": self.distance.report(members, nonmembers)}
        return out["shadow"], out
