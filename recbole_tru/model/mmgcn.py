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
from recbole_tru.model.base import MultimodalRecommender, memoise


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


class PropagationPlan:
    """The nodes each layer must compute so that the last layer is exact on ``targets``.

    ``nodes[L]`` = the targets; ``nodes[l - 1]`` = ``nodes[l]`` and their neighbours (a layer
    reads its own node's previous row and its neighbours'); ``nodes[0]`` is the L-hop
    neighbourhood. ``matrices[l]`` = (``A[nodes[l + 1], nodes[l]]`` as CSR, its transpose, the
    positions of ``nodes[l + 1]`` within ``nodes[l]``). Each row keeps the full adjacency's
    entries in the same order, so the restricted products are those of the full one.

    ``cost`` counts dense row operations relative to the full propagation (1.0 = as many):
    layer l multiplies ``W_agg`` on ``nodes[l - 1]`` and ``W_self``, ``W_g`` (~3x as wide) on
    ``nodes[l]``. With ``max_cost`` the plan stops early (``complete`` False) once it cannot
    beat it, and a batch with more than ``max_targets`` nodes is not planned at all.
    """

    def __init__(self, graph, targets, max_cost=None, max_targets=None):
        crow, col, values = graph
        n, n_layers = len(crow) - 1, graph.n_layers
        self.nodes = [np.unique(np.asarray(targets, dtype=np.int64))]
        self.complete = False
        self.cost = None
        if max_targets is not None and len(self.nodes[0]) > max_targets:
            return
        full = 4.0 * n_layers * n
        rows = 3.0 * len(self.nodes[0])
        while len(self.nodes) <= n_layers:
            upper = self.nodes[0]
            mask = np.zeros(n, dtype=bool)
            mask[upper] = True
            mask[_gather(col, crow[upper], crow[upper + 1] - crow[upper])] = True
            wider = np.flatnonzero(mask)
            rows += len(wider) + (3.0 * len(wider) if len(self.nodes) < n_layers else 0.0)
            if max_cost is not None and rows > max_cost * full:
                return                           # about as costly as the full graph
            self.nodes.insert(0, wider)
        self.cost = rows / full
        self.complete = True
        self.matrices = []
        for lower, upper in zip(self.nodes[:-1], self.nodes[1:]):
            local = np.full(n, -1, dtype=np.int64)
            local[lower] = np.arange(len(lower))
            starts, counts = crow[upper], crow[upper + 1] - crow[upper]
            index = _gather(np.arange(len(col)), starts, counts)
            indptr = np.zeros(len(upper) + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
            a = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(local[col[index]]),
                                        torch.from_numpy(values[index]), (len(upper), len(lower)),
                                        check_invariants=False)
            self.matrices.append((a, a.t().to_sparse_csr(), torch.from_numpy(np.searchsorted(lower, upper))))
        self.nodes = [torch.from_numpy(x) for x in self.nodes]


def _gather(array, starts, counts):
    """``concatenate([array[s:s + c] for s, c in zip(starts, counts)])`` without the loop."""
    total = int(counts.sum())
    if total == 0:
        return array[:0]
    first = np.cumsum(counts) - counts
    return array[np.repeat(starts - first, counts) + np.arange(total)]


