"""Side by side with MMRec (https://github.com/enoche/MMRec, the field's multimodal toolbox): its
VBPR and MMGCN and ours on the same data, the same split and the same features.

MMRec is run from its own checkout, outside this repository (``--mmrec``); none of its code is
copied here. How the comparison is run:

* **Data** (``export``): ml-100k-mm and OUR split -- RecBole's default random 80/10/10 split per
  user (``eval_args``, ``seed`` 2020; ``model_seed`` leaves it alone) made by
  ``recbole_tru.training.load_data`` -- written as an
  MMRec data set ``<data>/ml-100k-mm/``: ``ml-100k-mm.inter`` (tab separated, ``userID itemID
  rating timestamp x_label``; ids 0-based = RecBole internal id - 1; ``x_label`` 0/1/2 =
  train/valid/test; ``rating`` is 1, implicit feedback, and ``timestamp`` as RecBole holds it,
  float32, i.e. rounded to 64 s: MMRec reads neither),
  ``text_feat.npy`` (384-d text features, row k = itemID k) and ``meta_feat.npy`` (32-d genre
  multi-hot + release-year buckets). **The meta modality is not visual**: MMRec has two feature
  slots, ``vision_feature_file`` and ``text_feature_file``; meta sits in the vision slot. The
  MMRec dataset config is written to ``<mmrec>/src/configs/dataset/ml-100k-mm.yaml`` (a copy next
  to the data), and ``u_id_mapping.csv`` / ``i_id_mapping.csv`` map our tokens to MMRec's ids.
  The importer ``recbole_tru.data.builders.mmrec`` reads the folder back to the same split
  (tests/test_mmrec_compare.py).
* **Models**: embedding size 64 on both sides (ours: ``embedding_size: 64``, VBPR
  ``content_embedding_size: 64``, MMGCN ``latent_dim: 64``; MMRec: ``embedding_size: 64``, its
  default). The implementations differ beyond that: MMRec's VBPR projects the concatenated
  [text; meta] features with one linear map (no biases), ours has a projection, user factors
  and a feature bias per modality plus item biases; MMRec's MMGCN projects the vision-slot
  modality to a fixed 256 and uses the 384-d text unprojected (no key for either), and its ID
  embeddings and user preferences are plain tensors its optimizer never updates (see
  recbole_tru/model/mmgcn.py). Seeds 1, 2, 3: ours ``model_seed`` (the split keeps ``seed``),
  MMRec its ``seed``.
* **Training**: each side with its own defaults -- both Adam, batch 2048, one uniform negative
  per positive, one evaluation per epoch. Ours: the data set's defaults (learning rate and L2
  weight tuned on validation, ``properties/dataset/ml-100k-mm/<model>.yaml``), at most 100
  epochs, early stop after 10 validations without a better NDCG@20 (properties/overall.yaml),
  the best epoch's weights are tested. MMRec (src/configs/overall.yaml): at most 1000 epochs, stop after 20
  without a better Recall@20, the test figures of the best validation epoch are reported.
* **MMRec's hyper-parameters** (``--grid``): its own grid (``hyper_parameters`` in
  src/configs/model/VBPR.yaml: 7 ``reg_weight``; MMGCN.yaml: 6 ``reg_weight`` x 5
  ``learning_rate``), the setting picked on VALIDATION Recall@20 (MMRec's ``valid_metric``).
  MMRec's own ``quick_start`` prints as "BEST" the setting with the best TEST Recall@20; that
  pick is recorded too (``mmrec_own_pick``) but not used. ``--grid`` per model: ``once``
  searches the grid with the first seed and trains the other seeds at its pick; ``full``
  searches it for every seed; ``off`` fixes the grid point equal to our defaults (reg_weight
  1e-5, learning rate 0.001). Default ``VBPR=once,MMGCN=off``: MMRec's MMGCN takes ~30 s per
  training epoch on one CPU thread here (its message passing materialises a 384-d message per
  edge), so its 30-point grid would take days on 2 cores; VBPR's 7 points cost 7 ordinary runs.
* **Test masking**: RecBole's full-sort test masks each user's train AND validation items;
  MMRec's masks train items only (``EvalDataLoader(..., additional_dataset=train_dataset)`` in
  src/utils/quick_start.py), so a validation item in the top 20 counts as a miss. Both models are
  therefore tested both ways, at the same (best validation) epoch: ours by RecBole's evaluator
  (train+valid) and by the same ranking with train items only masked; MMRec's by its evaluator
  (train only) and by the same evaluator on a test loader whose masked history is train+valid
  (a subclass of its Trainer, built here, that only adds the second test pass). The headline
  compares train+valid masking (RecBole's, the fair one: validation items are known positives).
* **Timing**: seconds per TRAINING epoch, evaluation excluded, on both sides the pass over the
  training batches including negative sampling: ours ``trainer._train_epoch`` timed around;
  MMRec the ``epoch N training [time: X s`` of its log (``_train_epoch`` + its per-epoch model
  hooks and lr-scheduler step). Every (library, model, seed, setting) is its own process, one at
  a time, one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``).

Steps::

    python benchmarks/mmrec_compare.py export --out /work/mmrec/data --mmrec /work/mmrec
    python benchmarks/mmrec_compare.py run --mmrec /work/mmrec            # the comparison
    python benchmarks/mmrec_compare.py run --mmrec /work/mmrec --epochs 2 --seeds 1 --grid off --name mmrec_smoke

``run`` exports first, keeps every child's log in ``--logs`` (default ``<mmrec>/recbole_tru_logs``)
and writes ``<out>/<name>.json``, ``.csv`` and ``.md`` (default ``benchmarks/results/mmrec``).
MMRec needs ``torch_geometric`` (MMGCN) on ``--pythonpath`` (e.g. ``pip install --no-deps
--target /work/mmrec-deps torch_geometric xxhash``); fixes its checkout needs on numpy 2 are
listed in the results' markdown (``MMREC_FIXES``).
"""
import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [p for p in (str(ROOT), str(HERE)) if p not in sys.path]

