"""Serving a checkpoint: reload it with the data it may read, and recommend from it.

A checkpoint the plugin writes holds tensors and metadata, not the data a model reads at run
time: MMGCN's (and LightGCN's) graph is a non-persistent buffer built from the training split,
and RecBole's history masks and samplers come from the data loaders. An UNLEARNED checkpoint
must therefore be rebuilt on the retained data, never on the full training split, or its graph
holds the deleted interactions again. :func:`load_checkpoint` does that:

1. the config is rebuilt from the settings the checkpoint records (``meta["config"]``, the
   training run's external config: ``--config_files`` contents, ``config_dict``, command line)
   plus the caller's ``config_dict`` (e.g. another ``data_path`` or ``device``), and checked
   against the checkpoint's data and config digests;
2. the data set is loaded and split as in training; the checkpoint's cumulative forget set
   (``meta["unlearning"]["forgotten"]``, every request so far) is deleted from everything the
   model reads (:class:`~recbole_tru.data.retained.UnlearnData`: retained training data,
   graph, negative sampling, history masks; validation and test rows the requests cover);
3. the model is built on the retained training data and the weights are loaded.

:func:`load_data_and_model` returns this in RecBole's shape; :func:`recommend` writes top-K
lists for given users as RecBole's ``full_sort_topk`` ranks them, masking each user's retained history.
"""
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_tru.checkpoint import (RUN_KEYS, CheckpointError, config_fingerprint, data_fingerprint, load_into,
                                    read_checkpoint)
from recbole_tru.config import PLUGIN_PREFIXES, Config
from recbole_tru.data.features import feature_file_path
from recbole_tru.data.forget import read_request
from recbole_tru.data.retained import UnlearnData
from recbole_tru.files import unique_path, write_text
from recbole_tru.training import build_model, load_data

def check_checkpoint(config, meta, model, path):
    """Is checkpoint ``path`` (``meta``) a model of this run's kind, data and split? Raises
    :class:`CheckpointError` naming the checkpoint and both sides otherwise."""
    check_model(config, meta, model, path)
    check_digests(config, meta, path)


def check_model(config, meta, model, path):
    """The model, data set and feature widths of checkpoint ``path`` against this run's (see
    :func:`check_checkpoint`)."""
    for key in ("model", "dataset"):
        if meta.get(key) != config[key]:
            raise CheckpointError(f"{path} was trained for {key}={meta.get(key)!r}, this run has "
                                  f"{key}={config[key]!r}")
    widths = {m: int(model.feature(m).shape[1]) for m in getattr(model, "modalities", ())}
    saved = meta.get("feature_dims") or {}
    for modality in sorted(set(widths) | set(saved)):
        if widths.get(modality) != saved.get(modality):
            suffix = (config["modalities"] or {}).get(modality, "?")
            feature_file = feature_file_path(config["data_path"], config["dataset"], suffix)
            raise CheckpointError(f"{path} was trained with {modality!r} features of width {saved.get(modality)}, "
                                  f"this run's {feature_file} has width {widths.get(modality)}")


def check_digests(config, meta, path):
    """The data and config digests of checkpoint ``path`` against this run's (see
    :func:`check_checkpoint`)."""
    digest = data_fingerprint(config["data_path"])
    if meta.get("data_digest") != digest:
        raise CheckpointError(f"{path} was trained on other data: data digest {meta.get('data_digest')} "
                              f"vs {digest} of {config['data_path']} (every file in that folder counts: "
                              f"keep request files elsewhere)")
    digest = config_fingerprint(config, exclude_prefixes=PLUGIN_PREFIXES)
    if meta.get("config_digest") != digest:
        raise CheckpointError(f"{path} was trained with other settings: config digest {meta.get('config_digest')} "
                              f"vs {digest} (the split, seed, filtering and model sizes must match: pass the "
                              f"training run's --config_files and --key=value options)")


def forgotten_set(meta, train_dataset, heldout=()):
    """The cumulative forget set an unlearned checkpoint's ``meta`` carries, resolved on the
    training split (a :class:`~recbole_tru.data.forget.ForgetSet`), or None for a checkpoint
    no request has touched."""
    text = (meta.get("unlearning") or {}).get("forgotten")
    if not text:
        return None
    with tempfile.TemporaryDirectory(prefix="recbole_tru_forgotten_") as scratch:
        path = Path(scratch) / "forgotten.inter"
        path.write_text(text, encoding="utf-8")
        return read_request(path, train_dataset, on_unknown="error", heldout=heldout)


