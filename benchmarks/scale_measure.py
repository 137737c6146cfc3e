"""The measurements of ``benchmarks/scale.py``: each runs in its own subprocess (``scale.py --one``)
or, for the smoke tests, in the calling process (``--inline``), and returns a JSON-able dict
(imported by ``scale.py``, which puts the repository root on ``sys.path``)."""
import contextlib
import importlib
import logging
import resource
import statistics
import time
from pathlib import Path

RECALL, NDCG = "recall@20", "ndcg@20"
# a part of TRU's run in TRUTrainer.phase_seconds -> its name in the report (scale_report.phase_lines)
PHASES = {"reset": "reset", "checks": "checks", "targeted_steps": "targeted_steps", "repair": "repair_epochs"}


def progress(message):
    """One progress line for ``scale.py`` to echo (it reads the subprocess's stdout)."""
    print(f"PROGRESS {message}", flush=True)


class _EpochLines(logging.Handler):
    """Forwards RecBole's per-epoch INFO lines ("epoch 3 training [time: ...]") as progress lines
    while the data set and trainer log at WARNING (RecBole's handlers keep their own level)."""

    def __init__(self, stage):
        super().__init__(logging.INFO)
        self.stage = stage

    def emit(self, record):
        text = record.getMessage()
        if "epoch" in text and ("training" in text or "evaluating" in text):
            progress(f"{self.stage}: {_plain(text)}")


def _plain(text):
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@contextlib.contextmanager
def epoch_progress(stage):
    """Within the block, RecBole's epoch lines reach ``scale.py`` as progress lines."""
    root = logging.getLogger()
    handler, level = _EpochLines(stage), root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    from recbole_tru.registry import get_trainer
    from recbole_tru.training import build_model, load_data

    config = make_config(task["size"], task["data"], task["model"], task.get("config"))
    start = time.perf_counter()
    _, train, valid, _ = load_data(config)
    load_seconds = time.perf_counter() - start
    progress(f"data loaded in {load_seconds:.1f} s")
    model = build_model(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epochs = []
    for epoch in range(task["epochs"]):
        start = time.perf_counter()
        trainer._train_epoch(train, epoch, show_progress=False)
        epochs.append(time.perf_counter() - start)
        progress(f"training epoch {epoch + 1}/{task['epochs']}: {epochs[-1]:.2f} s")
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
    from recbole_tru.training import build_model, load_data
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

    from recbole_tru.data.forget import select_forget
    from recbole_tru.data.retained import UnlearnData
    from recbole_tru.registry import UNLEARNERS
    from recbole_tru.training import load_data
    from recbole_tru.unlearn import pipeline
    from recbole_tru.unlearn.evaluation import Judge

    if not task.get("restrict", True):
        from recbole_tru.model.mmgcn import MMGCN

        MMGCN.RESTRICT_COST = 0.0                     # always propagate the full graph
    config = make_config(task["size"], task["data"], task["model"], task.get("config"))
    _, train, valid, test = load_data(config)
    n_train = len(train.dataset)
    config["unlearn_cache"] = bool(task.get("cache"))
    progress(f"data loaded: {n_train:,} training interactions; training the original {task['model']}")
    with epoch_progress("original"):
        original, summary, cached = pipeline.train_reference(config, (train, valid), task.get("cache"), "original")
    progress(f"original: {summary['seconds']:.1f} s, {summary['epochs']} epochs" + (" (from the cache)" if cached else ""))
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
            progress(f"forget {len(forget):,}: retrain")
            with epoch_progress(f"forget {len(forget):,}: retrain"):
                model, trainer, _ = pipeline.unlearn_method(config, "retrain", data, original)
            judge = Judge(config, data, model)
            row["methods"]["retrain"] = {"seconds": trainer.seconds, "runs": [trainer.seconds],
                                         "epochs": trainer.summary["epochs"], **_quality(judge.reference)}
            # untimed reference points: the model before the request (a graph backbone with its own
            # graph, the forgotten edges included) and where every method starts (its parameters on
            # the retained data: for MMGCN the graph edit alone)
            row["reference_points"] = {
                "original": _quality(judge.metrics(original)),
                "start": _quality(judge.metrics(pipeline.start_from(config, data, original)))}
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
            repeats = 1 if method == "sisa" else task["repeats"]
            for run in range(repeats):
                model, trainer, _ = pipeline.unlearn_method(config, method, data, original)
                runs.append(trainer.seconds)
                progress(f"forget {len(forget):,}: {name} run {run + 1}/{repeats}: {trainer.seconds:.2f} s")
                phases.append(phase_seconds(trainer))
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


def phase_seconds(trainer):
    """Seconds of each part of one run, as the trainer recorded them (``TRUTrainer.phase_seconds``:
    reset, checks, targeted steps without the checks between them, repair epochs; a part that did
    not run is absent; other methods record none), under the report's names."""
    return {PHASES.get(part, part): seconds for part, seconds in getattr(trainer, "phase_seconds", {}).items()}


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
        importlib.import_module("recbole_tru.unlearn.sisa")
    except Exception:
        return False
    return True


MEASURES = {"load": measure_load, "train": measure_train, "unlearn": measure_unlearn, "step": measure_step}
