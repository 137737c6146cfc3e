"""``finetune``: continue training on the retained data only."""
from recbole_tru.unlearn.base import UnlearnTrainer


class FinetuneTrainer(UnlearnTrainer):
    """BPR on ``D_r`` for ``finetune_epochs`` epochs, starting from the original model. It
    forgets only through the absence of ``D_f`` (slowly, if at all)."""

    name = "finetune"

    def train_loader(self):
        return self.data.retain_loader(self.option("batch_size"))

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, show_progress=show_progress)
        self._after_epoch(epoch_idx, loss)
        return loss
