"""The judge: every method is measured the same way against the retrained model.

* ``retain``: Recall/NDCG@K on the test pairs the request does not cover (full sort, history
  = retained training + validation), with RecBole's evaluator;
* ``forget``: the same metrics with the forget set as ground truth (history = retained
  training + validation); the target is the retrained model's value, not zero;
* ``gap_to_retrain``: absolute differences of both to the retrained model's values;
* ``topk_overlap_with_retrain``: mean |top-K ∩ retrained top-K| / K over the affected users
  (the users of the forget set).
"""
import numpy as np
from recbole.trainer import Trainer

from recbole_tru.model.ranking import drop_score_cache, topk_lists


class Judge:
    def __init__(self, config, data, retrained):
        self.data = data
        self._host = Trainer(config, retrained)        # hosts RecBole's evaluator
        self.loaders = {"retain": data.eval_loader("test"), "forget": data.eval_loader("forget")}
        self.history = data.eval_history()
        self.affected = np.unique(data.forget.users)
        self.k = int(config["unlearn_overlap_k"])
        self.reference_lists = topk_lists(retrained, self.affected, self.history, self.k)
        self.reference = self.metrics(retrained)

    def metrics(self, model):
        """``{"retain": {metric: value}, "forget": {...}}`` for ``model``."""
        self._host.model = model
        out = {}
        for name, loader in self.loaders.items():
            drop_score_cache(model)
            out[name] = {k: float(v) for k, v in self._host.evaluate(loader, load_best_model=False).items()}
        return out

    def overlap(self, model):
        lists = topk_lists(model, self.affected, self.history, self.k)
        hits = [len(np.intersect1d(a, b)) for a, b in zip(lists, self.reference_lists)]
        return float(np.mean(hits) / self.k)

    def report(self, model):
        """Metrics, gaps to the retrained model and top-K overlap of ``model``."""
        m = self.metrics(model)
        gaps = {part: {k: abs(v - self.reference[part][k]) for k, v in m[part].items()} for part in m}
        return {**m, "gap_to_retrain": gaps, "topk_overlap_with_retrain": self.overlap(model)}
