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

Every measurement runs in its own subprocess; peak memory is that process's ``ru_maxrss``. Its
progress (stage, epoch, seconds since it started) is echoed as it comes, labelled with the
measurement (``[unlearn baby VBPR, 95 s] original: epoch 4 training [...]``); its stderr goes to
``<label>.stderr`` in the run folder.
Writes ``scale.json``, ``scale.md``, ``scale_train.png`` and ``scale_unlearn.png`` to ``--out``
(default ``benchmarks/results``). RecBole's logs go to ``--out``/``runs-scale-*``.

    python benchmarks/scale.py                               # everything (see scale.md for the time)
    python benchmarks/scale.py --bench unlearn --sizes baby --models VBPR --methods tru
                                                             # 5.3 min on 2 cores once Baby is generated
    python benchmarks/scale.py --sizes tiny --out /tmp/s     # smoke size, seconds
    python benchmarks/scale.py --merge a/scale.json b/scale.json --tag _both   # one report from parts
    python benchmarks/scale.py --render benchmarks/results/scale_vbpr_final.json --out /tmp/r
                                                             # rewrite its .md and .png (tag from the name)

This file is the command line and the orchestration; ``scale_measure.py`` holds the
measurements (run in the subprocesses), ``scale_report.py`` the tables and plots.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]     # the repository root, and this folder's sibling modules

from recbole_tru.provenance import environment  # noqa: E402

from scale_measure import MEASURES  # noqa: E402
from scale_report import write_report  # noqa: E402

DEFAULT_DATA = ROOT / "benchmarks" / "data"
SIZES = ("baby", "sports", "clothing")
TRAIN_MODELS = ("VBPR", "MMGCN", "LightGCN")


# ------------------------------------------------------------------------------ helpers

def ensure_data(size, data_dir, log=print):
    """The data set folder of ``size`` (generated when missing or written by another generator);
    returns (folder, seconds or None, the generator's knobs)."""
    from recbole_tru.data.builders.synthetic import ensure_synthetic

    return ensure_synthetic(size, data_dir, log=log)


def task_label(task):
    return " ".join(str(task[k]) for k in ("kind", "size", "model") if task.get(k)) or task["kind"]


def run_one(task, out_dir, inline=False):
    """Run ``task`` in a fresh subprocess (cwd = a run folder: RecBole writes log/ there), or
    in this process with ``inline`` (smoke tests: no per-process memory figure then).

    The subprocess's progress lines (``PROGRESS ...``: stage, epoch, elapsed) are echoed as they
    come, so a long measurement is never silent; its stderr goes to ``<out_dir>/<label>.stderr``."""
    if inline:
        return MEASURES[task["kind"]](task)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(task)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    label = task_label(task)
    err_path = Path(out_dir) / (label.replace(" ", "-") + ".stderr")
    lines, start = [], time.perf_counter()
    with open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=out_dir, env=env)
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.startswith("PROGRESS "):
                print(f"  [{label}, {time.perf_counter() - start:.0f} s] {line[len('PROGRESS '):]}", flush=True)
        proc.wait()
    results = [line for line in lines if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"{label} failed (exit {proc.returncode}):\n" + "\n".join(lines[-30:])
                           + f"\n{err_path.read_text(encoding='utf-8')[-4000:]}")
    return json.loads(results[-1][len("RESULT "):])


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
        folder, seconds, generator = ensure_data(size, args.data)
        report["data"][size] = {"folder": str(folder), "generated_seconds": seconds, "generator": generator}
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
    parser.add_argument("--render", metavar="JSON",
                        help="rewrite the .md and .png of this scale<tag>.json into --out (no measuring; "
                             "<tag> from its name unless --tag is given)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merge:
        report = merge(args.merge)
        write_report(report, Path(args.out), args.tag)
        return report
    if args.render:
        report = json.loads(Path(args.render).read_text())
        stem = Path(args.render).stem
        tag = args.tag or (stem[len("scale"):] if stem.startswith("scale") else "")
        write_report(report, Path(args.out), tag, data=False)
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