@dataclass
class Served:
    """A reloaded checkpoint and the data it may read. ``data`` is the
    :class:`~recbole_tru.data.retained.UnlearnData` view for an unlearned checkpoint (None
    otherwise); ``train_data`` / ``valid_data`` / ``test_data`` are RecBole loaders over the
    retained data."""
    config: Config
    model: torch.nn.Module
    dataset: object
    train_data: object
    valid_data: object
    test_data: object
    data: object
    meta: dict
    path: Path

    def as_recbole(self):
        """RecBole's ``(config, model, dataset, train_data, valid_data, test_data)``."""
        return self.config, self.model, self.dataset, self.train_data, self.valid_data, self.test_data


def load_checkpoint(model_file, config_file_list=None, config_dict=None, expect=None):
    """Reload ``model_file`` (any checkpoint the plugin writes) with its data; see the module.

    ``config_file_list`` / ``config_dict`` add to (and override) the settings the checkpoint
    records; a checkpoint written before settings were recorded needs the training run's
    settings here. Raises :class:`CheckpointError` naming the file when the checkpoint does not
    fit the data or settings (or ``expect``, e.g. ``{"model": "MMGCN"}``)."""
    path = Path(model_file)
    meta = read_checkpoint(path)["meta"]
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(f"{path} is a checkpoint of {key}={meta.get(key)!r}, this run has {key}={value!r}")
    recorded = meta.get("config")
    if recorded is None and not config_file_list and not config_dict:
        raise CheckpointError(f"{path} records no settings (meta 'config': written by an older recbole_tru): "
                              f"pass the training run's config_file_list / config_dict")
    for key in ("model", "dataset"):
        if not meta.get(key):
            raise CheckpointError(f"{path} has no {key!r} in its metadata: not a recbole_tru model checkpoint")
    config = Config(model=meta["model"], dataset=meta["dataset"], config_file_list=config_file_list,
                    config_dict={**(recorded or {}), **(config_dict or {})}, read_cmd_line=False)
    check_digests(config, meta, path)             # before the forget set is resolved on this data
    dataset, train_data, valid_data, test_data = load_data(config)
    train, valid, test = train_data.dataset, valid_data.dataset, test_data.dataset
    forget = forgotten_set(meta, train, heldout=(valid, test))
    data = None
    if forget is not None:
        data = UnlearnData(config, train, valid, test, forget)
        train_data, valid_data, test_data = data.retain_loader(), data.eval_loader("valid"), data.eval_loader("test")
        train = data.retain_dataset
    model = build_model(config, train)
    check_model(config, meta, model, path)        # the digests were checked above
    load_into(model, path, expect={"model": config["model"], "dataset": config["dataset"]})
    model.eval()
    return Served(config, model, dataset, train_data, valid_data, test_data, data, meta, path)


def load_data_and_model(model_file, config_file_list=None, config_dict=None):
    """RecBole's ``load_data_and_model`` for the plugin's checkpoints: ``(config, model,
    dataset, train_data, valid_data, test_data)``, with an unlearned checkpoint's forget set
    deleted from the loaders and from the model's graph (:func:`load_checkpoint`). ``dataset``
    is the data set as loaded from the atomic files; ``train_data.dataset`` is the retained
    training split."""
    return load_checkpoint(model_file, config_file_list, config_dict).as_recbole()


# --------------------------------------------------------------------------- recommending

class UsersFileError(ValueError):
    """A users file for ``recommend`` is missing, empty or names unknown users."""


