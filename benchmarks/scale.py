"""Scale benchmark on SYNTHETIC data sets with the counts of Amazon Baby, Sports and Clothing
(:mod:`recbole_tru.data.builders.synthetic`; missing data sets are generated first).

Sub-benchmarks (``--bench``, comma separated):

* ``load``    -- reading each feature file: text parse vs the binary cache (first read, which
  parses and writes the cache, and later reads); median of ``--repeats`` reads.
* ``train``   -- seconds per training epoch (median over ``--train-epochs`` epochs, validation
  excluded), one full-sort validation pass, and peak memory of VBPR, MMGCN and RecBole's
  LightGCN on the same data, split and batch size.
* ``unlearn`` -- per data size and backbone, ONE process trains the original model, then for
  each forget-set size runs ``retrain`` (once: it is a whole training) and the approximate
  methods ``--repeats`` times each (median). Sizes of the forget set: ``--fixed-forget``
  interactions at every data size, and ``--forget-sweep`` (counts, or a share like 0.05) at
  ``--sweep-size``. Original and retrained models use the same stopping rule
  (``--epochs``, ``--stopping-step``, validation every epoch).

Every measurement runs in its own subprocess; peak memory is that process's ``ru_maxrss``.
Writes ``scale.json``, ``scale.md``, ``scale_train.png`` and ``scale_unlearn.png`` to ``--out``
(default ``benchmarks/results``). RecBole's logs go to ``--out``/``runs-scale-*``.

    python benchmarks/scale.py                               # everything (see scale.md for the time)
    python benchmarks/scale.py --bench unlearn --sizes baby --models VBPR
    python benchmarks/scale.py --sizes tiny --out /tmp/s     # smoke size, seconds
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_tru.provenance import environment  # noqa: E402

DEFAULT_DATA = ROOT / "benchmarks" / "data"
SIZES = ("baby", "sports", "clothing")
TRAIN_MODELS = ("VBPR", "MMGCN", "LightGCN")
APPROXIMATE = ("tru", "reverse", "finetune")
RECALL, NDCG = "recall@20", "ndcg@20"


# ------------------------------------------------------------------------------ helpers

def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_data(size, data_dir, log=print):
    """The data set folder of ``size`` (generated when missing); returns (folder, seconds or None)."""
    from recbole_tru.data.builders.synthetic import build_synthetic, dataset_name

    folder = Path(data_dir) / dataset_name(size)
    if (folder / "README.md").is_file():
        return folder, None
    start = time.perf_counter()
    build_synthetic(size, data_dir, log=log)
    return folder, time.perf_counter() - start


def make_config(size, data_dir, model, extra=None):
    import yaml

    from recbole_tru.config import Config
    from recbole_tru.data.builders.synthetic import dataset_name

    name = dataset_name(size)
    folder = Path(data_dir) / name
    params = yaml.safe_load((folder / f"{name}.yaml").read_text())
    params.update({"data_path": str(Path(data_dir)), "state": "WARNING", "show_progress": False,
                   "unlearn_trajectory": False, "unlearn_cache": False, "audit_enabled": False})
    if model not in ("VBPR", "MMGCN"):
        params["modalities"] = None                   # ID-only peers read no feature files
        params["feature_dims"] = None
    params.update(extra or {})
    return Config(model=model, dataset=name, config_dict=params, read_cmd_line=False)


# ------------------------------------------------------------------------------ measurements (in a subprocess)

def measure_load(task):
    """Text read vs cached read of one feature file."""
    from recbole_tru.data.features import cache_path, read_feature_file

    path = Path(task["path"])
    out = {"bytes": path.stat().st_size}
    if task["mode"] == "text":
        times = []
        for _ in range(task["repeats"]):
            start = time.perf_counter()
            _, matrix = read_feature_file(path, cache=False)
            times.append(time.perf_counter() - start)
        out.update(seconds=statistics.median(times), all_seconds=times, shape=list(matrix.shape))
    elif task["mode"] == "build":
        cache_path(path).unlink(missing_ok=True)
        start = time.perf_counter()
        read_feature_file(path, cache=True)
        out.update(seconds=time.perf_counter() - start, cache_bytes=cache_path(path).stat().st_size)
    else:
        times = []
        for _ in range(task["repeats"]):
            start = time.perf_counter()
            read_feature_file(path, cache=True)
            times.append(time.perf_counter() - start)
        out.update(seconds=statistics.median(times), all_seconds=times)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def measure_train(task):
    """Median seconds per training epoch, one validation pass, peak memory."""
    from recbole_tru.quick_start import build_model, load_data
    from recbole_tru.registry import get_trainer

    config = make_config(task["size"], task["data"], task["model"], task.get("config"))
    start = time.perf_counter()
    _, train, valid, _ = load_data(config)
    load_seconds = time.perf_counter() - start
    model = build_model(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epochs = []
    for epoch in range(task["epochs"]):
        start = time.perf_counter()
        trainer._train_epoch(train, epoch, show_progress=False)
        epochs.append(time.perf_counter() - start)
    start = time.perf_counter()
    trainer.evaluate(valid, load_best_model=False)
    return {"seconds_per_epoch": statistics.median(epochs), "epoch_seconds": epochs,
            "valid_seconds": time.perf_counter() - start, "load_seconds": load_seconds,
            "n_train": len(train.dataset), "peak_rss_mb": peak_rss_mb()}


def measure_step(task):
    """MMGCN step costs: a TRU-like step (256 forget pairs + 256 retained pairs of the same users,
    dense layers frozen as TRU freezes them) with the restricted propagation and with the full
    graph, a rank check (full-sort scores of 1,000 users after a change), and a training step
    (one 2048 batch, everything trainable); medians of ``repeats`` after one warm-up."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from recbole.data.interaction import Interaction

    from recbole_tru.model.mmgcn import MMGCN, PropagationPlan, _Graph
    from recbole_tru.quick_start import build_model, load_data
    from recbole_tru.unlearn.capacity import describe

    config = make_config(task["size"], task["data"], "MMGCN", task.get("config"))
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset)
    ds = train.dataset
    users, items = ds.inter_feat[ds.uid_field].numpy(), ds.inter_feat[ds.iid_field].numpy()
    rng = np.random.default_rng(0)
    params = dict(model.named_parameters())

    def timed(fn):
        fn()
        times = []
        for _ in range(task["repeats"]):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def step(u, pos, neg):
        def run():
            pos_s, neg_s = model.pair_scores(u, pos, neg)
            (-F.logsigmoid(pos_s - neg_s).mean()).backward()
            model.zero_grad(set_to_none=True)
        return run

    forget = rng.choice(len(users), min(256, len(users) // 4), replace=False)
    retain = rng.choice(np.flatnonzero(np.isin(users, users[forget])), 256)
    rows = np.concatenate([forget, retain])
    u, pos = torch.from_numpy(users[rows]), torch.from_numpy(items[rows])
    neg = torch.from_numpy(rng.integers(1, model.n_items, len(rows)))
    for name in describe(model).dense(model):
        params[name].requires_grad_(False)
    nodes = torch.cat([u, pos + model.n_users, neg + model.n_users]).numpy()
    plan = PropagationPlan(_Graph(model.adjacency, int(config["n_layers"])), nodes)
    out = {"n_nodes": model.n_users + model.n_items, "plan_nodes": [len(x) for x in plan.nodes],
           "plan_cost": plan.cost}
    model.RESTRICT_COST = MMGCN.RESTRICT_COST
    out["tru_step_restricted"] = timed(step(u, pos, neg))
    model.RESTRICT_COST = 0.0
    out["tru_step_full"] = timed(step(u, pos, neg))
    model.RESTRICT_COST = MMGCN.RESTRICT_COST
    check_users = np.unique(users)
    check_users = torch.from_numpy(rng.choice(check_users, min(1000, len(check_users)), replace=False))

    def check():
        with torch.no_grad():
            params["preference." + model.modalities[0] + ".weight"][1] += 0.0   # a step happened
        model.eval()
        with torch.no_grad():
            model.full_sort_predict(Interaction({model.USER_ID: check_users}))
        model.train()
    out["check_1000_users"] = timed(check)
    for p in params.values():
        p.requires_grad_(True)
    batch = rng.choice(len(users), min(2048, len(users)), replace=False)
    out["train_step"] = timed(step(torch.from_numpy(users[batch]), torch.from_numpy(items[batch]),
                                   torch.from_numpy(rng.integers(1, model.n_items, len(batch)))))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _forget_config(config, n_train, forget):
    """Set ``forget_share`` so that the interaction regime draws exactly ``forget`` pairs
    (an int) or that share (a float < 1) of the training interactions."""
    share = forget if isinstance(forget, float) and forget < 1 else int(forget) / n_train
    config["forget_regime"] = "interaction"
    config["forget_share"] = share
    return max(1, round(share * n_train))


def measure_unlearn(task):
    """Original model, then per forget size: retrain once and each method ``repeats`` times."""
    import numpy as np

    from recbole_tru.quick_start import load_data
    from recbole_tru.registry import UNLEARNERS
    from recbole_tru.unlearn import pipeline
    from recbole_tru.unlearn.data import UnlearnData
    from recbole_tru.unlearn.evaluation import Judge
    from recbole_tru.unlearn.forget import select_forget

    if not task.get("restrict", True):
        from recbole_tru.model.mmgcn import MMGCN

        MMGCN.RESTRICT_COST = 0.0                     # always propagate the full graph
    config = make_config(task["size"], task["data"], task["model"], task.get("config"))
    _, train, valid, test = load_data(config)
    n_train = len(train.dataset)
    config["unlearn_cache"] = bool(task.get("cache"))
    original, summary, cached = pipeline.train_reference(config, (train, valid), task.get("cache"), "original")
    config["unlearn_cache"] = False
    result = {"n_train": n_train, "original": {k: summary[k] for k in ("seconds", "epochs", "best_epoch")},
              "original_cached": cached, "restrict": task.get("restrict", True), "forget": []}
    for spec in task["forgets"]:
        target = _forget_config(config, n_train, spec["forget"])
        forget = select_forget(config, train.dataset)
        data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
        row = {"forget": spec["forget"], "n_forget": len(forget), "expected": target,
               "users_touched": int(len(np.unique(forget.users))), "methods": {}}
        judge = None
        if spec.get("retrain"):
            model, trainer, _ = pipeline.unlearn_method(config, "retrain", data, original)
            judge = Judge(config, data, model)
            row["methods"]["retrain"] = {"seconds": trainer.seconds, "runs": [trainer.seconds],
                                         "epochs": trainer.summary["epochs"], **_quality(judge.reference)}
        variants = task.get("variants", {}) if spec.get("retrain") else {}
        for name in list(spec["methods"]) + list(variants):
            method = name.split("[")[0]
            if method not in UNLEARNERS or (method == "sisa" and not _sisa_available()):
                row["methods"][name] = {"seconds": None, "note": "not available"}
                continue
            runs, extra, phases = [], {}, []
            overrides = variants.get(name, {})
            saved = {k: config[k] for k in overrides}
            for key, value in overrides.items():
                config[key] = value
            for _ in range(1 if method == "sisa" else task["repeats"]):
                with phase_timer(method) as timer:
                    model, trainer, _ = pipeline.unlearn_method(config, method, data, original)
                runs.append(trainer.seconds)
                phases.append(timer)
                extra = {k: getattr(trainer, k) for k in ("stop_reason",) if hasattr(trainer, k)}
                if hasattr(trainer, "checks"):
                    extra["checks"] = sum(1 for c in trainer.checks if "distance" in c)
                    extra["steps"] = getattr(trainer, "step", None)
            entry = {"seconds": statistics.median(runs), "runs": runs, **extra}
            if overrides:
                entry["config"] = overrides
            if method == "tru":
                entry["phases"] = phases[runs.index(entry["seconds"])] if entry["seconds"] in runs else phases[0]
                if task.get("profile") and name == "tru":
                    entry["profile"] = profile_run(config, data, original)
            for key, value in saved.items():
                config[key] = value
            if judge is not None:
                entry.update(_quality(judge.metrics(model)))
            row["methods"][name] = entry
        result["forget"].append(row)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


class phase_timer:
    """Seconds TRU spends in each part of a run (reset, rank checks, targeted steps, repair),
    from wrappers around its methods while the block runs (other methods: nothing)."""

    PARTS = {"reset": "reset_owned_capacity", "checks": "check", "epochs": "_train_epoch",
             "repair_rows": "repair_rows"}

    def __init__(self, name):
        self.name = name
        self.times = {}

    def __enter__(self):
        if self.name != "tru":
            return self.times
        from recbole_tru.unlearn.tru import TRUTrainer

        self.originals = {}
        times = self.times

        for part, attr in self.PARTS.items():
            original = getattr(TRUTrainer, attr)
            self.originals[attr] = original

            def wrapped(trainer, *args, _original=original, _part=part, **kwargs):
                key = _part if _part != "epochs" else f"{trainer.phase}_epochs"
                start = time.perf_counter()
                try:
                    return _original(trainer, *args, **kwargs)
                finally:
                    times[key] = times.get(key, 0.0) + time.perf_counter() - start

            setattr(TRUTrainer, attr, wrapped)
        return self.times

    def __exit__(self, *exc):
        if self.name == "tru":
            from recbole_tru.unlearn.tru import TRUTrainer

            for attr, original in self.originals.items():
                setattr(TRUTrainer, attr, original)
        # targeted epochs include the checks run inside them: report the steps apart
        if "targeted_epochs" in self.times:
            self.times["targeted_steps"] = self.times["targeted_epochs"] - self.times.get("checks", 0.0)
        return False


def profile_run(config, data, original, top=25):
    """One extra TRU run under cProfile: the functions with the most cumulative time."""
    import cProfile
    import io
    import pstats

    from recbole_tru.unlearn import pipeline

    profiler = cProfile.Profile()
    profiler.enable()
    pipeline.unlearn_method(config, "tru", data, original)
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(top)
    return buffer.getvalue()


def _quality(metrics):
    return {"test_ndcg@20": metrics["retain"][NDCG], "forget_recall@20": metrics["forget"][RECALL]}


def _sisa_available():
    try:
        from recbole_tru.unlearn import sisa  # noqa: F401
    except Exception:
        return False
    return True


MEASURES = {"load": measure_load, "train": measure_train, "unlearn": measure_unlearn, "step": measure_step}


def run_one(task, out_dir, inline=False):
    """Run ``task`` in a fresh subprocess (cwd = a run folder: RecBole writes log/ there), or
    in this process with ``inline`` (smoke tests: no per-process memory figure then)."""
    if inline:
        return MEASURES[task["kind"]](task)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(task)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out_dir, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{task['kind']} {task.get('size')} {task.get('model', '')} failed:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------ orchestration

def parse_forget(text):
    return [float(x) if "." in x else int(x) for x in text.split(",") if x]


def plan_unlearn(args):
    """One task per (size, backbone): the fixed-size request at every size, the sweep at one."""
    tasks = []
    for size in args.sizes:
        for model in args.models:
            fixed = [m for m in args.methods if m != "sisa" or size in args.sisa_sizes]
            forgets = [{"forget": args.fixed_forget, "retrain": True, "methods": fixed}]
            if size == args.sweep_size:
                for f in args.forget_sweep:
                    if f == args.fixed_forget:
                        continue
                    forgets.append({"forget": f, "retrain": isinstance(f, float) and args.retrain_share,
                                    "methods": [m for m in args.sweep_methods if m in args.methods]})
            tasks.append({"kind": "unlearn", "size": size, "model": model, "forgets": forgets,
                          "repeats": args.repeats, "config": args.train_config, "profile": args.profile,
                          "cache": args.cache and str(Path(args.cache).resolve()), "restrict": args.restrict,
                          "variants": args.variants})
    return tasks


def run(args):
    out = Path(args.out)
    runs = out / f"runs-scale-{time.strftime('%Y%m%d-%H%M%S')}"
    runs.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "environment": environment(), "command": "python benchmarks/scale.py " + " ".join(args.argv),
              "synthetic": "all data sets are SYNTHETIC (recbole_tru.data.builders.synthetic)",
              "settings": {"epochs": args.epochs, "stopping_step": args.stopping_step, "repeats": args.repeats,
                           "train_epochs": args.train_epochs, "fixed_forget": args.fixed_forget,
                           "forget_sweep": args.forget_sweep, "sweep_size": args.sweep_size,
                           "config": args.train_config},
              "data": {}, "load": [], "train": [], "step": [], "unlearn": [], "seconds": {}}
    start_all = time.perf_counter()
    for size in args.sizes:
        folder, seconds = ensure_data(size, args.data)
        report["data"][size] = {"folder": str(folder), "generated_seconds": seconds}
    if "load" in args.bench:
        start = time.perf_counter()
        for size in args.sizes:
            for suffix in ("imagelikefeat", "textlikefeat"):
                path = Path(report["data"][size]["folder"]) / f"synthetic-{size}.{suffix}"
                row = {"size": size, "file": path.name}
                for mode in ("text", "build", "cached"):
                    row[mode] = run_one({"kind": "load", "path": str(path), "mode": mode,
                                         "repeats": args.load_repeats}, runs, args.inline)
                print("load", row["file"], {m: round(row[m]["seconds"], 2) for m in ("text", "build", "cached")}, flush=True)
                report["load"].append(row)
        report["seconds"]["load"] = time.perf_counter() - start
    if "train" in args.bench:
        start = time.perf_counter()
        for size in args.sizes:
            for model in args.train_models:
                row = {"size": size, "model": model, **run_one(
                    {"kind": "train", "size": size, "model": model, "data": str(args.data),
                     "epochs": args.train_epochs, "config": args.train_config}, runs, args.inline)}
                print("train", size, model, round(row["seconds_per_epoch"], 2), "s/epoch", flush=True)
                report["train"].append(row)
        report["seconds"]["train"] = time.perf_counter() - start
    if "step" in args.bench:
        start = time.perf_counter()
        for size in args.sizes:
            row = {"size": size, **run_one({"kind": "step", "size": size, "data": str(args.data), "repeats": max(args.repeats, 5),
                                            "config": args.train_config}, runs, args.inline)}
            print("step", size, {k: v for k, v in row.items() if "step" in k or "check" in k}, flush=True)
            report["step"].append(row)
        report["seconds"]["step"] = time.perf_counter() - start
    if "unlearn" in args.bench:
        start = time.perf_counter()
        for task in plan_unlearn(args):
            task["data"] = str(args.data)
            t0 = time.perf_counter()
            row = {"size": task["size"], "model": task["model"], "epochs": args.epochs,
                   "stopping_step": args.stopping_step, **run_one(task, runs, args.inline)}
            row["process_seconds"] = time.perf_counter() - t0
            print("unlearn", task["size"], task["model"],
                  {f["n_forget"]: {m: (None if v["seconds"] is None else round(v["seconds"], 2))
                                   for m, v in f["methods"].items()} for f in row["forget"]}, flush=True)
            report["unlearn"].append(row)
        report["seconds"]["unlearn"] = time.perf_counter() - start
    report["seconds"]["total"] = time.perf_counter() - start_all
    write_report(report, out, args.tag)
    return report


def machine():
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


# ------------------------------------------------------------------------------ report

def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(report):
    commands = report.get("commands") or [(report["command"], report["seconds"]["total"])]
    lines = ["All data sets are SYNTHETIC, with the user/item/interaction counts of Amazon Baby, Sports "
             "and Clothing (`python -m recbole_tru.data.builders synthetic`).", "",
             f"Machine: {report['machine']}. Commands (wall time):", ""]
    lines += [f"* `{c}` ({t / 60:.1f} min)" for c, t in commands] + [""]
    if report["load"]:
        lines += ["### Feature files: text parse vs binary cache", "",
                  "| data set | file | MB (text) | text read s (median) | first cached read s (parse + write) | "
                  "cached read s (median) | speed-up | peak RSS MB text / cached |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["load"]:
            lines.append(f"| synthetic-{r['size']} | `{r['file']}` | {r['text']['bytes'] / 1e6:.0f} | "
                         f"{fmt(r['text']['seconds'])} | {fmt(r['build']['seconds'])} | {fmt(r['cached']['seconds'], 3)} | "
                         f"{r['text']['seconds'] / max(r['cached']['seconds'], 1e-9):.0f}x | "
                         f"{r['text']['peak_rss_mb']:.0f} / {r['cached']['peak_rss_mb']:.0f} |")
        lines.append("")
    if report["train"]:
        lines += ["### Training cost per epoch", "",
                  f"Median over {report['settings']['train_epochs']} training epochs (validation excluded); "
                  "one full-sort validation pass; peak RSS of the process (data set, model, training).", "",
                  "| data set | train interactions | model | s / epoch | validation pass s | peak RSS MB |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in report["train"]:
            lines.append(f"| synthetic-{r['size']} | {r['n_train']:,} | {r['model']} | {fmt(r['seconds_per_epoch'])} | "
                         f"{fmt(r['valid_seconds'])} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
    if report.get("step"):
        lines += ["### MMGCN step costs (restricted propagation)", "",
                  "A TRU-like step: 256 forget pairs + 256 retained pairs of the same users (negatives uniform), "
                  "dense layers frozen as in TRU; forward + backward, median seconds. `plan` = nodes computed per "
                  "layer (L-hop neighbourhood ... batch nodes) and its cost relative to the full propagation. "
                  "Check = full-sort scores of 1,000 users after a parameter change. Train step = one 2048 batch.", "",
                  "| data set | nodes | plan (nodes per layer) | plan cost | TRU step restricted s | TRU step full s | "
                  "check s | train step s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["step"]:
            lines.append(f"| synthetic-{r['size']} | {r['n_nodes']:,} | {' / '.join(f'{n:,}' for n in r['plan_nodes'])} | "
                         f"{fmt(r['plan_cost'])} | {fmt(r['tru_step_restricted'], 3)} | {fmt(r['tru_step_full'], 3)} | "
                         f"{fmt(r['check_1000_users'], 3)} | {fmt(r['train_step'], 3)} |")
        lines.append("")
    if report["unlearn"]:
        s = report["settings"]
        lines += ["### Unlearning time", "",
                  f"Original and retrained models: at most {s['epochs']} epochs, early stopping after "
                  f"{s['stopping_step']} validations without improvement (validation every epoch). "
                  f"`retrain` runs once per cell; `tru`, `reverse`, `finetune` {s['repeats']} times (median); "
                  "`sisa` once (its K shard models are trained untimed first). Interaction regime, random pairs.", "",
                  "| data set | model | |D_f| | method | seconds | x faster than retrain | test NDCG@20 | forget Recall@20 | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["unlearn"]:
            for f in r["forget"]:
                retrain = f["methods"].get("retrain", {}).get("seconds")
                for name, m in f["methods"].items():
                    speed = None if retrain is None or not m.get("seconds") or name == "retrain" else retrain / m["seconds"]
                    note = m.get("note") or (f"{m['epochs']} epochs" if name == "retrain" else m.get("stop_reason", ""))
                    lines.append(f"| synthetic-{r['size']} | {r['model']} | {f['n_forget']:,} | {name} | {fmt(m.get('seconds'))} | "
                                 f"{fmt(speed, 1)} | {fmt(m.get('test_ndcg@20'), 4)} | {fmt(m.get('forget_recall@20'), 4)} | {note or ''} |")
            lines.append(f"| synthetic-{r['size']} | {r['model']} | | original training | {fmt(r['original']['seconds'])} | | | | "
                         f"{r['original']['epochs']} epochs (max {r.get('epochs')}, stopping step {r.get('stopping_step')}), "
                         f"peak RSS {r['peak_rss_mb']:.0f} MB |")
        lines += [""] + growth_lines(report) + phase_lines(report)
    return "\n".join(lines) + "\n"


def series(report):
    """(model, max epochs) of the unlearning cells: a curve joins cells of the same budget."""
    return sorted({(r["model"], r.get("epochs")) for r in report["unlearn"]}, key=str)


def series_label(model, epochs):
    return f"{model}, <= {epochs} epochs"


def fixed_rows(report, model, epochs=None):
    """[(size, n_train, {method: seconds})] of the fixed-size request, in size order."""
    out = []
    for r in report["unlearn"]:
        if r["model"] == model and r.get("epochs") == epochs and r["forget"]:
            f = r["forget"][0]
            out.append((r["size"], r["n_train"], {k: v.get("seconds") for k, v in f["methods"].items()}))
    return out


def growth_lines(report):
    lines = [f"Growth from the smallest to the largest data size at |D_f| = {report['settings']['fixed_forget']:,} "
             "(ratio of seconds):", "", "| model | data growth (train interactions) | method | growth |", "| --- | --- | --- | --- |"]
    for model, epochs in series(report):
        rows = fixed_rows(report, model, epochs)
        if len(rows) < 2:
            continue
        (s0, n0, m0), (s1, n1, m1) = rows[0], rows[-1]
        for name in m0:
            if m0.get(name) and m1.get(name):
                lines.append(f"| {series_label(model, epochs)} | {s0} -> {s1}: x{n1 / n0:.2f} | {name} | "
                             f"x{m1[name] / m0[name]:.2f} |")
    return lines + [""]


def phase_lines(report):
    lines = ["Where TRU's time goes (the median run; seconds): `reset` re-draws owned rows, `checks` rank "
             "the gated pairs and the reference (against all items, or the `tru_rank_sample` item sample), "
             "`targeted steps` are the gated reverse updates, `repair` the retain BPR epochs on the "
             "neighbourhood.", "",
             "| data set | model | |D_f| | total | reset | checks (n) | targeted steps (n) | repair | stop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["unlearn"]:
        for f in r["forget"]:
            for name, m in f["methods"].items():
                p = m.get("phases")
                if not p or not name.startswith("tru"):
                    continue
                lines.append(f"| synthetic-{r['size']} | {r['model']} | {f['n_forget']:,} {'' if name == 'tru' else name} | {fmt(m['seconds'])} | "
                             f"{fmt(p.get('reset'))} | {fmt(p.get('checks'))} ({m.get('checks')}) | "
                             f"{fmt(p.get('targeted_steps'))} ({m.get('steps')}) | {fmt(p.get('repair_epochs'))} | "
                             f"{m.get('stop_reason', '')} |")
    return lines + [""]


def plot(report, out, tag=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report["train"]:
        models = list(dict.fromkeys(r["model"] for r in report["train"]))
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for model in models:
            rows = [r for r in report["train"] if r["model"] == model]
            x = [r["n_train"] for r in rows]
            axes[0].plot(x, [r["seconds_per_epoch"] for r in rows], "-o", label=model)
            axes[1].plot(x, [r["peak_rss_mb"] for r in rows], "-o", label=model)
        for ax, label in zip(axes, ("seconds per training epoch", "peak RSS (MB)")):
            ax.set_xlabel("training interactions (synthetic Baby / Sports / Clothing sizes)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle("Training cost on SYNTHETIC data at Amazon sizes")
        fig.tight_layout()
        fig.savefig(out / f"scale{tag}_train.png", dpi=110)
        plt.close(fig)
    if report["unlearn"]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        styles = {"retrain": "k", "tru": "tab:green", "reverse": "tab:red", "finetune": "tab:blue", "sisa": "tab:purple"}
        markers = {"VBPR": "o", "MMGCN": "s"}
        for model, epochs in series(report):
            rows = fixed_rows(report, model, epochs)
            dashed = "--" if epochs != report["settings"]["epochs"] else "-"
            names = list(dict.fromkeys(k for _, _, m in rows for k in m))
            for name in names:
                base = name.split("[")[0]
                if base not in styles:
                    continue
                # by training interactions: Clothing has more items and users but fewer
                # training interactions than Sports
                pts = sorted((n, m[name]) for _, n, m in rows if m.get(name))
                if pts:                          # variants (tru[...]) dotted, in their method's colour
                    axes[0].plot(*zip(*pts), (":" if name != base else dashed) + markers.get(model, "o"),
                                 color=styles[base], label=f"{name} ({series_label(model, epochs)})",
                                 alpha=1.0 if base in ("tru", "retrain") else 0.45)
            for size, n, m in rows:
                if m.get("retrain"):
                    axes[0].annotate(size, (n, m["retrain"]), textcoords="offset points", xytext=(0, 6),
                                     fontsize=7, ha="center")
            sweep = [r for r in report["unlearn"] if r["model"] == model and r.get("epochs") == epochs
                     and r["size"] == report["settings"]["sweep_size"]]
            for r in sweep:
                for name in styles:
                    pts = sorted((f["n_forget"], f["methods"][name]["seconds"]) for f in r["forget"]
                                 if f["methods"].get(name, {}).get("seconds"))
                    if pts:
                        axes[1].plot(*zip(*pts), ("-" if name != "retrain" else ":") + markers.get(model, "o"),
                                     color=styles[name], label=f"{name} ({series_label(model, epochs)})",
                                     alpha=1.0 if name in ("tru", "retrain") else 0.45)
        axes[0].set_xlabel("training interactions (synthetic Baby / Sports / Clothing sizes)")
        axes[0].set_title(f"vs data size, |D_f| = {report['settings']['fixed_forget']:,}")
        axes[1].set_xlabel("|D_f| (forgotten interactions)")
        axes[1].set_title(f"vs forget-set size, synthetic-{report['settings']['sweep_size']}")
        for ax in axes:
            ax.set_ylabel("unlearning seconds")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
        axes[1].set_xscale("log")
        axes[0].legend(fontsize=6, ncol=2)
        axes[1].legend(fontsize=6, ncol=2)
        fig.suptitle("Unlearning time on SYNTHETIC data (retrain: same stopping rule as the original)")
        fig.tight_layout()
        fig.savefig(out / f"scale{tag}_unlearn.png", dpi=110)
        plt.close(fig)


def write_report(report, out, tag=""):
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scale{tag}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=float))
    (out / f"{stem}.md").write_text(markdown(report))
    plot(report, out, tag)
    print(markdown(report))


def merge(paths):
    """One report from several ``scale*.json`` (e.g. parts run with different budgets)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    report = {**parts[0], "commands": [], "load": [], "train": [], "step": [], "unlearn": [], "data": {}}
    for part in parts:
        report["commands"].append((part["command"], part["seconds"]["total"]))
        for key in ("load", "train", "step", "unlearn"):
            report[key] += part.get(key, [])
        report["data"].update(part["data"])
    report["seconds"] = {"total": sum(t for _, t in report["commands"])}
    order = {s: k for k, s in enumerate(("tiny",) + SIZES)}
    report["unlearn"].sort(key=lambda r: (r["model"], order.get(r["size"], 99)))
    return report


# ------------------------------------------------------------------------------ command line

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="load,train,step,unlearn", help="load, train, step and/or unlearn")
    parser.add_argument("--sizes", default=",".join(SIZES), help="synthetic sizes: tiny, baby, sports, clothing")
    parser.add_argument("--models", default="VBPR,MMGCN", help="backbones of the unlearning benchmark")
    parser.add_argument("--train-models", default=",".join(TRAIN_MODELS), help="models of the training benchmark")
    parser.add_argument("--methods", default="tru,reverse,finetune,sisa", help="approximate methods (retrain is always run)")
    parser.add_argument("--sisa-sizes", default="baby",
                        help="sizes where sisa runs (fixed-size request only; its K shard models are trained first)")
    parser.add_argument("--sweep-methods", default="tru,reverse,finetune", help="methods of the forget-size sweep")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="parent folder of the synthetic data sets")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the output file names (scale<tag>.md, ...)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each approximate method (median)")
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs timed by the training benchmark")
    parser.add_argument("--epochs", type=int, default=30, help="max epochs of the original and retrained models")
    parser.add_argument("--stopping-step", type=int, default=3)
    parser.add_argument("--fixed-forget", type=int, default=1000)
    parser.add_argument("--forget-sweep", default="250,1000,4000,0.05", help="forget sizes at --sweep-size (int or share)")
    parser.add_argument("--sweep-size", default="baby")
    parser.add_argument("--no-retrain-share", dest="retrain_share", action="store_false",
                        help="do not retrain for the sweep's share-sized request")
    parser.add_argument("--config", default="{}", help="JSON dict of extra config for every model (smoke runs)")
    parser.add_argument("--cache", default=None,
                        help="reuse original models trained with the same config from this folder (their "
                             "training time is the one recorded when they were trained); default: train fresh")
    parser.add_argument("--no-restrict", dest="restrict", action="store_false",
                        help="MMGCN: always propagate the full graph (to measure the restricted fast path)")
    parser.add_argument("--variants", default="{}",
                        help='JSON {"tru[name]": {config overrides}}: extra method variants, run where retrain runs')
    parser.add_argument("--profile", action="store_true", help="add one cProfile'd TRU run per cell to the JSON")
    parser.add_argument("--inline", action="store_true", help="measure in this process (smoke tests)")
    parser.add_argument("--merge", nargs="+", help="merge these scale*.json into one report (no measuring)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merge:
        report = merge(args.merge)
        write_report(report, Path(args.out), args.tag)
        return report
    if args.one:
        task = json.loads(args.one)
        print("RESULT " + json.dumps(MEASURES[task["kind"]](task), default=float), flush=True)
        return None
    args.argv = argv
    args.bench = [b for b in args.bench.split(",") if b]
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]
    args.train_models = [m for m in args.train_models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    args.sweep_methods = [m for m in args.sweep_methods.split(",") if m]
    args.sisa_sizes = [m for m in args.sisa_sizes.split(",") if m]
    args.forget_sweep = parse_forget(args.forget_sweep)
    args.variants = json.loads(args.variants)
    args.train_config = {"epochs": args.epochs, "stopping_step": args.stopping_step, **json.loads(args.config)}
    args.data = Path(args.data).resolve()
    return run(args)


if __name__ == "__main__":
    main()
