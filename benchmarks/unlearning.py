"""Unlearning benchmark: backbones x deletion regimes x every method, judged against retraining
on repeated, independent deletion requests.

Each cell (backbone, regime) is judged on ``--requests`` N requests (forget seeds
``FORGET_SEEDS[:N]``) against ONE original model per backbone (per training seed). A request is
one unlearning run (``recbole_tru.unlearn.pipeline``): draw the forget set, retrain from scratch
on the retained data (timed in the same process as the methods), run every method with its
per-epoch trade-off curve and the membership audit. On the interaction cells, TRU with each part
switched off (the ablation) runs on every request too. Every figure is then a mean over the
requests with a 95 % Student-t interval, and TRU is compared with every baseline request by
request (wins, the paired mean difference with its t-interval, the exact sign test); see
``recbole_tru.stats``.

``--train-seeds K`` adds the original-model study: on ``--variance-cells`` (default the
interaction cells) the same N requests are run against K originals trained with
``model_seed = TRAIN_SEEDS[:K]`` (same split), and the spread of each figure is split into the
part due to the original model and the part due to the request.

Jobs run in ``--workers`` processes of ``--threads`` torch threads each (default 2 x 1 on a
2-core machine: two torch jobs of 2 threads each on 2 cores slow each other down many times).
Originals are trained first (one job each), so every request loads them from the run's cache.

Writes to ``--out`` (default ``benchmarks/results``): ``unlearning.json`` (per-request values,
aggregates, paired comparisons, environment), ``unlearning_summary.csv``
(``backbone,regime,method,metric,n,mean,ci_low,ci_high``), ``unlearning.md`` (the README's
tables) and ``unlearning_tradeoff.png`` (mean curves with 95 % bands).

    python benchmarks/unlearning.py                        # 2 backbones x 3 regimes x 5 requests
    python benchmarks/unlearning.py --train-seeds 3        # + original-model variance (interaction cells)
    python benchmarks/unlearning.py --dataset mydata --config_files mydata.yaml --models VBPR
    python benchmarks/unlearning.py --render               # rewrite .md/.csv/.png from the JSON
    python benchmarks/unlearning.py --first-request 5      # 5 other requests (forget seeds 2029-2033)

This file is the command line and the job pool; ``unlearning_jobs.py`` holds the study's design
and what one job runs, ``unlearning_report.py`` the aggregation and the files.
"""
import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]     # the repository root, and this folder's sibling modules

from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.training import quiet_logging  # noqa: E402
from unlearning_jobs import FORGET_SEEDS, METHODS, TRAIN_SEEDS, original_job, request_job  # noqa: E402
from unlearning_report import markdown, summarise, write_outputs  # noqa: E402


# ---------------------------------------------------------------------------------------------
# worker processes

_LIMITS = []


def _init_worker(threads):
    """``threads`` torch threads, and as many for numpy's BLAS and OpenMP (the audit's work)."""
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(limits=threads))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:   # already set in this process
        pass
    quiet_logging()