from unlearning_report import pm  # noqa: E402    (mean ± 95 % half-width, as every results table)

DATASET = "ml-100k-mm"
MODELS = ("VBPR", "MMGCN")
SEEDS = (1, 2, 3)
K = 20
TEXT_FILE, META_FILE = "text_feat.npy", "meta_feat.npy"
# our modality -> the npy file it is exported to (and re-imported from)
FEATURE_FILES = {"text": TEXT_FILE, "meta": META_FILE}
# our side: the data set's defaults (properties/, the settings tuned on validation by
# benchmarks/backbones.py included) at embedding size 64, MMRec's
OURS = {"VBPR": {"embedding_size": 64, "content_embedding_size": 64},
        "MMGCN": {"embedding_size": 64, "latent_dim": 64}}
MMREC = {"embedding_size": 64, "use_gpu": False, "save_recommended_topk": False}
# MMRec's grid (src/configs/model/<model>.yaml, hyper_parameters) and its point equal to our defaults
MMREC_GRID = {"VBPR": {"reg_weight": [2.0, 1.0, 1e-01, 1e-02, 1e-03, 1e-04, 1e-05]},
              "MMGCN": {"reg_weight": [0, 0.00001, 0.0001, 0.001, 0.01, 0.1],
                        "learning_rate": [0.0001, 0.0005, 0.001, 0.005, 0.01]}}
MMREC_FIXED = {"VBPR": {"reg_weight": 1e-05}, "MMGCN": {"reg_weight": 0.00001, "learning_rate": 0.001}}
GRID_MODES = ("once", "full", "off")
DEFAULT_GRID = "VBPR=once,MMGCN=off"
MMREC_VALID_METRIC = "recall@20"          # MMRec's valid_metric (src/configs/overall.yaml)
# what the MMRec checkout needed to run here (numpy 2, no torchvision/lmdb); see the docstring
MMREC_FIXES = ("src/utils/metrics.py: `np.float` -> `float` (4 places; removed in numpy 1.24)",
               "src/utils/dataset.py: dropped the unused imports of `utils.data_utils` (torchvision) and `lmdb`")
TV = "tv_"      # prefix of MMRec's test metrics with train+valid masked (the extra test pass)


# --------------------------------------------------------------------------- export
def our_split(dataset=DATASET, config_dict=None):
    """Our data and split as MMRec tables: ``(inter frame, {modality: float32 [n_items, dim]},
    user tokens, item tokens, the split in words)``; MMRec id k = RecBole internal id k + 1, row k of a feature
    matrix = itemID k, ``user_tokens[k]`` / ``item_tokens[k]`` = our token of MMRec id k."""
    import numpy as np
    import pandas as pd

    from recbole_tru.config import Config
    from recbole_tru.training import load_data

    config = Config(model="VBPR", dataset=dataset, read_cmd_line=False,
                    config_dict={"state": "WARNING", "show_progress": False, **(config_dict or {})})
    data, *loaders = load_data(config)
    uid, iid, tid = data.uid_field, data.iid_field, data.time_field
    frames = []
    for label, loader in enumerate(loaders):
        feat = loader.dataset.inter_feat
        frame = pd.DataFrame({"userID": feat[uid].numpy() - 1, "itemID": feat[iid].numpy() - 1, "rating": 1})
        if tid and tid in feat:
            frame["timestamp"] = feat[tid].numpy().astype(np.int64)
        frame["x_label"] = label
        frames.append(frame)
    features = {m: x[1:].numpy().astype(np.float32) for m, x in data.item_features.items()}
    split = f"RecBole eval_args split {config['eval_args']['split']}, seed {config['seed']}"
    return (pd.concat(frames, ignore_index=True), features,
            np.asarray(data.field2id_token[uid][1:]), np.asarray(data.field2id_token[iid][1:]), split)