def read_users(path, dataset):
    """Internal ids of the users listed in ``path``: one user token per line, optionally under
    a ``user_id:token`` header (RecBole's atomic-file style); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UsersFileError(f"users file not found: {path} (config key 'recommend')")
    uid = dataset.uid_field
    tokens, lines = [], path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        token = line.strip()
        if not token or (number == 1 and token.split(":")[0] == uid and ":" in token):
            continue
        tokens.append((number, token))
    if not tokens:
        raise UsersFileError(f"{path}: no users listed (one {uid} token per line)")
    known = dataset.field2token_id[uid]
    unknown = [f"{t} (line {n})" for n, t in tokens if t not in known]
    if unknown:
        raise UsersFileError(f"{path}: unknown user(s) {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
    return [t for _, t in tokens], np.array([known[t] for _, t in tokens], dtype=np.int64)


def top_k(served, users, k):
    """``(scores, item ids)`` [len(users), k] of ``users`` (internal ids): the full-sort scores
    of RecBole's ``full_sort_topk`` with the padding item and each user's history in the test
    loader masked (retained training + validation: never a forgotten pair, which is in no
    history). RecBole's own function fails on a user with no history at all (a user whose
    every interaction was deleted); here such a user gets the unmasked ranking."""
    loader = served.test_data
    dataset = loader.dataset
    n_items = dataset.item_num - 1                          # id 0 is padding
    if not 1 <= k <= n_items:
        raise ValueError(f"config key 'recommend_topk' must be in 1..{n_items} (the catalogue), got {k}")
    model, device = served.model, served.config["device"]
    model.eval()
    users = torch.as_tensor(users, dtype=torch.long)
    with torch.no_grad():
        batch = dataset.join(Interaction({dataset.uid_field: users})).to(device)
        scores = model.full_sort_predict(batch).view(len(users), -1).cpu()
    scores[:, 0] = -torch.inf
    for row, history in enumerate(loader.uid2history_item[users.numpy()]):
        if history is not None and len(history):
            scores[row, history] = -torch.inf
    return torch.topk(scores, k)


def recommend(served, users_file, k, out_file):
    """Write the top-``k`` lists of the users in ``users_file`` to ``out_file`` (a new file,
    written whole or not at all), one row per (user, rank): ``user_id:token  rank:float
    item_id:token  score:float``. Returns ``(path, number of users)``."""
    dataset = served.test_data.dataset
    tokens, users = read_users(users_file, dataset)
    scores, items = top_k(served, users, k)
    id2item = dataset.field2id_token[dataset.iid_field]
    lines = [f"{dataset.uid_field}:token\trank:float\t{dataset.iid_field}:token\tscore:float"]
    for token, row_items, row_scores in zip(tokens, items.tolist(), scores.tolist()):
        lines += [f"{token}\t{rank}\t{id2item[i]}\t{s:.6g}" for rank, (i, s) in enumerate(zip(row_items, row_scores), 1)]
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    path = write_text(out_file, "\n".join(lines) + "\n")
    return path, len(tokens)


def run_recommend(config):
    """The command ``--checkpoint=PATH --recommend=USERS``: reload the checkpoint (the run's own
    settings override the recorded ones), write the top-``recommend_topk`` lists of the users
    in the file ``recommend`` to ``recommend_file`` (default: a new
    ``<output_dir>/recommend-<model>-<time>.tsv``). Returns ``{"file", "users", "topk",
    "forgotten_interactions"}``."""
    if not config["checkpoint"]:
        raise ValueError("config key 'recommend' (a users file) needs config key 'checkpoint': the model to "
                         "recommend from")
    if config["forget_file"]:
        raise ValueError("config keys 'recommend' and 'forget_file' are both set: a run either recommends from "
                         "the checkpoint or applies a deletion request to it; run the request first, then "
                         "recommend from its unlearned.pth")
    overrides = {k: v for k, v in config.external_config_dict.items() if k not in RUN_KEYS}
    served = load_checkpoint(config["checkpoint"], config_dict=overrides,
                             expect={"model": config["model"], "dataset": config["dataset"]})
    k = config["recommend_topk"]
    if config["recommend_file"]:
        out = Path(config["recommend_file"])
    else:
        out = unique_path(Path(config["output_dir"]) / f"recommend-{config['model']}-{time.strftime('%Y%m%d-%H%M%S')}",
                          ".tsv")
    path, n_users = recommend(served, config["recommend"], k, out)
    forgotten = 0 if served.data is None else int(served.data.forget.stats()["interactions"])
    print(f"top-{k} lists of {n_users} user(s) written to {path}"
          + (f" (served with {forgotten} forgotten interactions deleted from its data)" if forgotten else ""))
    return {"file": str(path), "users": n_users, "topk": k, "forgotten_interactions": forgotten}
