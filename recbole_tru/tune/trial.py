"""One sweep trial: the method with the trial's settings, run on the calibration request.

The function runs in a Ray worker, in a per-trial working directory. Importing this module
imports ``recbole_tru`` first, which applies :mod:`recbole_tru.compat` in the worker (workers
do not inherit the driver's monkeypatches). Everything a trial reads comes from the ``bundle``
(shared through Ray's object store) or from absolute paths: the calibration request's data
splits and forget set, and the original model's checkpoint, trained once by the driver. No
trial trains an original or a retrained model.
"""
import torch
from ray import tune

from recbole_tru.checkpoint import load_into
from recbole_tru.cluster import node_id
from recbole_tru.config import Config
from recbole_tru.data.retained import UnlearnData
from recbole_tru.registry import get_unlearn_trainer
from recbole_tru.training import build_model, quiet_logging
from recbole_tru.tune.objective import CalibrationScore


def trial_config(bundle, params):
    """The trial's Config: the sweep's own settings, the file's fixed values, the trial's."""
    return Config(model=bundle["model"], dataset=bundle["dataset"],
                  config_dict={**bundle["config_dict"], **params}, read_cmd_line=False)


def run_trial(params, bundle):
    """Ray Tune function trainable. Reports the calibration metrics after every unlearning
    epoch (``finished = 0``) and once more for the final model (``finished = 1``, with
    ``unlearn_seconds``); a scheduler may stop the trial after any report."""
    torch.set_num_threads(int(bundle["cpus_per_trial"]))
    quiet_logging()
    config = trial_config(bundle, params)
    train, valid, test = bundle["datasets"]
    data = UnlearnData(config, train, valid, test, bundle["forget"])
    model = build_model(config, data.retain_dataset)        # graph backbones read D_r
    load_into(model, bundle["original"], {"model": config["model"], "dataset": config["dataset"]})
    trainer = get_unlearn_trainer(bundle["method"])(config, model, data)
    score = CalibrationScore(config, data, bundle["gap_weight"], bundle["reference_forget_recall"])
    node = node_id()                                        # where the trial ran (trials.csv, on a cluster)
    trainer.epoch_callback = lambda t, epoch: tune.report({"epoch": epoch, "finished": 0, "node_id": node,
                                                           **score(t.model)})
    trainer.unlearn(show_progress=False)
    tune.report({"epoch": len(trainer.log), "finished": 1, "unlearn_seconds": trainer.seconds,
                 "node_id": node,
                 **score(trainer.model)})