def mmrec_yaml(name, data_root, split="RecBole's random 80/10/10 per user, seed 2020"):
    """MMRec's dataset config (src/configs/dataset/<name>.yaml) for the exported folder."""
    return (f"# MMRec dataset config for '{name}', written by recbole-tru's benchmarks/mmrec_compare.py:\n"
            f"# recbole-tru's data and split ({split}) in MMRec's format.\n"
            "# NOT VISUAL: MMRec has two feature slots, vision_feature_file and text_feature_file. The\n"
            "# second modality here is 'meta' (genre multi-hot + release-year buckets, 32-d); it sits in\n"
            "# MMRec's vision slot.\n"
            "USER_ID_FIELD: userID\nITEM_ID_FIELD: itemID\nTIME_FIELD: timestamp\n"
            "filter_out_cod_start_users: True\n"
            f"inter_file_name: '{name}.inter'\n"
            f"vision_feature_file: '{META_FILE}'   # the META modality, in MMRec's image slot\n"
            f"text_feature_file: '{TEXT_FILE}'\n"
            'field_separator: "\\t"\n'
            f"data_path: '{Path(data_root).resolve()}/'\n")


def export(out, dataset=DATASET, config_dict=None, mmrec=None):
    """Write MMRec's input folder ``<out>/<dataset>/`` from our data and split (and the dataset
    yaml into ``<mmrec>/src/configs/dataset/`` when ``mmrec`` is given). Returns {kind: Path}."""
    import numpy as np
    import pandas as pd

    from recbole_tru.files import atomic_write, write_text

    inter, features, users, items, split = our_split(dataset, config_dict)
    folder = Path(out) / dataset
    written = {"inter": atomic_write(folder / f"{dataset}.inter",
                                     lambda p: inter.to_csv(p, sep="\t", index=False), replace=True)}
    for modality, name in FEATURE_FILES.items():
        def save(p, matrix=features[modality]):
            with open(p, "wb") as f:
                np.save(f, matrix)
        written[modality] = atomic_write(folder / name, save, replace=True)
    for kind, tokens, columns in (("u_map", users, ("user_id", "userID")), ("i_map", items, ("item_id", "itemID"))):
        table = pd.DataFrame({columns[0]: tokens, columns[1]: np.arange(len(tokens))})    # MMRec's layout
        written[kind] = atomic_write(folder / f"{kind[0]}_id_mapping.csv",
                                     lambda p, t=table: t.to_csv(p, sep="\t", index=False), replace=True)
    text = mmrec_yaml(dataset, out, split)
    written["yaml"] = write_text(folder / "mmrec_dataset.yaml", text, replace=True)
    if mmrec is not None:
        written["mmrec_yaml"] = write_text(Path(mmrec) / "src" / "configs" / "dataset" / f"{dataset}.yaml", text,
                                           replace=True)
    return written


# --------------------------------------------------------------------------- our side (child)
def ranking_metrics(top, positives, k=K):
    """Recall@k and NDCG@k (RecBole's and MMRec's definitions: recall = hits / |positives|,
    IDCG over min(|positives|, k) positions), averaged over users.
    ``top``: int [n_users, >=k] ranked item ids; ``positives``: list of sets."""
    import numpy as np

    hits = np.array([[item in pos for item in row[:k]] for row, pos in zip(top, positives)], dtype=float)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    n_pos = np.array([len(p) for p in positives])
    idcg = np.array([discounts[:min(n, k)].sum() for n in n_pos])
    return {f"recall@{k}": float((hits.sum(1) / n_pos).mean()), f"ndcg@{k}": float(((hits @ discounts) / idcg).mean())}


def masked_test_metrics(model, train, valid, test, k=K):
    """Our model's test Recall/NDCG@k with train items masked (MMRec's reading) and with train
    and validation items masked (RecBole's), by one ranking code path."""
    import numpy as np

    from recbole_tru.data.retained import user_item_csr
    from recbole_tru.model.ranking import user_scores

    uid, iid, n_users = train.dataset.uid_field, train.dataset.iid_field, train.dataset.user_num
    pairs = {name: (d.dataset.inter_feat[uid].numpy(), d.dataset.inter_feat[iid].numpy())
             for name, d in (("train", train), ("valid", valid), ("test", test))}
    users = np.unique(pairs["test"][0])
    positives = {}
    for u, i in zip(*pairs["test"]):
        positives.setdefault(int(u), set()).add(int(i))
    out = {}
    for label, splits in (("train", ("train",)), ("train+valid", ("train", "valid"))):
        u = np.concatenate([pairs[s][0] for s in splits])
        i = np.concatenate([pairs[s][1] for s in splits])
        top = user_scores(model, users, user_item_csr(u, i, n_users)).topk(k, dim=1).indices.numpy()
        out[label] = ranking_metrics(top, [positives[int(x)] for x in users], k)
    return out


