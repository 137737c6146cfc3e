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
        return distinct, where.split(len(item_sets[0])), self._content(distinct)

    def _scores(self, users, distinct, where, content):
        item_vec, offset = self._item_side(distinct, content)
        user_vec = self._user_side(users)
        table = torch.cat([item_vec, offset.unsqueeze(-1)], dim=-1)   # embedding() gathers fastest
        scores = []
        for w in where:
            rows = F.embedding(w, table)
            scores.append((user_vec * rows[:, :-1]).sum(-1) + rows[:, -1])
        return tuple(scores)

    def pair_scores(self, users, *item_sets):
        return self._scores(users, *self._distinct_content(item_sets))

    def _reg(self, users, item_sets, content_rows):
        """The penalty of :meth:`reg_loss`; ``content_rows(k)``: the content vectors of
        ``item_sets[k]`` (one tensor per modality)."""
        rows = [self.user_embedding(users)] + [self.theta[m](users) for m in self.modalities]
        for k, items in enumerate(item_sets):
            rows += [self.item_embedding(items), self.item_bias(items)]
            if self.reg_content:
                rows += content_rows(k)
        return l2_reg(*rows)

    def reg_loss(self, users, *item_sets):
        return self._reg(users, item_sets, lambda k: self._content(item_sets[k])[0])

    def calculate_loss(self, interaction):
        """BPR + ``reg_weight`` x :meth:`reg_loss`, the batch's content projected once and
        shared by the scores and the penalty (the penalty gathers its rows)."""
        users = interaction[self.USER_ID]
        item_sets = (interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID])
        distinct, where, content = self._distinct_content(item_sets)
        pos_score, neg_score = self._scores(users, distinct, where, content)
        penalty = self._reg(users, item_sets, lambda k: [F.embedding(where[k], v) for v in content[0]])
        return bpr_loss(pos_score, neg_score) + self.reg_weight * penalty

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