class _Graph(tuple):
    """The adjacency as numpy CSR arrays ``(crow, col, values)`` for planning, plus ``n_layers``."""

    def __new__(cls, adjacency, n_layers):
        self = super().__new__(cls, (adjacency.crow_indices().numpy().astype(np.int64),
                                     adjacency.col_indices().numpy().astype(np.int64),
                                     adjacency.values().numpy()))
        self.n_layers = n_layers
        self.source = adjacency
        return self


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

    def item_inputs(self, features):
        """Layer-0 item rows ``normalize(W_m f_i)`` [n_items, latent_dim]. When no gradient can
        reach the projection (it is frozen, or gradients are off) the result is memoised under
        the projection's in-place version counters: a frozen 4096-d projection is not recomputed
        at every step (TRU freezes it), and an optimizer step or ``load_state_dict`` refreshes it."""
        params = list(self.project.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return F.normalize(self.project(features), dim=-1)

        def compute():
            with torch.no_grad():
                return F.normalize(self.project(features), dim=-1)

        return memoise(self, "_item_input_cache", [features, *params], compute)

    def layer(self, k, h, x_self, id_rows):
        """Layer k's output (eqs. 5-6) from the aggregated neighbours ``h`` = LeakyReLU(mean
        x_n W_agg), the nodes' own previous rows ``x_self`` and their ID rows."""
        x_hat = F.leaky_relu(self.self_transform[k](x_self)) + id_rows
        if self.combination == "concat":
            return F.leaky_relu(self.combine[k](torch.cat([h, x_hat], dim=-1)))
        return F.leaky_relu(self.combine[k](h) + x_hat)

    def forward(self, preference, features, id_embedding, adjacency, adjacency_t):
        # normalising users and items apart equals normalising their concatenation (row-wise)
        x = torch.cat([F.normalize(preference, dim=-1), self.item_inputs(features)])
        for k, agg in enumerate(self.aggregate):
            h = F.leaky_relu(_SparseMM.apply(adjacency, adjacency_t, agg(x)))
            x = self.layer(k, h, x, id_embedding)
        return x

    def forward_nodes(self, preference, features, id_embedding, plan):
        """The last layer's rows of ``plan.nodes[-1]`` only (same values as ``forward()``'s),
        computing layer l only on the nodes the next layer reads (see :class:`PropagationPlan`)."""
        n_users = preference.shape[0]
        first = plan.nodes[0]
        users, items = first[first < n_users], first[first >= n_users] - n_users
        x = torch.cat([F.normalize(preference[users], dim=-1), self.item_inputs(features)[items]])
        for k, agg in enumerate(self.aggregate):
            a, a_t, own = plan.matrices[k]
            h = F.leaky_relu(_SparseMM.apply(a, a_t, agg(x)))
            x = self.layer(k, h, x[own], id_embedding[plan.nodes[k + 1]])
        return x


class MMGCN(MultimodalRecommender):
    # Propagate only a batch's L-hop neighbourhood when that costs at most RESTRICT_COST of the
    # full propagation (see PropagationPlan.cost) and the batch has at most RESTRICT_TARGETS x
    # (n_users + n_items) distinct nodes (larger batches, e.g. training batches at the field's
    # sizes, reach most of the graph: they are not even planned).
    RESTRICT_COST = 0.6
    RESTRICT_TARGETS = 0.1
    # Its tables are read whole by the propagation, so their gradients are dense whatever the lookups
    # (TRU's ``tru_sparse_grad`` leaves them as they are: see base.MultimodalRecommender).
    tables_read_whole = True

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
        self._graph = None               # numpy view of the adjacency, for restricted propagation
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

    def forward_nodes(self, nodes):
        """Representations [len(unique nodes), d] of graph nodes (user u = u, item i =
        n_users + i; sorted, unique), or None when their L-hop neighbourhood is so large that
        the full propagation is as cheap (then call :meth:`forward`). Equal to the rows of
        :meth:`forward` (same operations on the same rows)."""
        if self.device.type != "cpu" or self.adjacency.device.type != "cpu":
            return None
        if self._graph is None or self._graph.source is not self.adjacency:
            self._graph = _Graph(self.adjacency, len(self.branch[self.modalities[0]].aggregate))
        n = self.n_users + self.n_items
        plan = PropagationPlan(self._graph, nodes, max_cost=self.RESTRICT_COST,
                               max_targets=self.RESTRICT_TARGETS * n)
        if not plan.complete:
            return None
        out = sum(self.branch[m].forward_nodes(self.preference[m].weight, self.feature(m), self.id_embedding.weight, plan)
                  for m in self.modalities) / len(self.modalities)
        return plan.nodes[-1], out

    def _rows(self, users, *item_sets):
        """Propagated representations of ``users`` and of each LongTensor in ``item_sets``. Only
        their L-hop neighbourhood is propagated when that is cheaper (``RESTRICT_COST``; small
        batches, e.g. TRU's targeted steps and rank checks); the full graph otherwise (training
        batches at the field's sizes touch most of it; memoised in evaluation)."""
        nodes = torch.cat([users] + [items + self.n_users for items in item_sets])
        restricted = self.forward_nodes(nodes.cpu().numpy())
        # rows are gathered with F.embedding: its backward accumulates repeated rows in a fixed
        # order, while indexing's backward (index_put_ with accumulate) sums them in a
        # thread-dependent order on CPU, which made MMGCN's training differ from run to run
        if restricted is None:
            user_repr, item_repr = self.cached(self.forward)
            return F.embedding(users, user_repr), [F.embedding(items, item_repr) for items in item_sets]
        index, out = restricted
        row = lambda ids: F.embedding(torch.searchsorted(index.to(ids.device), ids), out)
        return row(users), [row(items + self.n_users) for items in item_sets]

    def pair_scores(self, users, *item_sets):
        """Scores s_ui (see :meth:`_rows` for which part of the graph is propagated)."""
        u, item_rows = self._rows(users, *item_sets)
        return tuple((u * rows).sum(-1) for rows in item_rows)

    def reg_loss(self, users, *item_sets):
        rows = [self.id_embedding(users)] + [self.preference[m](users) for m in self.modalities]
        rows += [self.id_embedding(items + self.n_users) for items in item_sets]
        return l2_reg(*rows)

    def score_items(self, users, items):
        """Scores [len(users), len(items)] (see :meth:`_rows`)."""
        u, (rows,) = self._rows(users, items)
        return u @ rows.T

    def full_sort_predict(self, interaction):
        user_repr, item_repr = self.cached(self.forward)
        return (user_repr[interaction[self.USER_ID]] @ item_repr.T).view(-1)