def measure_ours(model_name, seed, dataset=DATASET, extra=None):
    """Train and test one of our models in this process; a dict of figures."""
    from recbole_tru.config import Config
    from recbole_tru.registry import get_trainer
    from recbole_tru.training import build_model, fit_trainer, load_data, timed_train_epochs

    config = Config(model=model_name, dataset=dataset, read_cmd_line=False,
                    config_dict={"state": "WARNING", "show_progress": False, **OURS[model_name],
                                 **(extra or {}), "model_seed": seed})
    _, train, valid, test = load_data(config)
    model = build_model(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    seconds = timed_train_epochs(trainer)
    summary = fit_trainer(trainer, train, valid)
    recbole = {k: float(v) for k, v in trainer.evaluate(test, load_best_model=False).items()}
    both = masked_test_metrics(model, train, valid, test)
    return {"library": "ours", "model": model_name, "seed": seed, "setting": {},
            "test": {"train+valid": {f"recall@{K}": recbole[f"recall@{K}"], f"ndcg@{K}": recbole[f"ndcg@{K}"]},
                     "train": both["train"]},
            "test_own_ranking_train+valid": both["train+valid"],     # check: equals RecBole's evaluator
            "valid": summary["best_valid_result"], "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs"], "epoch_cap": int(config["epochs"]),
            "stopping_step": int(config["stopping_step"]), "seconds_per_epoch": seconds,
            "fit_seconds": summary["seconds"]}


# --------------------------------------------------------------------------- MMRec's side (child)
def run_mmrec_in_process(mmrec, model_name, config_dict):
    """Run MMRec's own ``quick_start`` in this process (cwd becomes ``<mmrec>/src``, as its
    ``main.py`` expects), with its Trainer replaced by a subclass whose test pass is also run
    with train+valid masked (extra metrics prefixed ``tv_``); everything else is MMRec's."""
    import torch
    torch.set_num_threads(1)
    src = Path(mmrec).resolve() / "src"
    os.chdir(src)
    sys.path.insert(0, str(src))
    import pandas as pd
    import utils.quick_start as mmrec_start          # MMRec's modules, from its checkout
    from common.trainer import Trainer
    from utils.dataloader import EvalDataLoader

    class BothMasksTrainer(Trainer):
        def fit(self, train_data, valid_data=None, test_data=None, saved=False, verbose=True):
            seen = pd.concat([train_data.dataset_bk.df, valid_data.dataset.df], ignore_index=True)
            self._test = test_data
            self._test_tv = EvalDataLoader(self.config, test_data.dataset,
                                           additional_dataset=train_data.dataset_bk.copy(seen),
                                           batch_size=self.config["eval_batch_size"])
            return super().fit(train_data, valid_data=valid_data, test_data=test_data, saved=saved, verbose=verbose)

        def _valid_epoch(self, data):
            score, result = super()._valid_epoch(data)
            if data is self._test:
                _, extra = super()._valid_epoch(self._test_tv)
                result = {**result, **{TV + k: v for k, v in extra.items()}}
            return score, result

    mmrec_start.get_trainer = lambda: BothMasksTrainer
    mmrec_start.quick_start(model=model_name, dataset=config_dict.pop("dataset", DATASET),
                            config_dict=config_dict, save_model=False)


# log lines of MMRec (src/common/trainer.py, src/utils/quick_start.py), after the logger's
# "%(asctime)-15s %(levelname)s " prefix; multi-line messages continue without a prefix
_COMBO = re.compile(r"=========(\d+)/(\d+): Parameters:(\[.*?\])=(\(.*?\))=======")
_TRAIN = re.compile(r"epoch (\d+) training \[time: ([\d.]+)s")
_EVAL = re.compile(r"epoch (\d+) evaluating \[time: ([\d.]+)s, valid_score: ([-\d.naif]+)\]")
_UPDATED = re.compile(r"--Best validation results updated!!!")
_FINISHED = re.compile(r"\+\+\+\+\+Finished training, best eval result in epoch (\d+)")
_BEST_VALID = re.compile(r"best valid result: (.*)$")
_TEST = re.compile(r"test result: (\S.*)$")
_METRIC = re.compile(r"([A-Za-z_]+@\d+): ([-\d.]+|nan)")
_OWN_BEST = re.compile(r"█ BEST █+\s*\n.*?Parameters: (\[.*?\])=(\(.*?\)),", re.S)


def _metrics(text):
    return {k: float(v) for k, v in _METRIC.findall(text)}


