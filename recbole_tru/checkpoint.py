"""The plugin's checkpoints: tensors plus JSON-safe metadata, written whole or not at all.

A checkpoint is ``{"state_dict": {name: Tensor}, "meta": {str: str | int | float | list}}``
saved with ``torch.save`` and read with ``torch.load(weights_only=True)``: nothing executable
is unpickled. Writes go to a temporary file in the same folder and are renamed into place; an
existing checkpoint is never overwritten.
"""
import hashlib
import json
from pathlib import Path

import torch

from recbole_tru.files import atomic_write


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or made for another model, data set or feature width."""


# Keys that do not change what a trained model is (where it is written, how much is logged,
# what is done after training): left out of the cache key.
_NOT_IN_FINGERPRINT = {
    "unlearn", "output_dir", "checkpoint_dir", "show_progress", "state", "log_wandb",
    "wandb_project", "config_files", "checkpoint", "forget_file", "tune", "ray_address",
    "gpu_id", "use_gpu", "device", "worker", "save_dataset", "save_dataloaders",
    "dataset_save_path", "dataloaders_save_path", "data_path", "local_rank", "nproc",
    "world_size", "offset", "ip", "port", "single_spec", "eval_batch_size",
}


def _plain(value, ordered=False):
    """JSON-safe copy of ``value``: dicts with their keys sorted (digests), or in their own order
    (``ordered``: settings to rebuild a config from, where the order matters, e.g. of modalities)."""
    if isinstance(value, dict):
        items = value.items() if ordered else sorted(value.items(), key=lambda kv: str(kv[0]))
        return {str(k): _plain(v, ordered) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [_plain(v, ordered) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


# Keys of a run's config that say what the run DOES, not what the model IS: never recorded in
# a checkpoint (a reload must not start a deletion request, a sweep or an unlearning run).
RUN_KEYS = ("unlearn", "checkpoint", "forget_file", "tune", "recommend", "recommend_topk", "recommend_file",
            "ray_address", "output_dir", "checkpoint_dir", "show_progress", "state", "config_files",
            "model", "dataset")
# Path-valued keys recorded as absolute paths (a checkpoint may be reloaded from another folder).
PATH_KEYS = ("data_path",)


def config_record(config):
    """The settings to rebuild ``config`` from a checkpoint: the run's external config (files,
    ``config_dict``, command line) without :data:`RUN_KEYS`, paths made absolute; JSON-safe."""
    record = {k: _plain(v, ordered=True) for k, v in config.external_config_dict.items() if k not in RUN_KEYS}
    for key in PATH_KEYS:
        if record.get(key):
            record[key] = str(Path(record[key]).resolve())
    return record


def config_fingerprint(config, exclude_prefixes=()):
    """sha256 of the config items that define a trained model (all but run bookkeeping and
    keys starting with ``exclude_prefixes``)."""
    items = {k: _plain(v) for k, v in config.final_config_dict.items()
             if k not in _NOT_IN_FINGERPRINT and not k.startswith(tuple(exclude_prefixes))}
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def file_digest(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# Files derived from the data (feature-file caches, rebuilt whenever their source changes or is
# copied) are not data: left out of the data digest, so a copied data folder keeps its digest.
DERIVED_SUFFIXES = (".cache.npz",)


def data_fingerprint(data_dir):
    """sha256 over the names and contents of the data set folder's files (hidden files and
    derived caches, :data:`DERIVED_SUFFIXES`, left out)."""
    digest = hashlib.sha256()
    for path in sorted(Path(data_dir).iterdir()):
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(DERIVED_SUFFIXES):
            digest.update(path.name.encode())
            digest.update(file_digest(path).encode())
    return digest.hexdigest()


def save_checkpoint(path, model, meta):
    """Write ``model``'s parameters and persistent buffers with ``meta`` to a new file."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "meta": _plain(meta, ordered=True)}

    def write(tmp):
        # into an open file: given a path, torch names the zip's root folder after the (random)
        # temporary name, and equal tensors would give different bytes
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)

    return atomic_write(path, write)


def read_checkpoint(path):
    """Load a checkpoint written by :func:`save_checkpoint` (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbled files
        raise CheckpointError(f"{path} is not a readable recbole_tru checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path} is not a recbole_tru checkpoint (no state_dict/meta)")
    return payload


def load_into(model, path, expect=None):
    """Load checkpoint ``path`` into ``model`` after checking ``meta`` against ``expect``
    (e.g. ``{"model": "VBPR", "dataset": "ml-100k-mm"}``) and every tensor's shape."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"{path} was made for {key}={meta.get(key)!r}, this run has {key}={value!r}")
    own = model.state_dict()
    state = payload["state_dict"]
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected {extra[:5]}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path} does not fit this model/data (shapes differ, e.g. another data set "
                              f"or feature width): {'; '.join(wrong[:5])}")
    model.load_state_dict(state)
    return meta
