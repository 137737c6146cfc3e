"""TRU's own seconds, phase by phase, on the cached models of earlier runs: the instrument for a
change of TRU's implementation and for how its time grows with the data set's size.

Retraining is not run: each target's original and retrained models come from a run folder that
an earlier benchmark filled (``benchmarks/unlearning.py --out``, ``calibration.py --runs``); only
TRU runs, ``--reps`` times per request and variant, in this one process with one torch thread,
the variants' order rotated from one request to the next (the first run of a process is the
slower one). So targets and variants are timed side by side in one run: a growth ratio
(the second target's median over the first's) and a variant's paired difference are read from
one run. Each run's forget and retain gaps to the cached retrained model are recorded, so a
variant meant to change only the time shows that it changed nothing else. Nothing here chooses
a default: the seeds may be judged requests' (their cached models are the ones at hand).

    python benchmarks/tru_seconds.py \\
        --target synthetic-baby RUNS_BABY 0.00831 --target synthetic-clothing RUNS_CLOTHING 0.005027 \\
        --config '{"data_path": "benchmarks/data", "stopping_step": 10, "epochs": 30}' \\
        --variants '{"sparse rows": {}, "dense gradients": {"tru_sparse_grad": false}}'

Without the retrained models (``--no-retrain``: none is loaded or trained, no gaps are reported) the
time is still measured; ``--prepare-only`` trains (or finds) every target's cached models first, with
``--threads`` threads and nothing timed, so the timed run that follows finds them all:

    python benchmarks/tru_seconds.py --model MMGCN --no-retrain --prepare-only --threads 2 \\
        --target synthetic-baby RUNS_BABY 0.00831 --target synthetic-clothing RUNS_CLOTHING 0.005027 \\
        --config '{"data_path": "benchmarks/data", "stopping_step": 10, "epochs": 30}'
    # then the same without --prepare-only and --threads, with --variants

A target is ``DATASET RUNS FORGET_SHARE``: the data set (its YAML is
``<data_path>/<DATASET>/<DATASET>.yaml`` where that file exists), the run folder of its cached
models, and the request's ``forget_share`` as that run drew it (another share is another request:
its retrained model is not in the cache and would be trained here).
"""
import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from unlearning_jobs import prepare_cell, variant_config  # noqa: E402
from unlearning_report import fmt, pm, publish  # noqa: E402

from recbole_tru.data.builders.synthetic import generator_of  # noqa: E402
from recbole_tru.files import save_png  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.stats import paired, t_interval  # noqa: E402
from recbole_tru.unlearn import pipeline  # noqa: E402

PHASES = ("reset", "checks", "targeted_steps", "repair")


def config_files(dataset, config):
    path = Path(config.get("data_path", "dataset")) / dataset / f"{dataset}.yaml"
    return [str(path)] if path.exists() else None


def run_request(model, regime, target, seed, variants, reps, config, offset, retrain=True):
    """Every variant ``reps`` times on one request (order rotated by ``offset``): per variant the
    runs' seconds and phases, and the last run's gaps (None without ``retrain``), steps and stop."""
    dataset, runs, share = target
    extra = {**config, "forget_seed": seed, "forget_share": share, "audit_enabled": False}
    files = config_files(dataset, config)
    base, data, original, judge, _, files, (cell, _) = prepare_cell(model, regime, Path(runs), extra, dataset, files,
                                                                    retrain=retrain)
    if reps == 0:                   # --prepare-only: the models are cached, nothing is timed
        return None, None
    names = list(variants)
    order = names[offset % len(names):] + names[:offset % len(names)]
    out = {name: {"seconds": [], "phases": []} for name in names}
    configs = {name: variant_config(model, dataset, files, base, variants[name]) for name in names}
    for rep in range(reps):
        for name in order:
            data.config = configs[name]
            unlearned, trainer, _ = pipeline.unlearn_method(configs[name], "tru", data, original)
            out[name]["seconds"].append(trainer.seconds)
            out[name]["phases"].append({p: trainer.phase_seconds.get(p, 0.0) for p in PHASES})
            if rep == reps - 1:          # judged once, untimed: every run of a variant is the same edit
                gaps = judge.report(unlearned)["gap_to_retrain"] if judge else None
                out[name].update(steps=trainer.step, stop=trainer.stop_reason,
                                 forget_gap=gaps["forget"]["recall@20"] if gaps else None,
                                 retain_gap=gaps["retain"]["recall@20"] if gaps else None)
    request = {"interactions": int(len(data.forget.users)), "data_generator": generator_of(cell["data_path"])}
    for name in names:
        out[name].update(median=float(np.median(out[name]["seconds"])),
                         phase_median={p: float(np.median([r[p] for r in out[name]["phases"]])) for p in PHASES})
    return out, request


def gap_interval(values):
    """The gaps' t-interval; None where no retrained model judged them (``--no-retrain``)."""
    return None if any(v is None for v in values) else t_interval(values)


def summarise(targets, names):
    """Per target and variant: the median and mean (t-interval) of the requests' medians, the
    phases' medians, the gaps; each variant's paired difference from the first; growth of every
    target's median over the first target's, per variant."""
    rows = []
    for target in targets:
        requests = target["requests"]
        for name in names:
            medians = [r["variants"][name]["median"] for r in requests]
            row = {"dataset": target["label"], "variant": name, "requests": len(requests),
                   "median": float(np.median(medians)), "seconds": t_interval(medians),
                   "phases": {p: float(np.median([r["variants"][name]["phase_median"][p] for r in requests]))
                              for p in PHASES},
                   "steps": [r["variants"][name]["steps"] for r in requests],
                   "stops": [r["variants"][name]["stop"] for r in requests],
                   "forget_gap": gap_interval([r["variants"][name]["forget_gap"] for r in requests]),
                   "retain_gap": gap_interval([r["variants"][name]["retain_gap"] for r in requests])}
            if name != names[0]:
                first = [r["variants"][names[0]]["median"] for r in requests]
                row["vs_first"] = paired(medians, first)
            rows.append(row)
    growth = {}
    if len(targets) > 1:
        for name in names:
            by = {r["dataset"]: r["median"] for r in rows if r["variant"] == name}
            first = by[targets[0]["label"]]
            growth[name] = {t["label"]: by[t["label"]] / first for t in targets[1:]}
    return rows, growth