def parse_mmrec_log(text):
    """MMRec's log -> one record per hyper-parameter combination: ``{"parameters": {name: value},
    "seconds_per_epoch": [train seconds per epoch], "eval_seconds": [...], "epochs": n,
    "best_epoch": the last epoch whose validation improved (0-based, as MMRec counts),
    "finished_epoch": MMRec's early-stop line (None when the epoch cap ended the run),
    "valid": best valid metrics, "test": test metrics at that epoch}`` (MMRec rounds to 4 places)."""
    import ast

    records, current, last_eval = [], None, None
    lines = text.splitlines()
    for n, line in enumerate(lines):
        combo = _COMBO.search(line)
        if combo:
            names, values = ast.literal_eval(combo.group(3)), ast.literal_eval(combo.group(4))
            current = {"index": int(combo.group(1)), "of": int(combo.group(2)),
                       "parameters": dict(zip(names, values)), "seconds_per_epoch": [], "eval_seconds": [],
                       "best_epoch": None, "finished_epoch": None, "valid": None, "test": None}
            records.append(current)
            continue
        if current is None:
            continue
        if m := _TRAIN.search(line):
            current["seconds_per_epoch"].append(float(m.group(2)))
        elif m := _EVAL.search(line):
            last_eval = int(m.group(1))
            current["eval_seconds"].append(float(m.group(2)))
        elif _UPDATED.search(line):
            current["best_epoch"] = last_eval
        elif m := _FINISHED.search(line):
            current["finished_epoch"] = int(m.group(1))
        elif m := _BEST_VALID.search(line):
            current["valid"] = _metrics(m.group(1))
            for later in lines[n + 1:n + 3]:
                if t := _TEST.search(later):
                    current["test"] = _metrics(t.group(1))
                    break
    for r in records:
        r["epochs"] = len(r["seconds_per_epoch"])
    own = _OWN_BEST.search(text)
    return records, (dict(zip(ast.literal_eval(own.group(1)), ast.literal_eval(own.group(2)))) if own else None)


def mmrec_record(record, model_name, seed):
    """A parsed MMRec combination as a result row like ours."""
    test = record["test"] or {}
    return {"library": "MMRec", "model": model_name, "seed": seed,
            "setting": {k: v for k, v in record["parameters"].items() if k != "seed"},
            "test": {"train+valid": {m: test.get(TV + m) for m in (f"recall@{K}", f"ndcg@{K}")},
                     "train": {m: test.get(m) for m in (f"recall@{K}", f"ndcg@{K}")}},
            "valid": record["valid"], "best_epoch": record["best_epoch"], "epochs": record["epochs"],
            "finished_epoch": record["finished_epoch"], "seconds_per_epoch": record["seconds_per_epoch"],
            "eval_seconds": record["eval_seconds"]}


