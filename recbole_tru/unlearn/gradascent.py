"""``gradascent``: gradient ascent on the forget set's BPR loss."""
from recbole_tru.losses import gradient_ascent_loss
from recbole_tru.unlearn.base import ForgetRetainTrainer


class GradAscentTrainer(ForgetRetainTrainer):
    """Ascends ``L_bpr(D_f)`` (minimises ``-L_bpr``), unbounded, so few epochs; a retained-data
    BPR term is added when ``gradascent_retain_weight`` > 0."""

    name = "gradascent"
    forget_loss = staticmethod(gradient_ascent_loss)
