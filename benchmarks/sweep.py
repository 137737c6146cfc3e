"""Sweep benchmark: TRU and uniform reverse tuned by Ray Tune sweeps, then judged on a fresh
request; and the same trials with 1 vs 2 concurrent workers (speed-up and peak memory).

1. ``tru`` and ``reverse`` sweeps (``properties/tune/<method>.yaml``, ``--samples`` trials each,
   ASHA, 2 concurrent trials) on the same calibration request, each judged on the same fresh
   request against its retrained model on the test set (:mod:`recbole_tru.tune.sweep`). The
   first sweep trains the original and the retrained models (a fresh cache per benchmark run,
   so that time is counted); the second loads them.
2. The same ``tru`` trials (same searcher seed, FIFO scheduler so that every trial does the same
   work whatever the order) with ``tune_max_concurrent`` 1 and 2, on a local Ray instance of as
   many CPUs (Ray starts one idle worker per CPU): wall time of the search and
   peak resident memory of the driver plus every process it started (Ray's helpers and
   workers), polled every 0.5 s with psutil. RSS counts pages shared between processes (the
   object store, shared libraries) once per process, so the sum is an upper bound.

Writes ``--out`` (default ``benchmarks/results``): ``sweep.md`` (tables), ``sweep.json``
(everything), ``sweep_pareto.png`` (both methods' trials on the calibration request),
``sweep_pareto_<method>.png`` (each sweep's own plot) and the runs in ``sweep_runs/``.

    flock /tmp/heavy.lock python benchmarks/sweep.py                        # ml-100k-mm
    python benchmarks/sweep.py --smoke --dataset tiny-mm --config '{"data_path": ...}'  # tests
"""
import argparse
import json
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]     # the repository root, and this folder's sibling modules

from recbole_tru.config import PACKAGE_ROOT, Config  # noqa: E402
from recbole_tru.files import atomic_write, write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.tune.report import plot_pareto, read_csv  # noqa: E402
from recbole_tru.tune.sweep import run_sweep  # noqa: E402
from unlearning_report import fmt  # noqa: E402

METHODS = ("tru", "reverse")