def run_jobs(fn, jobs, workers, threads, label):
    """``fn`` over ``jobs``: in this process when ``workers == 1``, else in ``workers`` spawned
    processes (one fresh process per job, ``threads`` torch threads each). Results in job order."""
    results = [None] * len(jobs)
    if workers == 1:
        _init_worker(threads)
        for k, job in enumerate(jobs):
            results[k] = fn(job)
            print(f"  {label} {k + 1}/{len(jobs)} done ({results[k]['wall_seconds']:.0f} s)", flush=True)
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,),
                             max_tasks_per_child=1) as pool:
        futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            k = futures[future]
            results[k] = future.result()
            print(f"  {label} {done}/{len(jobs)} done ({results[k]['wall_seconds']:.0f} s)", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# command line

def grid_parser(doc):
    """The arguments of a benchmark over backbones x regimes (this one and calibration.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="VBPR,MMGCN")
    parser.add_argument("--regimes", default="interaction,user,item")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, as run_recbole_tru.py")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (e.g. for a smoke run)")
    return parser


def forget_seeds(args):
    """The requests of every cell: ``FORGET_SEEDS[first : first + requests]`` (``--first-request``
    skips the README's requests, to judge a change on requests it was not chosen by)."""
    return FORGET_SEEDS[args.first_request:args.first_request + args.requests]


def build_jobs(args, runs, extra, config_files):
    models, regimes = args.models.split(","), args.regimes.split(",")
    methods = tuple(m for m in METHODS if m in args.methods.split(",")) if args.methods else METHODS
    if "retrain" not in methods:
        raise SystemExit("--methods must include retrain (every figure is judged against it)")
    if "tru" not in methods:
        raise SystemExit("--methods must include tru (the benchmark compares TRU with the baselines)")
    variance_cells = set(args.variance_cells.split(","))
    common = {"dataset": args.dataset, "config_files": config_files, "out": str(runs), "extra": extra}
    originals, requests = [], []
    for model in models:
        for k in range(args.train_seeds):
            cell_regimes = regimes if k == 0 else [r for r in regimes if r in variance_cells]
            groups = {}   # interaction/item/request share one original; the user regime holds users out first
            for regime in cell_regimes:
                groups.setdefault("user" if regime == "user" else "shared", regime)
            originals += [{**common, "model": model, "regime": regime, "original": k, "methods": methods if k == 0 else
                           tuple(m for m in methods if m != "sisa")} for regime in groups.values()]
            for regime in cell_regimes:
                for forget_seed in forget_seeds(args):
                    requests.append({**common, "model": model, "regime": regime, "original": k,
                                     "forget_seed": forget_seed,
                                     # the variance study runs the methods that start from the original
                                     "methods": methods if k == 0 else tuple(m for m in methods if m != "sisa"),
                                     "ablation": k == 0 and regime == "interaction" and not args.no_ablation})
    # longest first (MMGCN, requests with SISA and the ablation), so the pool ends together
    requests.sort(key=lambda j: (j["model"] != "MMGCN", "sisa" not in j["methods"], not j["ablation"]))
    return originals, requests


def parser():
    p = grid_parser(__doc__)
    p.add_argument("--requests", type=int, default=5, help=f"requests per cell (at most {len(FORGET_SEEDS)})")
    p.add_argument("--first-request", type=int, default=0,
                   help="index of the first forget seed in FORGET_SEEDS (5: seeds 2029-2033, requests the "
                        "README's results never saw)")
    p.add_argument("--train-seeds", type=int, default=1,
                   help="originals per backbone for the variance study (1 = none; at most 5)")
    p.add_argument("--variance-cells", default="interaction", help="regimes of the variance study")
    p.add_argument("--methods", default=None, help=f"comma list out of {','.join(METHODS)} (default: all)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (1 = this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--render", action="store_true",
                   help="rewrite the .md, .csv and .png from <out>/unlearning.json (aggregates recomputed)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    out = Path(args.out)
    if args.render:
        report = summarise(json.loads((out / "unlearning.json").read_text()))
        write_outputs(report, out)
        return report
    if not 1 <= args.requests <= len(FORGET_SEEDS) or not 1 <= args.train_seeds <= len(TRAIN_SEEDS):
        raise SystemExit(f"--requests must be in 1..{len(FORGET_SEEDS)} and --train-seeds in 1..{len(TRAIN_SEEDS)}")
    if not 0 <= args.first_request <= len(FORGET_SEEDS) - args.requests:
        raise SystemExit(f"--first-request + --requests must stay within the {len(FORGET_SEEDS)} forget seeds "
                         f"{FORGET_SEEDS}, got {args.first_request} + {args.requests}")
    config_files = args.config_files.split() if args.config_files else None
    runs = out / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"   # fresh cache: retraining is timed in this run
    extra = json.loads(args.config)
    originals, requests = build_jobs(args, runs, extra, config_files)
    start = time.perf_counter()
    print(f"== {len(originals)} originals, {len(requests)} requests, {args.workers} workers x {args.threads} threads",
          flush=True)
    trained = run_jobs(original_job, originals, args.workers, args.threads, "original")
    records = run_jobs(request_job, requests, args.workers, args.threads, "request")
    wall = time.perf_counter() - start
    report = {"command": " ".join(["python benchmarks/unlearning.py"] + (argv if argv is not None else sys.argv[1:])),
              "environment": {**environment(), "workers": args.workers, "threads_per_worker": args.threads},
              "wall_seconds": wall, "dataset": args.dataset,
              # the synthetic generator's knobs (recbole_tru.data.builders.synthetic), None on real data
              "data_generator": next((t["data_generator"] for t in trained if t.get("data_generator")), None),
              "requests": args.requests, "forget_seeds": list(forget_seeds(args)),
              "originals_model_seeds": list(TRAIN_SEEDS[:args.train_seeds]), "confidence": 0.95,
              "ci_method": "Student-t interval of the mean over requests",
              "paired_test": "exact two-sided sign test; paired mean difference with its t-interval",
              "originals": trained, "cells": []}
    for model in args.models.split(","):
        for regime in args.regimes.split(","):
            recs = sorted((r for r in records if r["model"] == model and r["regime"] == regime),
                          key=lambda r: (r["original"], r["forget_seed"]))
            report["cells"].append({"model": model, "regime": regime, "requests": recs})
    summarise(report)
    write_outputs(report, out)
    print(markdown(report))
    print(f"benchmark wall time {wall / 60:.1f} min")
    return report


if __name__ == "__main__":
    main()
