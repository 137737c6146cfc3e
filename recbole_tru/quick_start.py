"""Entry point: read the command (config precedence as in ``run_recbole.py``) and dispatch.

:func:`run_recbole_tru` mirrors ``recbole.quick_start.run_recbole`` (config -> data set ->
split -> model -> trainer -> fit -> test). With ``tune`` set it runs a sweep
(:mod:`recbole_tru.tune`); with ``checkpoint`` set, a deletion request on that checkpoint
(:mod:`recbole_tru.unlearn.workflow`), or with ``recommend`` also set, top-K lists from it
(:mod:`recbole_tru.serving`); with ``unlearn`` set, the unlearning run
(:mod:`recbole_tru.unlearn.pipeline`). The training itself lives in :mod:`recbole_tru.training`.
"""
import sys
from logging import getLogger

from recbole.utils import init_logger, init_seed, set_color

from recbole_tru.config import Config
from recbole_tru.registry import parse_unlearn
from recbole_tru.serving import load_data_and_model, run_recommend
from recbole_tru.terminal import plain, quiet_warnings
from recbole_tru.training import fit, load_data, save_trained
from recbole_tru.tune import run_sweep
from recbole_tru.unlearn.pipeline import run_unlearning
from recbole_tru.unlearn.workflow import run_request

# RecBole's two quick-start functions: run (:func:`run_recbole_tru`) and reload a checkpoint with the
# data it may read (:func:`recbole_tru.serving.load_data_and_model`, RecBole's name and return shape)
__all__ = ["run_recbole_tru", "load_data_and_model"]


def run_recbole_tru(model=None, dataset=None, config_file_list=None, config_dict=None,
                    read_cmd_line=True):
    """Train ``model`` on ``dataset`` and test it; then run the configured unlearning methods.

    Returns a dict with the training summary and test result (and, with ``unlearn`` set, the
    unlearning run's results). RecBole's and torch's known-harmless warnings are not shown
    (:func:`recbole_tru.terminal.quiet_warnings`); every other warning is.
    """
    with quiet_warnings():
        return _run(model, dataset, config_file_list, config_dict, read_cmd_line)


def _run(model, dataset, config_file_list, config_dict, read_cmd_line):
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, read_cmd_line=read_cmd_line)
    methods = parse_unlearn(config["unlearn"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    if config["tune"]:
        return run_sweep(config)
    if config["recommend"]:
        return run_recommend(config)
    data = load_data(config)
    logger.info(data[0])
    if config["checkpoint"]:
        return run_request(config, *data, methods)
    if methods:
        return run_unlearning(config, *data, methods)
    _, train_data, valid_data, test_data = data
    trained, trainer, summary = fit(config, train_data, valid_data)
    logger.info(trained)
    test_result = plain(dict(trainer.evaluate(test_data, load_best_model=False,
                                              show_progress=config["show_progress"])))
    logger.info(set_color("best valid ", "yellow") + f": {summary['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    path = save_trained(config, trained, summary, test_result)
    logger.info(set_color("checkpoint", "yellow") + f": {path}")
    return {"summary": summary, "test_result": test_result, "checkpoint": str(path)}
