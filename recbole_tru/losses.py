"""Pairwise ranking losses, as pure functions of score tensors.

All take ``pos`` = s_ui and ``neg`` = s_uj, float tensors of shape [B].
"""
import torch.nn.functional as F


def _mean(values, weight=None):
    if weight is None:
        return values.mean()
    return (weight * values).sum() / values.numel()


def bpr_loss(pos, neg, weight=None):
    """BPR (Rendle et al., UAI 2009): ``mean(-log σ(s_ui - s_uj))``; lowering it raises s_ui."""
    return _mean(-F.logsigmoid(pos - neg), weight)


def reverse_bpr_loss(pos, neg, weight=None):
    """Reverse BPR (MMRecUn-style unlearning): ``mean(w · -log σ(s_uj - s_ui))``.

    The positive and the sampled negative are swapped, so minimising it LOWERS s_ui (and
    raises s_uj). ``weight`` [B] scales pairs (TRU's gate); the mean is over all B pairs, so a
    gate of 0 removes a pair's push without re-weighting the others.
    """
    return _mean(-F.logsigmoid(neg - pos), weight)


def gated_forget_loss(pos, neg, gate):
    """TRU's forget loss under a two-sided gate: pairs with ``gate > 0`` are pushed down with
    the reverse BPR loss, pairs with ``gate < 0`` (below their target) pulled back up with BPR,
    each weighted by ``|gate|``; with ``gate >= 0`` everywhere it is :func:`reverse_bpr_loss`."""
    down = reverse_bpr_loss(pos, neg, weight=gate.clamp(min=0))
    if not (gate < 0).any():
        return down
    return down + bpr_loss(pos, neg, weight=(-gate).clamp(min=0))


def l2_reg(*tensors):
    """``Σ_t ||t||² / 2``, averaged over the batch (first) dimension of the first tensor."""
    batch = tensors[0].shape[0] if tensors[0].dim() else 1
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)


def gradient_ascent_loss(pos, neg):
    """Negated BPR: minimising it ascends the BPR loss on the given pairs."""
    return -bpr_loss(pos, neg)
