"""Entry points: train a model the RecBole way, with the plugin's models, data and config.

:func:`run_recbole_tru` mirrors ``recbole.quick_start.run_recbole`` (config -> data set ->
split -> model -> trainer -> fit -> test) and, when ``unlearn`` is set, continues with the
unlearning run of :mod:`recbole_tru.unlearn.pipeline`.
"""
import hashlib
import logging
import sys
import tempfile
import time
from logging import getLogger
from pathlib import Path

import torch
from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_tru.checkpoint import config_fingerprint, data_fingerprint, load_into, save_checkpoint
from recbole_tru.config import PLUGIN_PREFIXES, Config
from recbole_tru.data import create_dataset
from recbole_tru.registry import get_model, get_trainer, parse_unlearn


def load_data(config):
    """Data set and its RecBole split: ``(dataset, train_data, valid_data, test_data)``.

    The random split draws from the global RNG, so it is seeded here: the split is a function
    of the config alone (which the checkpoint cache key relies on)."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return dataset, train_data, valid_data, test_data


def model_seed(config):
    """The seed of a model's initialisation and training: ``model_seed``, else ``seed``."""
    return config["seed"] if config["model_seed"] is None else int(config["model_seed"])


def build_model(config, train_dataset):
    """A freshly initialised model (seeded: the same config gives the same initial weights).

    The seed is ``model_seed`` when set, else ``seed``; it also seeds the training that follows
    (batch order, negative sampling), while the split keeps ``seed`` (:func:`load_data`), so
    originals of several model seeds share one split."""
    init_seed(model_seed(config), config["reproducibility"])
    return get_model(config["model"])(config, train_dataset).to(config["device"])


def fit_trainer(trainer, train_data, valid_data, show_progress=False):
    """RecBole's ``trainer.fit`` with early stopping; the trainer's model ends at its best epoch.

    RecBole writes its best-epoch checkpoint into a private temporary folder that is removed
    afterwards, so concurrent fits never share (or overwrite) a file. Returns a summary dict.
    """
    with tempfile.TemporaryDirectory(prefix="recbole_tru_fit_") as tmp:
        trainer.saved_model_file = str(Path(tmp) / "best.pth")
        start = time.perf_counter()
        best_score, best_result = trainer.fit(train_data, valid_data, saved=True, show_progress=show_progress)
        seconds = time.perf_counter() - start
        state = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
    trainer.model.load_state_dict(state["state_dict"])
    epochs = len(trainer.train_loss_dict)
    return {"epochs": epochs, "best_epoch": int(state["epoch"]), "seconds": seconds,
            "seconds_per_epoch": seconds / max(epochs, 1), "best_valid_score": float(best_score),
            "best_valid_result": {k: float(v) for k, v in (best_result or {}).items()}}


def fit(config, train_data, valid_data, model=None, show_progress=None):
    """Train a fresh (or the given) model with RecBole's trainer for ``config['model']``.
    Returns ``(model, trainer, summary)``."""
    model = model if model is not None else build_model(config, train_data.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    show = config["show_progress"] if show_progress is None else show_progress
    summary = fit_trainer(trainer, train_data, valid_data, show)
    return model, trainer, summary


def cached_fit(config, train_data, valid_data, cache_dir, tag, extra_key=""):
    """:func:`fit`, or load the checkpoint a previous run made with the same config, data and
    ``extra_key`` (e.g. a forget set's digest). Returns ``(model, summary, path, cached)``."""
    config_key = config_fingerprint(config, exclude_prefixes=PLUGIN_PREFIXES)
    key = hashlib.sha256((config_key + data_fingerprint(config["data_path"]) + extra_key).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{config['model']}-{config['dataset']}-{tag}-{key}.pth"
    expect = {"model": config["model"], "dataset": config["dataset"], "key": key}
    if path.exists():
        model = build_model(config, train_data.dataset)
        meta = load_into(model, path, expect)
        return model, meta["summary"], path, True
    model, _, summary = fit(config, train_data, valid_data)
    try:
        save_checkpoint(path, model, {**expect, "tag": tag, "summary": summary})
    except FileExistsError:     # a concurrent run cached the same key meanwhile; it is never replaced
        pass
    return model, summary, path, False


def run_recbole_tru(model=None, dataset=None, config_file_list=None, config_dict=None,
                    read_cmd_line=True):
    """Train ``model`` on ``dataset`` and test it; then run the configured unlearning methods.

    Returns a dict with the training summary and test result (and, with ``unlearn`` set, the
    unlearning run's results).
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, read_cmd_line=read_cmd_line)
    methods = parse_unlearn(config["unlearn"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    if config["tune"]:
        from recbole_tru.tune import run_sweep

        return run_sweep(config)
    data = load_data(config)
    logger.info(data[0])
    if config["checkpoint"]:
        from recbole_tru.unlearn.workflow import run_request

        return run_request(config, *data, methods)
    if methods:
        from recbole_tru.unlearn.pipeline import run_unlearning

        return run_unlearning(config, *data, methods)
    _, train_data, valid_data, test_data = data
    trained, trainer, summary = fit(config, train_data, valid_data)
    logger.info(trained)
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {summary['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {dict(test_result)}")
    path = save_trained(config, trained, summary, test_result)
    logger.info(set_color("checkpoint", "yellow") + f": {path}")
    return {"summary": summary, "test_result": dict(test_result), "checkpoint": str(path)}


def save_trained(config, model, summary, test_result):
    """Write the trained model as a new checkpoint ``<output_dir>/<model>-<dataset>-<time>.pth``
    (tensors + metadata: model, data set, config and data digests, feature widths)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config["output_dir"]) / f"{config['model']}-{config['dataset']}-{stamp}"
    path, n = Path(f"{base}.pth"), 1
    while path.exists():
        path, n = Path(f"{base}-{n}.pth"), n + 1
    meta = {"model": config["model"], "dataset": config["dataset"],
            "config_digest": config_fingerprint(config, exclude_prefixes=PLUGIN_PREFIXES),
            "data_digest": data_fingerprint(config["data_path"]),
            "feature_dims": {m: int(model.feature(m).shape[1]) for m in getattr(model, "modalities", ())},
            "summary": summary, "test_result": {k: float(v) for k, v in test_result.items()}}
    return save_checkpoint(path, model, meta)


def quiet_logging():
    """Silence RecBole's INFO output (tests, Ray trials)."""
    logging.getLogger().setLevel(logging.WARNING)
