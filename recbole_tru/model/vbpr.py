"""VBPR (He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback",
AAAI 2016), generalised to any number of content modalities.

Score (paper eq. 2, one term per modality m)::

    s_ui = β_i + γ_u·γ_i + Σ_m θ_u^m·(E_m f_i^m) + Σ_m β'_m·f_i^m

* ``item_bias`` β_i [n_items, 1], ``user_embedding`` γ_u and ``item_embedding`` γ_i [·, K];
* per modality: ``theta[m]`` θ_u^m [n_users, K'], ``projection[m]`` E_m [F_m -> K'],
  ``feature_bias[m]`` β'_m [F_m -> 1] (the paper's "visual bias" term);
* features f_i^m are fixed buffers. Each modality is its own branch; ``id`` holds γ and β.

Deviation: the paper's global offset α and user bias β_u are dropped (they cancel in BPR's
s_ui - s_uj). Regularisation is L2 on the rows of the batch (``reg_weight``): γ_u, θ_u^m, γ_i,
β_i and, with ``reg_content`` (default), the batch items' content vectors E_m f_i^m, which is how
the paper's λ_E‖E‖² and MMRec's VBPR reach the projection per mini-batch. Without it the content
pathway is unpenalised: on ml-100k-mm that cost 0.04 test NDCG@20 at equal settings (0.2875 vs
0.3266, docs/backbones.md). β'_m is not penalised (Adam's ``weight_decay`` can add it).
"""
import torch
import torch.nn.functional as F
from torch import nn
from recbole.model.init import xavier_normal_initialization

from recbole_tru.losses import bpr_loss, l2_reg
from recbole_tru.model.base import MultimodalRecommender, memoise


