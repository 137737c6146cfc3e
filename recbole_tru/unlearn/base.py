"""Common base of the unlearning methods: RecBole trainers that start from a trained model.

A method is a RecBole ``Trainer`` whose training data is the deletion request. It overrides the
narrow hooks only: ``_build_optimizer`` (its own learning rate, no weight decay: decay would move
rows no loss touches) and ``_train_epoch`` (which batches to train on and with which loss,
handed to RecBole's own ``_train_epoch`` loop as ``loss_func``). RecBole's ``fit`` runs the
epochs. Every hyperparameter is a config key ``<method>_<key>`` declared in
``properties/unlearn/<method>.yaml``.
"""
import time
from contextlib import contextmanager

from recbole.trainer import Trainer

from recbole_tru.unlearn.capacity import forget_scores_and_retain_loss, pair_scores


def cycle(loader):
    """Endless batches from a RecBole loader (reshuffled every pass)."""
    while True:
        yield from loader


class UntilStop:
    """The batches of one pass of ``loader`` until ``stop()`` (asked before every step) is true.

    The rest of the pass is still drawn (not trained on), so the samplers' random streams, and
    with them the repair's batches, do not depend on where in a pass the stop fell."""

    def __init__(self, loader, stop):
        self.loader, self.stop, self.stopped = loader, stop, False

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):            # RecBole's loop reads loader attributes (``shuffle``)
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self):
        batches = iter(self.loader)
        for batch in batches:
            if self.stop():
                self.stopped = True
                for _ in batches:
                    pass
                return
            yield batch


class UnlearnTrainer(Trainer):
    """Base trainer. ``unlearn()`` edits ``model`` in place and returns it.

    ``epoch_callback(trainer, epoch)`` (optional) is called after every epoch, e.g. to record
    a trade-off curve; time spent in it is excluded from ``seconds``.
    """

    name = None

    def __init__(self, config, model, data):
        self.data = data
        super().__init__(config, model)
        self.epochs = int(self.option("epochs"))
        self.epoch_callback = None
        self.log = []             # per-epoch records: {"epoch", "loss", ...}
        self.seconds = 0.0
        self._callback_seconds = 0.0
        self.phase_seconds = {}   # part of the method -> seconds (see _timed)
        self._frozen = []         # parameters _freeze turned off
        self._hooks = []          # gradient hooks _unfreeze removes

    def option(self, key):
        return self.config[f"{self.name}_{key}"]

    def _build_optimizer(self, **kwargs):
        kwargs.setdefault("learning_rate", self.option("learning_rate"))
        kwargs.setdefault("weight_decay", 0.0)
        return super()._build_optimizer(**kwargs)

    def train_loader(self):
        """The loader handed to RecBole's ``fit`` (one epoch = one pass over it)."""
        return self.data.forget_loader(self.option("batch_size"))

    def unlearn(self, show_progress=False):
        start = time.perf_counter()
        self.fit(self.train_loader(), valid_data=None, saved=False, verbose=False, show_progress=show_progress)
        self.seconds = time.perf_counter() - start - self._callback_seconds
        return self.model

    @contextmanager
    def _timed(self, part):
        """Add the block's wall time to ``phase_seconds[part]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[part] = self.phase_seconds.get(part, 0.0) + time.perf_counter() - start

    def _freeze(self, trainable):
        """Stop gradients to every parameter not named in ``trainable`` (until :meth:`_unfreeze`)."""
        self._frozen = [p for n, p in self.model.named_parameters() if n not in trainable and p.requires_grad]
        for p in self._frozen:
            p.requires_grad_(False)

    def _unfreeze(self):
        """Undo :meth:`_freeze` and remove the gradient hooks in ``_hooks``."""
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _after_epoch(self, epoch_idx, loss, **record):
        self.log.append({"epoch": epoch_idx, "loss": float(loss or 0.0), **record})
        if self.epoch_callback is not None:
            start = time.perf_counter()
            self.epoch_callback(self, epoch_idx)
            self._callback_seconds += time.perf_counter() - start


class ForgetRetainTrainer(UnlearnTrainer):
    """``λ_f · forget_loss(D_f batch) + λ_r · L_bpr(D_r batch)`` over all parameters, one
    retain batch (same size) per forget batch. Subclasses set ``forget_loss``."""

    forget_loss = None

    def __init__(self, config, model, data):
        super().__init__(config, model, data)
        self.forget_weight = float(self.option("forget_weight"))
        self.retain_weight = float(self.option("retain_weight"))
        self._retain = cycle(data.retain_loader(self.option("batch_size"))) if self.retain_weight > 0 else None

    def step_loss(self, interaction):
        forget_loss = type(self).forget_loss
        if self._retain is None:
            model = self.model
            pos, neg = pair_scores(model, interaction[model.USER_ID], interaction[model.ITEM_ID],
                                   interaction[model.NEG_ITEM_ID])
            return self.forget_weight * forget_loss(pos, neg)
        retain = next(self._retain).to(self.device)
        pos, neg, retain_loss = forget_scores_and_retain_loss(self.model, interaction, retain)
        return self.forget_weight * forget_loss(pos, neg) + self.retain_weight * retain_loss

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=self.step_loss, show_progress=show_progress)
        self._after_epoch(epoch_idx, loss)
        return loss
