"""MMGCN (Wei et al., "MMGCN: Multi-modal Graph Convolution Network for Personalized
Recommendation of Micro-video", ACM MM 2019).

One graph branch per modality m over the user-item graph of the training interactions.
Layer 0: users hold a learned preference vector P_m[u], items their projected features
W_m f_i^m (both L2-normalised, as in the paper's code). Layer l:

    h_v   = LeakyReLU( mean_{n ∈ N(v)} x_n W_agg )                  (aggregation, eq. 1)
    x̂_v   = LeakyReLU( x_v W_self + b ) + e_v                       (combination input, eq. 5)
    x_v'  = LeakyReLU( [h_v ; x̂_v] W_g + b )       combination=concat (eq. 6)
    x_v'  = LeakyReLU( h_v W_g + x̂_v )             combination=add

with e_v the node's ID embedding (shared by the branches). The representation is the mean of
the branches' last layers and s_ui = r_u · r_i. The mean aggregation is one sparse product with
the row-normalised adjacency per layer (no per-edge message passing), so a training epoch
computes each branch once per batch.

Branches: ``id`` = the ID embedding table; each modality = its preferences, projection and
layers. Deviations from the authors' code: every learnable tensor is an ``nn.Parameter`` (their
``id_embedding`` and ``preference`` were plain tensors that never trained), ``combination`` is a
real choice (their ``concate='False'`` string was always true), features are always projected
to ``latent_dim``.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from recbole.model.init import xavier_normal_initialization

from recbole_tru.losses import l2_reg
from recbole_tru.model.base import MultimodalRecommender


def mean_adjacency(dataset, n_users, n_items):
    """Row-normalised bipartite adjacency D⁻¹A [n_users + n_items]² (sparse CSR) of the
    interactions in ``dataset``; a node without edges has an all-zero row."""
    coo = dataset.inter_matrix(form="coo")
    users = torch.from_numpy(coo.row.astype(np.int64))
    items = torch.from_numpy(coo.col.astype(np.int64)) + n_users
    rows, cols = torch.cat([users, items]), torch.cat([items, users])
    n = n_users + n_items
    key = torch.unique(rows * n + cols)          # duplicate interactions count once
    rows, cols = key // n, key % n
    degree = torch.bincount(rows, minlength=n).float()
    values = 1.0 / degree[rows]
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=True)
    return coo.coalesce().to_sparse_csr()


class _SparseMM(torch.autograd.Function):
    """``A @ x`` for a constant CSR matrix, backward ``Aᵀ @ grad`` with a precomputed CSR
    transpose (CPU CSR products are ~10x faster than COO ones, forward and backward)."""

    @staticmethod
    def forward(ctx, a, a_t, x):
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.a_t @ grad


class GraphBranch(nn.Module):
    """One modality's layers (the modality's own capacity, apart from its preferences)."""

    def __init__(self, feature_dim, latent_dim, dim, n_layers, combination):
        super().__init__()
        self.combination = combination
        self.project = nn.Linear(feature_dim, latent_dim)
        in_dims = [latent_dim] + [dim] * (n_layers - 1)
        self.aggregate = nn.ModuleList(nn.Linear(d, d, bias=False) for d in in_dims)
        self.self_transform = nn.ModuleList(nn.Linear(d, dim) for d in in_dims)
        g_in = (lambda d: d + dim) if combination == "concat" else (lambda d: d)
        self.combine = nn.ModuleList(nn.Linear(g_in(d), dim) for d in in_dims)

    def forward(self, preference, features, id_embedding, adjacency, adjacency_t):
        x = F.normalize(torch.cat([preference, self.project(features)]), dim=-1)
        for agg, self_t, comb in zip(self.aggregate, self.self_transform, self.combine):
            h = F.leaky_relu(_SparseMM.apply(adjacency, adjacency_t, agg(x)))
            x_hat = F.leaky_relu(self_t(x)) + id_embedding
            if self.combination == "concat":
                x = F.leaky_relu(comb(torch.cat([h, x_hat], dim=-1)))
            else:
                x = F.leaky_relu(comb(h) + x_hat)
        return x


class MMGCN(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim, latent = config["embedding_size"], config["latent_dim"]
        combination = config["combination"]
        if combination not in ("concat", "add"):
            raise ValueError(f"config key 'combination' must be 'concat' or 'add', got {combination!r}")
        if config["n_layers"] < 1:
            raise ValueError(f"config key 'n_layers' must be >= 1, got {config['n_layers']}")
        self.id_embedding = nn.Embedding(self.n_users + self.n_items, dim)
        self.preference = nn.ModuleDict({m: nn.Embedding(self.n_users, latent) for m in self.modalities})
        self.branch = nn.ModuleDict({
            m: GraphBranch(self.feature(m).shape[1], latent, dim, config["n_layers"], combination)
            for m in self.modalities})
        adjacency = mean_adjacency(dataset, self.n_users, self.n_items)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.register_buffer("adjacency_t", adjacency.t().to_sparse_csr(), persistent=False)
        self.apply(xavier_normal_initialization)

    def branches(self):
        branches = {"id": ["id_embedding.weight"]}
        for m in self.modalities:
            names = [f"preference.{m}.weight"]
            names += [f"branch.{m}.{n}" for n, _ in self.branch[m].named_parameters()]
            branches[m] = names
        return branches

    def user_tables(self):
        return [("id_embedding.weight", 0)] + [(f"preference.{m}.weight", 0) for m in self.modalities]

    def item_id_tables(self):
        return [("id_embedding.weight", self.n_users)]

    def forward(self):
        """User [n_users, d] and item [n_items, d] representations."""
        out = sum(self.branch[m](self.preference[m].weight, self.feature(m), self.id_embedding.weight,
                                 self.adjacency, self.adjacency_t) for m in self.modalities) / len(self.modalities)
        return out[: self.n_users], out[self.n_users:]

    def pair_scores(self, users, *item_sets):
        user_repr, item_repr = self.forward()
        u = user_repr[users]
        return tuple((u * item_repr[items]).sum(-1) for items in item_sets)

    def reg_loss(self, users, *item_sets):
        rows = [self.id_embedding(users)] + [self.preference[m](users) for m in self.modalities]
        rows += [self.id_embedding(items + self.n_users) for items in item_sets]
        return l2_reg(*rows)

    def full_sort_predict(self, interaction):
        user_repr, item_repr = self.cached(self.forward)
        return (user_repr[interaction[self.USER_ID]] @ item_repr.T).view(-1)
