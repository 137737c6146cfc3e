"""``reverse``: the uniform reverse update (MMRecUn-style, Sinha et al., AAAI 2025)."""
from recbole_tru.losses import reverse_bpr_loss
from recbole_tru.unlearn.base import ForgetRetainTrainer


class ReverseTrainer(ForgetRetainTrainer):
    """Reverse BPR on the forget set (``-log σ(s_uj - s_ui)``, which LOWERS s_ui) plus BPR on
    retained data, over all parameters, for ``reverse_epochs`` epochs.

    The stop is the fixed epoch count: the method has no no-oracle way to choose it, which is
    exactly its weakness (see the README's trade-off curves)."""

    name = "reverse"
    forget_loss = staticmethod(reverse_bpr_loss)