# --------------------------------------------------------------------------- the run
def child(args, mode, env, cwd, log_path):
    """Run this script in ``mode`` as a child process; its combined output goes to ``log_path``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({log_path}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, time.perf_counter() - start


def single_thread_env(pythonpath=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMEXPR_MAX_THREADS="1", PYTHONHASHSEED="0")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_ours(model_name, seed, logs, extra):
    cwd = logs / "recbole"
    cwd.mkdir(parents=True, exist_ok=True)           # RecBole writes log/ and saved/ into its cwd
    text, wall = child(["--model", model_name, "--seed", str(seed), "--config", json.dumps(extra)], "ours-one",
                       single_thread_env(), cwd, logs / f"ours-{model_name}-seed{seed}.log")
    line = [x for x in text.splitlines() if x.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT "):]), "wall_seconds": wall}


def run_mmrec(mmrec, pythonpath, model_name, seed, grid, logs, extra, reuse=False):
    """One MMRec process over ``grid`` (``{name: [values]}``) at ``seed``: (records, MMRec's own pick)."""
    config = {**MMREC, **extra, "seed": [seed], **grid}
    tag = "grid" if any(len(v) > 1 for v in grid.values()) else "point"
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    log_path = logs / f"mmrec-{model_name}-seed{seed}-{tag}-{key}.log"
    if reuse and log_path.is_file():       # the same MMRec run (same config) finished before: read its log
        text, wall = log_path.read_text(encoding="utf-8"), float("nan")
        print(f"[reuse] {log_path}", flush=True)
    else:
        text, wall = child(["--mmrec", str(mmrec), "--model", model_name, "--config", json.dumps(config)],
                           "mmrec-one", single_thread_env(pythonpath), Path(mmrec) / "src", log_path)
    records, own = parse_mmrec_log(text)
    n = 1
    for values in grid.values():
        n *= len(values)
    if len(records) != n or any(r["test"] is None for r in records):
        raise RuntimeError(f"MMRec log of {model_name} seed {seed}: {len(records)} of {n} settings parsed")
    return [{**mmrec_record(r, model_name, seed), "wall_seconds": wall / n} for r in records], own


def grid_modes(text, models):
    """``--grid``: one mode for every model (``once``) or per model (``VBPR=once,MMGCN=off``)."""
    modes = {}
    for part in filter(None, text.split(",")):
        model_name, _, mode = part.rpartition("=")
        if mode not in GRID_MODES or (model_name and model_name not in MMREC_GRID):
            raise SystemExit(f"--grid: {part!r} is not MODE or MODEL=MODE with MODE one of {', '.join(GRID_MODES)}")
        for m in ([model_name] if model_name else models):
            modes[m] = mode
    missing = [m for m in models if m not in modes]
    if missing:
        raise SystemExit(f"--grid names no mode for {', '.join(missing)}")
    return {m: modes[m] for m in models}


def per_model_seeds(text, models, seeds):
    """``--mmrec-seeds``: empty = every seed for every model; ``MMGCN=1`` = MMRec's MMGCN at seed 1
    only (our side still runs every seed)."""
    out = {m: list(seeds) for m in models}
    for part in filter(None, (text or "").split(",")):
        model_name, _, chosen = part.partition("=")
        if model_name not in out or not chosen:
            raise SystemExit(f"--mmrec-seeds: {part!r} is not MODEL=SEED[+SEED...] for a model of --models")
        out[model_name] = [int(x) for x in chosen.split("+")]
        if not set(out[model_name]) <= set(seeds):
            raise SystemExit(f"--mmrec-seeds: {part!r} names a seed outside --seeds")
    return out


def pick_on_validation(rows):
    """The row with the best validation Recall@20 (MMRec's valid_metric); first on ties."""
    return max(rows, key=lambda r: (r["valid"] or {}).get(MMREC_VALID_METRIC, -1.0))


def compare(args):
    logs = Path(args.logs or Path(args.mmrec) / "recbole_tru_logs").resolve()
    data_root = Path(args.data or Path(args.mmrec) / "data").resolve()
    ours_extra, mmrec_config = json.loads(args.config), json.loads(args.mmrec_config)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    # --mmrec-config: keys for every model, and {"<model>": {...}} for one model only
    mmrec_extras = {m: {**{k: v for k, v in mmrec_config.items() if k not in MMREC_GRID},
                        **mmrec_config.get(m, {})} for m in models}
    if args.epochs:
        ours_extra["epochs"] = args.epochs
        for extra in mmrec_extras.values():
            extra["epochs"] = args.epochs
    mmrec_seeds = per_model_seeds(args.mmrec_seeds, models, seeds)
    pythonpath = [p for p in args.pythonpath.split(os.pathsep) if p]
    start = time.perf_counter()
    export(data_root, DATASET, mmrec=args.mmrec)
    rows, grids, own_picks = [], {}, {}
    modes = grid_modes(args.grid, models)
    for model_name in models:
        mode = modes[model_name]
        grid = {k: [v] for k, v in MMREC_FIXED[model_name].items()} if mode == "off" else MMREC_GRID[model_name]
        picked, mmrec_extra = None, mmrec_extras[model_name]
        for n, seed in enumerate(seeds):
            if seed not in mmrec_seeds[model_name]:
                pass                # MMRec at fewer seeds than ours (--mmrec-seeds)
            elif mode == "full" or (mode == "once" and n == 0) or mode == "off":
                runs, own = run_mmrec(args.mmrec, pythonpath, model_name, seed, grid, logs, mmrec_extra,
                                      args.reuse_logs)
                best = pick_on_validation(runs)
                if mode != "off":
                    grids.setdefault(model_name, []).extend(runs)
                    own_picks.setdefault(model_name, []).append({"seed": seed, "by_test": own,
                                                                 "by_valid": best["setting"]})
                picked = picked or best["setting"]
            else:      # --grid once, later seeds: the first seed's pick
                (best,), _ = run_mmrec(args.mmrec, pythonpath, model_name, seed,
                                       {k: [v] for k, v in picked.items()}, logs, mmrec_extra, args.reuse_logs)
            if seed in mmrec_seeds[model_name]:
                rows.append(best)
                print(json.dumps(_brief(best)), flush=True)
            ours = run_ours(model_name, seed, logs, ours_extra)
            rows.append(ours)
            print(json.dumps(_brief(ours)), flush=True)
    report = {"command": "python benchmarks/mmrec_compare.py " + " ".join(args.argv),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "mmrec_commit": _git_head(args.mmrec), "mmrec_fixes": list(MMREC_FIXES), "grid": modes,
              "seeds": seeds, "mmrec_seeds": mmrec_seeds, "mmrec_config": mmrec_extras,
              "wall_seconds": time.perf_counter() - start, "data": str(data_root / DATASET),
              "summary": summarise(rows), "rows": rows, "mmrec_grid_runs": grids, "mmrec_own_pick": own_picks}
    return report


def _brief(row):
    seconds = statistics.median(row["seconds_per_epoch"]) if row["seconds_per_epoch"] else None
    return {k: row[k] for k in ("library", "model", "seed", "setting", "best_epoch", "epochs", "test")} | {
        "s/epoch": seconds}


def _git_head(path):
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None


# --------------------------------------------------------------------------- the report
MASKS = ("train+valid", "train")


def summarise(rows):
    """Per (library, model): metrics' mean and 95 % t-interval over seeds under both maskings,
    best epochs, epochs run, the median training-epoch seconds (all epochs of all seeds);
    per model: the MMRec / ours seconds ratio and the NDCG@20 reading."""
    from recbole_tru.stats import t_interval

    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["library"]), []).append(r)
    out = {}
    for (model_name, library), runs in groups.items():
        entry = {"seeds": [r["seed"] for r in runs], "settings": [r["setting"] for r in runs],
                 "best_epoch": [r["best_epoch"] for r in runs], "epochs": [r["epochs"] for r in runs],
                 "seconds_per_epoch_median": statistics.median(s for r in runs for s in r["seconds_per_epoch"])}
        if library == "ours":
            entry["epoch_cap_hit"] = [r["epochs"] >= r["epoch_cap"] for r in runs]
        else:
            entry["stopped_early"] = [r["finished_epoch"] is not None for r in runs]
        for mask in MASKS:
            for metric in (f"recall@{K}", f"ndcg@{K}"):
                entry[f"{metric} ({mask})"] = t_interval([r["test"][mask][metric] for r in runs])
        out.setdefault(model_name, {})[library] = entry
    for model_name, sides in out.items():
        if {"ours", "MMRec"} <= set(sides):
            ours, mmrec = sides["ours"], sides["MMRec"]
            sides["seconds_ratio_mmrec_over_ours"] = (mmrec["seconds_per_epoch_median"]
                                                      / ours["seconds_per_epoch_median"])
            for mask in MASKS:
                sides[f"ndcg@{K} ({mask})"] = ndcg_reading(
                    [r["test"][mask][f"ndcg@{K}"] for r in groups[(model_name, "ours")]],
                    [r["test"][mask][f"ndcg@{K}"] for r in groups[(model_name, "MMRec")]])
    return out