def gap(interval):
    return "n/a (no retrained model)" if interval is None else pm(interval)


def markdown(report):
    rows, growth = report["summary"], report["growth"]
    lines = [f"# TRU's seconds on cached models ({report['model']}, {report['regime']})", "",
             f"`{report['command']}`", "",
             f"{report['reps']} runs per request and variant, one process, {report['threads']} torch thread(s); "
             "seconds: median over the requests of each request's median (mean ± 95 % CI of those medians); "
             "phases: medians; gaps: to the cached retrained model (Recall@20); steps and stops per request.", "",
             "| data set | variant | requests | seconds: median | mean ± 95 % | - first variant [95 % CI] "
             "| reset | checks | targeted steps | repair | steps | stops | forget gap | retain gap |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        diff = r.get("vs_first")
        d = "" if diff is None else (f"{diff['diff']['mean']:+.3f} [{fmt(diff['diff']['ci_low'], 3)}, "
                                     f"{fmt(diff['diff']['ci_high'], 3)}] ({diff['wins']}/{diff['n']} faster)")
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['requests']} | {r['median']:.3f} | {pm(r['seconds'], 3)} "
                     f"| {d} | " + " | ".join(f"{r['phases'][p]:.3f}" for p in PHASES)
                     + f" | {', '.join(map(str, r['steps']))} | {'; '.join(map(str, r.get('stops', [])))} "
                     f"| {gap(r['forget_gap'])} | {gap(r['retain_gap'])} |")
    if growth:
        lines += ["", "| variant | " + " | ".join(f"growth to {d}" for d in next(iter(growth.values()))) + " |",
                  "| --- | " + " | ".join("---" for _ in next(iter(growth.values()))) + " |"]
        for name, by in growth.items():
            lines.append(f"| {name} | " + " | ".join(f"x{v:.2f}" for v in by.values()) + " |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["summary"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(rows), 3.6))
    bottom = np.zeros(len(rows))
    for phase in PHASES:
        values = np.array([r["phases"][phase] for r in rows])
        ax.bar(range(len(rows)), values, bottom=bottom, label=phase.replace("_", " "))
        bottom += values
    ax.set_xticks(range(len(rows)), [f"{r['dataset']}\n{r['variant']}" for r in rows], fontsize=7)
    ax.set_ylabel("seconds (median per phase)")
    ax.set_title(f"TRU's phases, {report['model']} {report['regime']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", nargs=3, action="append", metavar=("DATASET", "RUNS", "FORGET_SHARE"), required=True,
                   help="a data set, the run folder of its cached models and the requests' forget_share")
    p.add_argument("--model", default="VBPR")
    p.add_argument("--regime", default="interaction")
    p.add_argument("--seeds", default="2024,2025,2026", help="forget seeds of the requests (cached in every RUNS)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", default="{}", help="JSON dict of extra config, for every target")
    p.add_argument("--variants", default='{"default": {}}', help="JSON {name: config overrides}")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default="")
    p.add_argument("--no-retrain", action="store_true",
                   help="time TRU without a retrained model (none is loaded or trained; no gaps reported)")
    p.add_argument("--prepare-only", action="store_true",
                   help="train (or find) every target's cached models with --threads threads, time nothing")
    args = p.parse_args(argv)
    try:
        variants, config = json.loads(args.variants), json.loads(args.config)
    except json.JSONDecodeError as e:
        p.error(f"--variants / --config: not JSON ({e})")
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        p.error("--variants: a JSON object {name: {config key: value}} with at least one variant")
    if args.reps < 1:
        p.error(f"--reps: at least 1 run per request and variant (got {args.reps})")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    start, targets = time.time(), []
    for dataset, runs, share in args.target:
        if not Path(runs).is_dir():
            p.error(f"--target {dataset}: run folder {runs} does not exist")
        label = dataset if [t[0] for t in args.target].count(dataset) == 1 else f"{dataset} #{len(targets) + 1}"
        target = {"dataset": dataset, "label": label, "runs": runs, "forget_share": float(share), "requests": []}
        for i, seed in enumerate(seeds):
            print(f"[tru_seconds] {dataset} seed {seed} ({time.time() - start:.0f} s)", flush=True)
            result, request = run_request(args.model, args.regime, (dataset, runs, float(share)), seed, variants,
                                          0 if args.prepare_only else args.reps, config, i,
                                          retrain=not args.no_retrain)
            target["requests"].append({"seed": seed, **(request or {}), "variants": result})
        targets.append(target)
    if args.prepare_only:
        print(f"[tru_seconds] models cached ({time.time() - start:.0f} s); nothing timed", flush=True)
        return None
    rows, growth = summarise(targets, list(variants))
    report = {"command": "python benchmarks/tru_seconds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": environment(), "model": args.model, "regime": args.regime, "reps": args.reps,
              "threads": args.threads, "variant_config": variants, "retrained": not args.no_retrain,
              "wall_seconds": time.time() - start, "targets": targets,
              "summary": rows, "growth": growth}
    return publish(args.out, f"tru_seconds{args.tag}", report, markdown, plot)


if __name__ == "__main__":
    main()