class VBPR(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        k, k_content = config["embedding_size"], config["content_embedding_size"]
        self.reg_content = bool(config["reg_content"])
        self.user_embedding = nn.Embedding(self.n_users, k)
        self.item_embedding = nn.Embedding(self.n_items, k)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.theta = nn.ModuleDict({m: nn.Embedding(self.n_users, k_content) for m in self.modalities})
        self.projection = nn.ModuleDict(
            {m: nn.Linear(self.feature(m).shape[1], k_content, bias=False) for m in self.modalities})
        self.feature_bias = nn.ModuleDict(
            {m: nn.Linear(self.feature(m).shape[1], 1, bias=False) for m in self.modalities})
        self.apply(xavier_normal_initialization)
        nn.init.zeros_(self.item_bias.weight)
        for m in self.modalities:
            nn.init.zeros_(self.feature_bias[m].weight)

    def branches(self):
        branches = {"id": ["user_embedding.weight", "item_embedding.weight", "item_bias.weight"]}
        for m in self.modalities:
            branches[m] = [f"theta.{m}.weight", f"projection.{m}.weight", f"feature_bias.{m}.weight"]
        return branches

    def user_tables(self):
        return [("user_embedding.weight", 0)] + [(f"theta.{m}.weight", 0) for m in self.modalities]

    def item_id_tables(self):
        return [("item_embedding.weight", 0), ("item_bias.weight", 0)]

    def partner_sides(self, users, items):
        """γ_u meets the items' γ_i, θ_u^m the items' projected content E_m f_i^m, and an item's
        γ_i the users' γ_u (the one-column β_i meets a constant: none)."""
        vectors, _ = self._content(items)
        sides = {"user_embedding.weight": self.item_embedding(items),
                 "item_embedding.weight": self.user_embedding(users)}
        sides.update({f"theta.{m}.weight": v for m, v in zip(self.modalities, vectors)})
        return sides

    def linear_user_side(self, items):
        """``s_ui = [γ_i, E_m f_i^m] · [γ_u, θ_u^m] + β_i + Σ_m β'_m·f_i^m`` (:meth:`_item_side`)."""
        z, b = self._item_side(items)
        layout = [("user_embedding.weight", self.user_embedding.weight.shape[1])]
        layout += [(f"theta.{m}.weight", self.theta[m].weight.shape[1]) for m in self.modalities]
        return z, b, layout

    def _content(self, items=None):
        """The content part of ``items`` (all items when None): the modalities' ``E_m f_i^m``
        (a list, one [·, K'] tensor per modality) and ``Σ_m β'_m·f_i^m`` (0 without modalities)."""
        vectors, offset = [], 0
        for m in self.modalities:
            f = self.feature(m) if items is None else F.embedding(items, self.feature(m))
            vectors.append(self.projection[m](f))
            offset = offset + self.feature_bias[m](f).squeeze(-1)
        return vectors, offset

    def _item_side(self, items, content=None):
        """Item vector [·, K + M·K'] (γ_i and E_m f_i^m stacked) and item offset [·]
        (β_i + Σ_m β'_m·f_i^m) for ``items``; ``content``: their :meth:`_content`, if known."""
        vectors, offset = self._content(items) if content is None else content
        return torch.cat([self.item_embedding(items)] + vectors, dim=-1), self.item_bias(items).squeeze(-1) + offset

    def _memoised_content(self, slot, compute, *keys):
        """``compute()`` (content of some items), memoised in ``slot`` in evaluation while no
        content-side tensor (nor any of ``keys``) changes; computed afresh in training."""
        if self.training or torch.is_grad_enabled():
            return compute()
        tensors = list(keys)
        for m in self.modalities:
            tensors += [self.projection[m].weight, self.feature_bias[m].weight, self.feature(m)]
        return memoise(self, slot, tensors, compute)

    def _user_side(self, users):
        return torch.cat([self.user_embedding(users)] + [self.theta[m](users) for m in self.modalities], dim=-1)

    def _distinct_content(self, item_sets):
        """The batch's distinct items, where each item of ``item_sets`` sits among them, and
        their :meth:`_content`: the projection runs once per distinct item."""
        distinct, where = torch.unique(torch.cat(item_sets), return_inverse=True)
        return distinct, where.split(len(item_sets[0])), self._frozen_content(distinct)

    def _frozen_content(self, items):
        """:meth:`_content` of ``items``. While the content side is frozen (no projection or
        feature bias takes a gradient: TRU's targeted update and repair move user and item ID
        rows only), each item's content is projected once and kept, so a step projects only
        the items no earlier step met (a batch's 4096-d projections, on every step before);
        the store is dropped when any content-side tensor changes (:func:`memoise`'s key)."""
        params = [p for m in self.modalities for p in (self.projection[m].weight, self.feature_bias[m].weight)]
        if not self.modalities or any(p.requires_grad for p in params):
            return self._content(items)

        def empty():
            widths = [self.projection[m].weight.shape[0] for m in self.modalities]
            device = params[0].device
            return {"done": torch.zeros(self.n_items, dtype=torch.bool, device=device),
                    "vectors": [torch.zeros(self.n_items, w, device=device) for w in widths],
                    "offset": torch.zeros(self.n_items, device=device)}

        store = memoise(self, "_row_content_cache", params + [self.feature(m) for m in self.modalities], empty)
        missing = items[~store["done"][items]]
        if len(missing):
            with torch.no_grad():
                vectors, offset = self._content(missing)
            for kept, v in zip(store["vectors"], vectors):
                kept[missing] = v
            store["offset"][missing] = offset
            store["done"][missing] = True
        return [kept[items] for kept in store["vectors"]], store["offset"][items]

    def _batch_tables(self, users, distinct, content):
        """Each parameter table looked up once for a batch: ``(user_ext, table, user_vec, gamma,
        beta)``, where a score is ``user_ext[j] . table[d]`` = [user vector, 1] . [item vector,
        item offset] for the distinct item d (gathering whole rows: slicing gathered rows would
        make backward zero-fill a copy of them)."""
        vectors, content_offset = content
        gamma, beta = self.item_embedding(distinct), self.item_bias(distinct).squeeze(-1)
        user_vec = self._user_side(users)
        user_ext = torch.cat([user_vec, user_vec.new_ones(len(users), 1)], dim=-1)
        table = torch.cat([gamma] + vectors + [(beta + content_offset).unsqueeze(-1)], dim=-1)
        return user_ext, table, user_vec, gamma, beta

    def pair_scores(self, users, *item_sets):
        distinct, where, content = self._distinct_content(item_sets)
        user_ext, table = self._batch_tables(users, distinct, content)[:2]
        return tuple((user_ext * F.embedding(w, table)).sum(-1) for w in where)

    def reg_loss(self, users, *item_sets):
        """The L2 penalty row by row (the definition :meth:`calculate_loss` computes faster)."""
        rows = [self.user_embedding(users)] + [self.theta[m](users) for m in self.modalities]
        for items in item_sets:
            rows += [self.item_embedding(items), self.item_bias(items)]
            if self.reg_content:
                rows += self._content(items)[0]
        return l2_reg(*rows)

    def calculate_loss(self, interaction):
        """BPR + ``reg_weight`` x :meth:`reg_loss`, each parameter table looked up once per batch:
        the batch's distinct items are projected and gathered once, and the penalty of an item
        row is its squared norm times the number of times the item occurs in the batch (the same
        sum as :meth:`reg_loss` row by row; dense embedding backward passes are the training
        epoch's main cost on CPU, one per lookup)."""
        users = interaction[self.USER_ID]
        distinct, where, content = self._distinct_content((interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]))
        user_ext, table, user_vec, gamma, beta = self._batch_tables(users, distinct, content)
        # BPR needs s_ui - s_uj only: one product with the difference of the two gathered rows
        margin = (user_ext * (F.embedding(where[0], table) - F.embedding(where[1], table))).sum(-1)
        row_sq = gamma.pow(2).sum(-1) + beta.pow(2)
        if self.reg_content:
            row_sq = row_sq + sum(v.pow(2).sum(-1) for v in content[0])
        counts = torch.bincount(torch.cat(where), minlength=len(distinct)).to(row_sq.dtype)
        penalty = (user_vec.pow(2).sum() + (counts * row_sq).sum()) / (2 * users.shape[0])
        return bpr_loss(margin, torch.zeros_like(margin)) + self.reg_weight * penalty

    def _content_side(self):
        """The catalogue's content part: ``E_m f_i^m`` stacked [n_items, M·K'] (None without
        modalities) and ``Σ_m β'_m·f_i^m``. In evaluation it is memoised while no content-side
        tensor changes: the 4096-d projections are the costly part of a full sort, and TRU's
        steps move user rows and item ID rows, not projections."""
        def compute():
            vectors, offset = self._content()
            return (torch.cat(vectors, dim=-1) if vectors else None), offset

        return self._memoised_content("_content_cache", compute)

    def score_items(self, users, items):
        """Scores [len(users), len(items)]: only the content of ``items`` is projected, memoised
        for the ``items`` tensor in evaluation (TRU's rank checks score the same item sample at
        every check)."""
        content = self._memoised_content("_sample_content_cache", lambda: self._content(items), items)
        item_vec, offset = self._item_side(items, content)
        return self._user_side(users) @ item_vec.T + offset

    def full_sort_predict(self, interaction):
        users = interaction[self.USER_ID]
        content, content_offset = self._content_side()
        k = self.item_embedding.weight.shape[1]
        user_vec = self._user_side(users)
        scores = user_vec[:, :k] @ self.item_embedding.weight.T + self.item_bias.weight.squeeze(-1) + content_offset
        if content is not None:
            scores = scores + user_vec[:, k:] @ content.T
        return scores.view(-1)
