"""The contract every multimodal backbone of the plugin follows.

A backbone is a RecBole ``GeneralRecommender`` with pairwise (BPR) input. On top of
``calculate_loss`` / ``predict`` / ``full_sort_predict`` it declares where its capacity
lives, which the unlearning methods need:

* :meth:`branches` -- ``{branch: [parameter names]}``: ``id`` plus one branch per modality;
* :meth:`user_tables` -- the parameters whose row ``offset + u`` belongs to user ``u``;
* :meth:`item_id_tables` -- the ID-branch parameters whose row ``offset + i`` belongs to item ``i``
  (content branches are not owned by an item's interactions);
* :meth:`pair_scores` -- scores of several aligned (user, item) sets from ONE forward pass;
* optionally ``score_items(users, items)`` -- scores [users, items] against a subset of the
  catalogue without scoring all of it (TRU's sampled rank checks; without it they take the
  columns of :meth:`full_sort_predict`, see ``recbole_tru.model.ranking``).

Item features are non-persistent buffers (``feat_<modality>``): they come from the data set's
feature files, so checkpoints hold parameters only.
"""
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_tru.losses import bpr_loss


def memoise(owner, slot, tensors, compute):
    """``compute()``, kept in ``owner.<slot>`` while none of ``tensors`` changes: the key is
    each tensor's storage, shape and in-place version counter, which optimizer steps,
    in-place edits and ``load_state_dict`` advance, so a stale value is never served.
    The cache holds the tensors themselves, so none of them can be freed and its storage reused
    by a different tensor under the same key while the value is kept."""
    key = tuple((t.data_ptr(), tuple(t.shape), t._version) for t in tensors)
    cache = getattr(owner, slot, None)
    if cache is None or cache[0] != key:
        cache = (key, compute(), list(tensors))
        setattr(owner, slot, cache)
    return cache[1]


class MultimodalRecommender(GeneralRecommender):
    input_type = InputType.PAIRWISE
    # True where the user/item tables are read whole (a graph propagation): their gradients are
    # dense anyway, and row-sparse lookups (TRU's tru_sparse_grad) would only add a dense + sparse sum.
    tables_read_whole = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        features = getattr(dataset, "item_features", None)
        if not features:
            raise ValueError(
                f"{type(self).__name__} needs item features: set config key 'modalities' "
                f"(modality -> feature-file suffix) for data set '{config['dataset']}'.")
        self.modalities = tuple(features)
        for name, matrix in features.items():
            if matrix.shape[0] != self.n_items:
                raise ValueError(f"modality '{name}': {matrix.shape[0]} feature rows for {self.n_items} items")
            self.register_buffer(f"feat_{name}", matrix.float(), persistent=False)
        self.reg_weight = config["reg_weight"]

    def feature(self, modality):
        """Item features of ``modality``: FloatTensor [n_items, dim] (row 0 = padding)."""
        return getattr(self, f"feat_{modality}")

    # --- capacity declaration -------------------------------------------------------------
    def branches(self):
        raise NotImplementedError

    def user_tables(self):
        """``[(parameter name, row offset)]``: row ``offset + u`` of each belongs to user u."""
        raise NotImplementedError

    def item_id_tables(self):
        """``[(parameter name, row offset)]``: ID-branch rows of item i."""
        raise NotImplementedError

    # --- scoring --------------------------------------------------------------------------
    def partner_sides(self, users, items):
        """For each factor table whose rows meet another side's vectors in a dot product, those
        vectors: ``{parameter name: [rows, width]}`` for the given ``users`` / ``items`` (id
        tensors). TRU's ``tru_push_project`` removes the top directions of each from the push on
        the table. Empty by default: a backbone that propagates its tables (MMGCN) has no fixed
        partner, and the option then changes nothing."""
        return {}

    def linear_user_side(self, items):
        """Where a score is linear in the user's rows, ``s_ui = z_i · x_u + b_i``: ``(Z, b,
        layout)`` for the given ``items`` (an id tensor): ``Z`` [len(items), width], ``b``
        [len(items)] and ``layout``, the user tables ``[(parameter name, columns)]`` whose rows,
        concatenated in that order, are ``x_u``. TRU's ``tru_solve: rows`` re-solves the partially
        deleted users' rows in closed form from it. None by default: a backbone that propagates
        its tables (MMGCN) has no such form, and the option then changes nothing."""
        return None

    def pair_scores(self, users, *item_sets):
        """Scores s_ui for ``users`` [B] against each LongTensor [B] in ``item_sets``."""
        raise NotImplementedError

    def reg_loss(self, users, *item_sets):
        """L2 penalty on the batch's rows (the paper's λ||Θ||², applied per mini-batch)."""
        raise NotImplementedError

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        pos_score, neg_score = self.pair_scores(users, pos, neg)
        return bpr_loss(pos_score, neg_score) + self.reg_weight * self.reg_loss(users, pos, neg)

    def predict(self, interaction):
        (score,) = self.pair_scores(interaction[self.USER_ID], interaction[self.ITEM_ID])
        return score

    def cached(self, compute):
        """``compute()``, memoised while no parameter changes, in evaluation only.

        The key is the parameters' in-place version counters, which optimizer steps and
        ``load_state_dict`` advance, so the cache can never serve stale parameters."""
        if self.training or torch.is_grad_enabled():
            return compute()
        return memoise(self, "_eval_cache", list(self.parameters()), compute)
