"""The sweep's objective, measured on the CALIBRATION request only (never on the test set).

For an unlearned model ``θ`` on the calibration request (deletion request drawn with
``forget_seed = tune_calibration_seed``)::

    valid_ndcg@20  NDCG@20 on the validation pairs the request does not cover (full sort,
                   history = retained training), i.e. the retain utility a user would see;
    forget_gap     |Recall@20(θ, D_f) - Recall@20(θ_r, D_f)|, the forget set as ground truth
                   (history = retained training + validation), ``θ_r`` the model retrained
                   on the calibration request's retained data;
    objective      valid_ndcg@20 - tune_gap_weight · forget_gap        (maximised)

Using ``θ_r`` of the calibration request does not break the no-oracle rule: the calibration
request is not the one that is judged. The chosen settings are then judged on a fresh request
(``forget_seed``) against that request's own retrained model, on the test set
(:mod:`recbole_tru.tune.sweep`).
"""
from recbole.trainer import Trainer

from recbole_tru.model.ranking import drop_score_cache

K = 20


class CalibrationScore:
    """``score(model)`` -> the metrics above. ``reference_forget_recall``: the retrained
    model's forget Recall@20 (measure it with :meth:`forget_recall`)."""

    def __init__(self, config, data, gap_weight, reference_forget_recall=None):
        for needed in (f"ndcg@{K}", f"recall@{K}"):
            metric, k = needed.split("@")
            if metric not in [m.lower() for m in config["metrics"]] or int(k) not in config["topk"]:
                raise ValueError(f"Sweeps score {needed}: config keys 'metrics' and 'topk' must include it")
        self.config = config
        self.gap_weight = float(gap_weight)
        self.reference_forget_recall = reference_forget_recall
        self.loaders = {"valid": data.eval_loader("valid"), "forget": data.eval_loader("forget")}
        self._host = None

    def _evaluate(self, model, part):
        if self._host is None:
            self._host = Trainer(self.config, model)         # hosts RecBole's evaluator
        self._host.model = model
        drop_score_cache(model)
        return self._host.evaluate(self.loaders[part], load_best_model=False)

    def forget_recall(self, model):
        return float(self._evaluate(model, "forget")[f"recall@{K}"])

    def __call__(self, model):
        valid = self._evaluate(model, "valid")
        forget_recall = self.forget_recall(model)
        gap = abs(forget_recall - self.reference_forget_recall)
        ndcg = float(valid[f"ndcg@{K}"])
        return {f"valid_ndcg@{K}": ndcg, f"valid_recall@{K}": float(valid[f"recall@{K}"]),
                f"forget_recall@{K}": forget_recall, "forget_gap": gap,
                "objective": ndcg - self.gap_weight * gap}