def ndcg_reading(ours, mmrec):
    """Ours against MMRec on one metric over seeds: the mean difference, the seed spread (the
    larger of the two sides' max - min) and the reading: ``at least`` (ours' mean is not lower),
    ``within spread`` (lower by at most the spread) or ``below``."""
    diff = statistics.fmean(ours) - statistics.fmean(mmrec)
    spread = max(max(ours) - min(ours), max(mmrec) - min(mmrec))
    reading = "at least" if diff >= 0 else ("within spread" if -diff <= spread else "below")
    return {"mean_difference": diff, "spread": spread, "reading": reading}


def _epochs_run(entry):
    """Epochs run per seed, ``*`` where the epoch cap, not early stopping, ended the run."""
    capped = entry.get("epoch_cap_hit") or [not x for x in entry.get("stopped_early", [])]
    return [f"{n}{'*' if cap else ''}" for n, cap in zip(entry["epochs"], capped)]


def _ours_rule(report):
    ours = [r for r in report["rows"] if r["library"] == "ours"]
    steps = sorted({r["stopping_step"] for r in ours}) or ["?"]
    caps = sorted({r["epoch_cap"] for r in ours}) or ["?"]
    return f"{'/'.join(map(str, steps))}, at most {'/'.join(map(str, caps))} epochs,"


def _mmrec_caps(report):
    """MMRec's epoch cap per model: its default 1000 unless --mmrec-config set one."""
    caps = {m: (extra or {}).get("epochs", 1000) for m, extra in (report.get("mmrec_config") or {}).items()}
    if len(set(caps.values())) <= 1:
        return str(next(iter(caps.values()), 1000))
    return ", ".join(f"{cap} ({m})" for m, cap in caps.items())