class PeakMemory:
    """Peak summed RSS of this process and all its descendants, polled in a thread."""

    def __init__(self, interval=0.5):
        self.interval, self.peak_mb, self.peak_processes = interval, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self):
        me = psutil.Process()
        total, count = 0, 0
        for proc in [me] + me.children(recursive=True):
            try:
                total += proc.memory_info().rss
                count += 1
            except psutil.Error:          # a process ended between listing and reading
                pass
        if total / 2**20 > self.peak_mb:
            self.peak_mb, self.peak_processes = total / 2**20, count

    def _poll(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def sweep(model, dataset, method, runs, extra, judge=True, **settings):
    config = Config(model=model, dataset=dataset, read_cmd_line=False, config_dict={
        "unlearn": method, "tune": str(PACKAGE_ROOT / "properties" / "tune" / f"{method}.yaml"),
        "output_dir": str(runs), "state": "WARNING", "show_progress": False, **extra, **settings})
    start = time.perf_counter()
    with PeakMemory() as memory:
        result = run_sweep(config, judge=judge)
    result.update({"wall_seconds": time.perf_counter() - start, "peak_rss_mb": memory.peak_mb,
                   "peak_processes": memory.peak_processes})
    return result


def copy(src, dst):
    """``src`` copied to ``dst`` whole (replacing the last run's)."""
    atomic_write(dst, lambda p: shutil.copyfile(src, p), replace=True)


def markdown(report):
    lines = [f"Machine: {report['machine']}. Command: `{report['command']}`.", "",
             f"### Sweeps ({report['model']} on {report['dataset']}, {report['regime']} regime, "
             f"calibration request forget_seed={report['calibration_seed']}, judged request forget_seed={report['forget_seed']})", "",
             "| method | trials (finished / stopped early / error) | sweep minutes (search) | best objective | "
             "best valid NDCG@20 | best forget gap (calibration) | best settings |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, r in report["sweeps"].items():
        c, b = r["counts"], r["best"]
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["best_settings"].items())
        lines.append(f"| {method} | {sum(c.values())} ({c['finished']} / {c['stopped']} / {c['error']}) | "
                     f"{r['wall_seconds'] / 60:.1f} ({r['search_seconds'] / 60:.1f}) | {float(b['objective']):.4f} | "
                     f"{float(b['valid_ndcg@20']):.4f} | {float(b['forget_gap']):.4f} | {settings} |")
    first = next(iter(report["sweeps"].values()))["judged"]
    ref = first["retrain_reference"]
    lines += ["", f"### Judged on the fresh request (test set; retrained model: test NDCG@20 {fmt(ref['retain']['ndcg@20'])}, "
              f"forget Recall@20 {fmt(ref['forget']['recall@20'])}, {ref['seconds']:.1f} s)", "",
              "| model | test NDCG@20 | forget Recall@20 | forget gap | retain gap | top-20 overlap with retrain | seconds | x faster than retrain |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |",
              f"| original | {fmt(first['original']['retain']['ndcg@20'])} | {fmt(first['original']['forget']['recall@20'])} | "
              f"{fmt(first['original']['gap_to_retrain']['forget']['recall@20'])} | "
              f"{fmt(first['original']['gap_to_retrain']['retain']['ndcg@20'])} | {fmt(first['original']['topk_overlap_with_retrain'], 3)} | | |"]
    for method, r in report["sweeps"].items():
        for variant in ("default", "best"):
            m = r["judged"]["methods"][variant]
            lines.append(f"| {method} ({variant} settings) | {fmt(m['retain']['ndcg@20'])} | {fmt(m['forget']['recall@20'])} | "
                         f"{fmt(m['gap_to_retrain']['forget']['recall@20'])} | {fmt(m['gap_to_retrain']['retain']['ndcg@20'])} | "
                         f"{fmt(m['topk_overlap_with_retrain'], 3)} | {m['seconds']:.2f} | {m['speedup_vs_retrain']:.1f} |")
    s = report.get("scaling")
    if s:
        one, two = s["1"], s["2"]
        lines += ["", f"### The same {s['trials']} {s['method']} trials (FIFO, {s['cpus_per_trial']} CPU per trial): "
                  "1 vs 2 concurrent workers (a local Ray instance of 1 / 2 CPUs)", "",
                  "| concurrent trials | search seconds | sweep seconds (incl. cached references and Ray start) | "
                  "peak RSS, driver + Ray processes (MB) | processes at peak |",
                  "| --- | --- | --- | --- | --- |"]
        for n, r in (("1", one), ("2", two)):
            lines.append(f"| {n} | {r['search_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_processes']} |")
        lines += ["", f"Speed-up of the search with 2 workers: {one['search_seconds'] / two['search_seconds']:.2f}x; "
                  f"peak memory {two['peak_rss_mb'] / one['peak_rss_mb']:.2f}x."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MMGCN")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--samples", type=int, default=24, help="trials per sweep")
    parser.add_argument("--scaling-samples", type=int, default=8, help="trials of the 1-vs-2 comparison")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (e.g. a tiny data set)")
    parser.add_argument("--smoke", action="store_true", help="2 trials per sweep and comparison (tests)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1 vs 2 workers comparison")
    args = parser.parse_args(argv)
    samples = 2 if args.smoke else args.samples
    scaling_samples = 2 if args.smoke else args.scaling_samples
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "sweep_runs" / time.strftime("%Y%m%d-%H%M%S")     # fresh cache: references are timed
    extra = json.loads(args.config)
    report = {"environment": environment(), "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                         f"Python {platform.python_version()}",
              "command": " ".join(["python benchmarks/sweep.py"] + (argv if argv is not None else sys.argv[1:])),
              "model": args.model, "dataset": args.dataset, "sweeps": {}}
    for method in METHODS:
        print(f"== {method} sweep", flush=True)
        report["sweeps"][method] = sweep(args.model, args.dataset, method, runs, extra,
                                         tune_num_samples=samples, tune_max_concurrent=2)
    judged = report["sweeps"]["tru"]["judged"]
    report.update({"calibration_seed": judged["calibration_seed"], "forget_seed": judged["forget_seed"],
                   "regime": judged["forget"]["regime"]})
    if not args.no_scaling:
        report["scaling"] = {"method": "tru", "trials": scaling_samples, "cpus_per_trial": 1}
        for workers in (1, 2):
            print(f"== tru trials with {workers} concurrent worker(s)", flush=True)
            r = sweep(args.model, args.dataset, "tru", runs, extra, tune_num_samples=scaling_samples,
                      tune_max_concurrent=workers, tune_num_cpus=workers, tune_scheduler="fifo", judge=False)
            report["scaling"][str(workers)] = {k: r[k] for k in ("search_seconds", "wall_seconds", "peak_rss_mb",
                                                                  "peak_processes", "counts", "output_dir")}
    for method, r in report["sweeps"].items():
        copy(Path(r["output_dir"]) / "pareto.png", out / f"sweep_pareto_{method}.png")
    refs = report["sweeps"]["tru"]["judged"]["calibration_references"]
    runs.mkdir(parents=True, exist_ok=True)
    plot_pareto(runs / "sweep_pareto.png",
                [(m, read_csv(Path(r["output_dir"]) / "trials.csv")) for m, r in report["sweeps"].items()],
                f"{args.model} on {args.dataset}: tru vs reverse trials, calibration request "
                f"(forget_seed={report['calibration_seed']})",
                [("original model", refs["original"]["forget_gap"], refs["original"]["valid_ndcg@20"], "x"),
                 ("retrained (gap 0)", 0.0, refs["retrain"]["valid_ndcg@20"], "D")])
    copy(runs / "sweep_pareto.png", out / "sweep_pareto.png")
    write_texts(out, "sweep", [("json", json.dumps(report, indent=1, default=float)), ("md", markdown(report))])
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
