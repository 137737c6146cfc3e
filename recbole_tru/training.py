"""Training primitives: the RecBole way (config -> data set -> split -> model -> trainer -> fit),
shared by the entry point, the unlearning methods, the audit's shadow model and the sweeps.

Everything here sits below :mod:`recbole_tru.unlearn`, :mod:`recbole_tru.audit` and
:mod:`recbole_tru.tune`; it never imports them.
"""
import hashlib
import logging
import tempfile
import time
from pathlib import Path

import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_tru.checkpoint import config_fingerprint, config_record, data_fingerprint, load_into, save_checkpoint
from recbole_tru.config import PLUGIN_PREFIXES
from recbole_tru.data import create_dataset
from recbole_tru.files import unique_path
from recbole_tru.registry import get_model, get_trainer


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


def timed_train_epochs(trainer):
    """Time each training pass of ``trainer`` (its ``_train_epoch``, evaluation excluded) from
    now on; returns the list the seconds are appended to."""
    seconds, train_epoch = [], trainer._train_epoch

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = train_epoch(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return out

    trainer._train_epoch = timed
    return seconds


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


def save_trained(config, model, summary, test_result):
    """Write the trained model as a new checkpoint ``<output_dir>/<model>-<dataset>-<time>.pth``
    (tensors + metadata: model, data set, config and data digests, feature widths, and the
    settings to rebuild the config, :func:`~recbole_tru.checkpoint.config_record`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(config["output_dir"]) / f"{config['model']}-{config['dataset']}-{stamp}"
    path = unique_path(base, ".pth")
    meta = {"model": config["model"], "dataset": config["dataset"],
            "config_digest": config_fingerprint(config, exclude_prefixes=PLUGIN_PREFIXES),
            "data_digest": data_fingerprint(config["data_path"]), "config": config_record(config),
            "feature_dims": {m: int(model.feature(m).shape[1]) for m in getattr(model, "modalities", ())},
            "summary": summary, "test_result": {k: float(v) for k, v in test_result.items()}}
    return save_checkpoint(path, model, meta)


def quiet_logging():
    """Silence RecBole's INFO output (tests, Ray trials)."""
    logging.getLogger().setLevel(logging.WARNING)