def markdown(report):
    s = report["summary"]
    grid = ", ".join(f"{m} {g}" for m, g in report["grid"].items())
    lines = [f"`{report['command']}` ({report['wall_seconds'] / 60:.1f} min, {report['machine']}; MMRec "
             f"{(report['mmrec_commit'] or '?')[:10]}, grid: {grid}). Test metrics at each run's best "
             "validation epoch, mean ± 95 % t-interval over the seeds; \"masked\" = the user's items removed "
             "from the ranking before the top 20 is taken.", "",
             "| library | model | seeds | test Recall@20 (train+valid masked) | test NDCG@20 (train+valid masked) "
             "| test Recall@20 (train masked, MMRec's) | test NDCG@20 (train masked) | best epoch | epochs run "
             "| s / train epoch (median) | s / epoch MMRec / ours |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_name, sides in s.items():
        for library in ("MMRec", "ours"):
            if library not in sides:
                continue
            e = sides[library]
            ratio = sides.get("seconds_ratio_mmrec_over_ours")
            lines.append(
                f"| {library} | {model_name} | {', '.join(map(str, e['seeds']))} "
                f"| {pm(e[f'recall@{K} (train+valid)'])} | {pm(e[f'ndcg@{K} (train+valid)'])} "
                f"| {pm(e[f'recall@{K} (train)'])} | {pm(e[f'ndcg@{K} (train)'])} "
                f"| {' / '.join(map(str, e['best_epoch']))} | {' / '.join(_epochs_run(e))} "
                f"| {e['seconds_per_epoch_median']:.3f} | {f'{ratio:.2f}' if ratio and library == 'MMRec' else ''} |")
    lines += ["", "Reading of test NDCG@20, ours against MMRec (spread = the larger seed range, max - min):", ""]
    for model_name, sides in s.items():
        for mask in MASKS:
            r = sides.get(f"ndcg@{K} ({mask})")
            if r:
                lines.append(f"* {model_name}, {mask} masked: ours - MMRec = {r['mean_difference']:+.4f} "
                             f"(spread {r['spread']:.4f}): **{r['reading']}**")
    settings = [f"{m}: " + "; ".join(f"seed {seed}: {setting}"
                                     for seed, setting in zip(sides["MMRec"]["seeds"], sides["MMRec"]["settings"]))
                for m, sides in s.items() if "MMRec" in sides]
    lines += ["", "MMRec's setting per seed (picked on validation Recall@20 unless the grid was off): "
              + " | ".join(settings) + ".",
              "Best epoch: 0-based on both sides (RecBole's and MMRec's epoch index). Ours stops after "
              f"{_ours_rule(report)} validations without a better NDCG@20; MMRec after 20 without a better "
              f"Recall@20, at most {_mmrec_caps(report)} epochs; * = the epoch cap, not early stopping, ended the run. "
              "Seconds per training epoch exclude evaluation on both sides (median over all epochs of all seeds).", "",
              "MMRec checkout changes made to run it here: " + "; ".join(report["mmrec_fixes"]) + "."]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("library", "model", "seed", "setting", f"test_recall@{K}_train+valid_masked",
              f"test_ndcg@{K}_train+valid_masked", f"test_recall@{K}_train_masked", f"test_ndcg@{K}_train_masked",
              "best_epoch", "epochs", "seconds_per_train_epoch_median")


def csv_text(rows):
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        writer.writerow([r["library"], r["model"], r["seed"], json.dumps(r["setting"]),
                         r["test"]["train+valid"][f"recall@{K}"], r["test"]["train+valid"][f"ndcg@{K}"],
                         r["test"]["train"][f"recall@{K}"], r["test"]["train"][f"ndcg@{K}"],
                         r["best_epoch"], r["epochs"], statistics.median(r["seconds_per_epoch"])])
    return buffer.getvalue()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    ex = steps.add_parser("export", help="write MMRec's input folder from our data and split")
    ex.add_argument("--out", required=True, help="MMRec's data folder (data_path); the data set goes to OUT/<dataset>")
    ex.add_argument("--mmrec", help="MMRec checkout: also write src/configs/dataset/<dataset>.yaml there")
    ex.add_argument("--dataset", default=DATASET)
    ex.add_argument("--config", default="{}", help="JSON dict of extra config for our side (data_path, ...)")
    run = steps.add_parser("run", help="export, then train MMRec's and our VBPR and MMGCN, one process at a time")
    run.add_argument("--mmrec", required=True, help="MMRec checkout (outside this repository)")
    run.add_argument("--pythonpath", default="/work/mmrec-deps",
                     help="extra import path for MMRec's children (torch_geometric for its MMGCN)")
    run.add_argument("--data", help="where the MMRec data set is written (default <mmrec>/data)")
    run.add_argument("--logs", help="every child's log (default <mmrec>/recbole_tru_logs)")
    run.add_argument("--models", default=",".join(MODELS))
    run.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    run.add_argument("--epochs", type=int, help="cap both sides' epochs (smoke runs); default: each side's own")
    run.add_argument("--grid", default=DEFAULT_GRID,
                     help="MMRec's grid per model: searched with the first seed (once), with every seed (full), "
                          "or off: the grid point equal to our defaults; MODE or MODEL=MODE,... "
                          f"(default {DEFAULT_GRID}: MMRec's MMGCN costs ~30 s per CPU epoch, its 30-point grid "
                          "days)")
    run.add_argument("--config", default="{}", help="JSON dict of extra config for our side")
    run.add_argument("--mmrec-config", default="{}",
                     help='JSON dict of extra config for MMRec; {"MMGCN": {...}} applies to one model only')
    run.add_argument("--mmrec-seeds", default="",
                     help="MMRec at fewer seeds than ours, per model: e.g. MMGCN=1 (seeds joined by +)")
    run.add_argument("--reuse-logs", action="store_true",
                     help="read an MMRec run's log from --logs instead of running it again where the same run "
                          "(model, seed, settings) finished before (its wall seconds are then unknown)")
    run.add_argument("--out", default=str(HERE / "results"))
    run.add_argument("--name", default="mmrec")
    one = steps.add_parser("ours-one")       # internal: one of our runs in this process
    one.add_argument("--model", required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--dataset", default=DATASET)
    one.add_argument("--config", default="{}")
    mm = steps.add_parser("mmrec-one")       # internal: one MMRec quick_start in this process
    mm.add_argument("--mmrec", required=True)
    mm.add_argument("--model", required=True)
    mm.add_argument("--config", default="{}")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.step == "export":
        written = export(args.out, args.dataset, json.loads(args.config), args.mmrec)
        print("\n".join(f"{k}: {v}" for k, v in written.items()))
        return written
    if args.step == "ours-one":
        import torch
        torch.set_num_threads(1)
        print("RESULT " + json.dumps(measure_ours(args.model, args.seed, args.dataset, json.loads(args.config))))
        return None
    if args.step == "mmrec-one":
        run_mmrec_in_process(args.mmrec, args.model, json.loads(args.config))
        return None
    from recbole_tru.files import write_texts

    report = compare(args)
    texts = (("json", json.dumps(report, indent=1)), ("csv", csv_text(report["rows"])), ("md", markdown(report)))
    write_texts(Path(args.out), args.name, texts)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
