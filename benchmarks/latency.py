"""One-request latency: single-user and single-item deletion requests through the deletion-request
workflow, each on the ORIGINAL checkpoint (independent requests, not a chain: ``stream.py`` chains).

Per backbone: train an original (``run_recbole_tru.py --model=M``, a checkpoint), then for each
kind in ``--kinds`` send ``--requests`` requests of one user (all of the user's training pairs)
or one item (all of the item's training pairs), drawn with ``--seed`` among distinct users /
items of the training split. Each request runs the workflow with its audit off; per request the
unlearning seconds (the method alone, the workflow's ``timings.unlearn``), the whole request's
seconds (load, resolve, evaluate, unlearn, prove, write), the method's stop reason, and the
quality the workflow measures without a retrained reference: forget Recall@20 (the request's
pairs as ground truth) and test NDCG@20 before and after. The first request of a process also
pays one-off costs (imports, first allocation), so the report gives medians and p95.

``--evaluate both,none`` sends every request once per ``unlearn_evaluate`` mode (``both``: the
workflow scores the input and the output model, its default; ``output``; ``none``), one after
the other on the same original, so the whole-request times of the modes are measured side by
side; the unlearning figures and the quality columns come from the first mode.

``--synthetic SIZE`` runs on the SYNTHETIC data set of that size
(:mod:`recbole_tru.data.builders.synthetic`, generated into ``--data`` when missing); otherwise
``--dataset`` / ``--config_files`` as ``run_recbole_tru.py``.

Writes to ``--out`` (default ``benchmarks/results``): ``<name>.json``, ``<name>.csv``
(``backbone,dataset,kind,request,seconds,request_seconds,n_deleted,stop_reason,evaluate``), ``<name>.md``
and ``<name>.png`` (seconds per request). Runs in this process with the machine's torch
threads: time nothing else meanwhile.

    python benchmarks/latency.py --synthetic clothing                 # VBPR and MMGCN, 5 + 5 requests
    python benchmarks/latency.py --models VBPR --requests 3          # ml-100k-mm
    python benchmarks/latency.py --render --name latency_clothing     # rewrite .md/.csv/.png from the JSON
"""
import contextlib
import csv
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from recbole_tru.files import save_png, write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.quick_start import run_recbole_tru  # noqa: E402
from recbole_tru.serving import load_checkpoint  # noqa: E402
from recbole_tru.training import quiet_logging  # noqa: E402

from stream import RequestDrawer, percentile, publish, rendered, request_parser, write_request  # noqa: E402
from unlearning_report import fmt  # noqa: E402

KINDS = ("user", "item")
FORGET_METRIC, RETAIN_METRIC = "recall@20", "ndcg@20"


def synthetic_options(size, data_dir):
    """dataset name, config files, config and generator knobs of the synthetic data set ``size``
    (generated if missing or written by another generator version)."""
    from recbole_tru.data.builders.synthetic import ensure_synthetic

    folder, _, generator = ensure_synthetic(size, data_dir, log=print)
    name = folder.name
    return name, [str(folder / f"{name}.yaml")], {"data_path": str(Path(data_dir).resolve())}, generator


def run_backbone(model_name, args, dataset, files, extra, work):
    base = {"dataset": dataset, "output_dir": str(work / "requests"), "checkpoint_dir": str(work / "saved"),
            "show_progress": False, "state": "WARNING", **extra}
    print(f"== {model_name} on {dataset}: training the original", flush=True)
    tick = time.perf_counter()
    trained = run_recbole_tru(model=model_name, config_file_list=files, config_dict={**base, "output_dir": str(work)},
                              read_cmd_line=False)
    original_path = Path(trained["checkpoint"])
    record = {"model": model_name, "dataset": dataset,
              "original": {"seconds": time.perf_counter() - tick, **trained["summary"],
                           "test_result": trained["test_result"]},
              "requests": []}
    print(f"   original: {record['original']['seconds']:.0f} s, {trained['summary']['epochs']} epochs", flush=True)
    drawer = RequestDrawer(load_checkpoint(original_path), args.seed)
    for kind in args.kinds:
        for r in range(1, args.requests + 1):
            path = write_request(work / f"request-{kind}-{r:02d}.inter", drawer.draw(kind))
            for mode in args.evaluate:
                tick = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):     # the workflow prints its report
                    report = run_recbole_tru(model=model_name, config_file_list=files, config_dict={
                        **base, "checkpoint": str(original_path), "forget_file": str(path), "unlearn": args.method,
                        "audit_enabled": False, "unlearn_evaluate": mode}, read_cmd_line=False)
                wall = time.perf_counter() - tick
                row = {"kind": kind, "request": r, "evaluate": mode, "seconds": report["timings"]["unlearn"],
                       "request_seconds": wall, "timings": report["timings"],
                       "n_deleted": report["deleted"]["interactions"], "stop_reason": report["method"]["stop_reason"],
                       "proof_passed": report["proof_of_deletion"]["passed"],
                       "forget_recall@20": scored(report["forgetting"], FORGET_METRIC),
                       "test_ndcg@20": scored(report["utility"], RETAIN_METRIC)}
                record["requests"].append(row)
                print(f"   {kind} request {r} (evaluate {mode}): {row['n_deleted']} interactions, "
                      f"{row['seconds']:.2f} s unlearning, {wall:.1f} s in all; forget Recall@20 "
                      f"{fmt(row['forget_recall@20']['input'])} -> {fmt(row['forget_recall@20']['output'])}; "
                      f"{row['stop_reason']}", flush=True)
                shutil.rmtree(report["output_dir"], ignore_errors=True)    # checkpoints of a large model add up
    return record


def scored(part, metric):
    """``{input, output}`` of one metric of the workflow report's ``part`` (None where the mode did
    not score that model)."""
    return {side: None if part[side] is None else part[side][metric] for side in ("input", "output")}


def mode_of(row):
    return row.get("evaluate", "both")          # reports written before --evaluate scored both


def _mean_change(rows, metric, sign):
    changes = [sign * (r[metric]["input"] - r[metric]["output"]) for r in rows
               if r[metric]["input"] is not None and r[metric]["output"] is not None]
    return float(np.mean(changes)) if changes else None


# --------------------------------------------------------------------------- the report

def summarise(report):
    modes = report.get("evaluate", ["both"])
    for record in report["backbones"]:
        record["summary"] = {}
        for kind in report["kinds"]:
            every = [r for r in record["requests"] if r["kind"] == kind]
            rows = [r for r in every if mode_of(r) == modes[0]]
            if not rows:
                continue
            seconds = [r["seconds"] for r in rows]
            whole = [r["request_seconds"] for r in rows]
            record["summary"][kind] = {
                "requests": len(rows), "median_seconds": statistics.median(seconds), "p95_seconds": percentile(seconds, 95),
                "max_seconds": max(seconds), "median_request_seconds": statistics.median(whole),
                "median_request_seconds_by_evaluate": {
                    mode: statistics.median(r["request_seconds"] for r in every if mode_of(r) == mode) for mode in modes},
                "median_deleted": statistics.median(r["n_deleted"] for r in rows),
                "mean_forget_drop": _mean_change(rows, "forget_recall@20", 1),
                "mean_ndcg_change": _mean_change(rows, "test_ndcg@20", -1),
                "proofs_passed": sum(bool(r["proof_passed"]) for r in every)}
    return report


def csv_text(report):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["backbone", "dataset", "kind", "request", "seconds", "request_seconds", "n_deleted", "stop_reason",
                     "evaluate"])
    for record in report["backbones"]:
        for r in record["requests"]:
            writer.writerow([record["model"], record["dataset"], r["kind"], r["request"], f"{r['seconds']:.4f}",
                             f"{r['request_seconds']:.2f}", r["n_deleted"], r["stop_reason"], mode_of(r)])
    return buffer.getvalue()


def markdown(report):
    lines = [f"`{report['command']}`: {report['requests']} independent requests per kind and backbone, each on the "
             f"original checkpoint, method `{report['method']}`, workflow audit off; {report['wall_seconds'] / 60:.1f} "
             f"min in all. {report['machine']}.",
             "",
             "<!-- table-1 -->",
             "| backbone | data set | request | interactions deleted (median) | unlearning s: median | p95 | max "
             "| whole request s: median | forget Recall@20 drop (mean) | test NDCG@20 change (mean) | proofs passed "
             "| original: epochs, s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in report["backbones"]:
        o = record["original"]
        for kind, s in record["summary"].items():
            drop = "n/a" if s["mean_forget_drop"] is None else f"{s['mean_forget_drop']:+.4f}"
            change = "n/a" if s["mean_ndcg_change"] is None else f"{s['mean_ndcg_change']:+.5f}"
            runs = sum(1 for r in record["requests"] if r["kind"] == kind)
            lines.append(f"| {record['model']} | {record['dataset']} | one {kind} | {s['median_deleted']:g} "
                         f"| {s['median_seconds']:.2f} | {s['p95_seconds']:.2f} | {s['max_seconds']:.2f} "
                         f"| {s['median_request_seconds']:.1f} | {drop} | {change} | {s['proofs_passed']}/{runs} "
                         f"| {o['epochs']}, {o['seconds']:.0f} |")
    lines += ["", "<!-- table-2 -->",
              "| backbone | request | # | evaluate | deleted | unlearning s | whole s | forget Recall@20 before → after "
              "| stop |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in report["backbones"]:
        for r in record["requests"]:
            lines.append(f"| {record['model']} | one {r['kind']} | {r['request']} | {mode_of(r)} | {r['n_deleted']} "
                         f"| {r['seconds']:.2f} | {r['request_seconds']:.1f} | {fmt(r['forget_recall@20']['input'])} → "
                         f"{fmt(r['forget_recall@20']['output'])} | {r['stop_reason']} |")
    modes = report.get("evaluate", ["both"])
    if len(modes) > 1:
        lines += ["", "<!-- table-3 -->",
                  "| backbone | request | " + " | ".join(f"whole request s, evaluate {m}: median" for m in modes)
                  + " | ratio |",
                  "| --- | --- | " + "--- | " * len(modes) + "--- |"]
        for record in report["backbones"]:
            for kind, s in record["summary"].items():
                by = s["median_request_seconds_by_evaluate"]
                lines.append(f"| {record['model']} | one {kind} | " + " | ".join(f"{by[m]:.1f}" for m in modes)
                             + f" | {by[modes[0]] / by[modes[-1]]:.1f}x |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    labels = []
    for record in report["backbones"]:
        for kind in report["kinds"]:
            seconds = [r["seconds"] for r in record["requests"] if r["kind"] == kind]
            if seconds:
                x = len(labels)
                ax.scatter(np.full(len(seconds), x) + np.linspace(-0.12, 0.12, len(seconds)), seconds, s=18)
                ax.hlines(statistics.median(seconds), x - 0.3, x + 0.3, color="black")
                labels.append(f"{record['model']}\none {kind}")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("unlearning seconds (bar: median)")
    ax.set_title(f"one-request latency ({report['backbones'][0]['dataset']})", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def write_outputs(report, out, name):
    write_texts(out, name, (("json", json.dumps(report, indent=2)), ("csv", csv_text(report)),
                            ("md", markdown(report))))
    plot(report, out / f"{name}.png")


def main(argv=None):
    parser = request_parser(__doc__, "latency", 5)
    parser.add_argument("--synthetic", default=None, help="a synthetic size (tiny, baby, sports, clothing)")
    parser.add_argument("--data", default=str(HERE / "data"), help="parent folder of the synthetic data sets")
    parser.add_argument("--kinds", default=",".join(KINDS), help="request kinds: user, item, pair, mixed")
    parser.add_argument("--evaluate", default="both",
                        help="comma list of unlearn_evaluate modes (both, output, none), each request sent once per mode")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = rendered(args, summarise, write_outputs)
    if report is not None:
        return report
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(args.kinds) - {"user", "item", "pair", "mixed"})
    if unknown or args.requests < 1:
        raise SystemExit(f"--kinds takes user, item, pair, mixed (got {unknown}); --requests must be >= 1")
    args.evaluate = [m for m in args.evaluate.split(",") if m]
    if not args.evaluate or set(args.evaluate) - {"both", "output", "none"} or len(set(args.evaluate)) < len(args.evaluate):
        raise SystemExit(f"--evaluate takes distinct modes out of both, output, none (got {args.evaluate})")
    extra = json.loads(args.config)
    generator = None
    if args.synthetic:
        dataset, files, data_extra, generator = synthetic_options(args.synthetic, args.data)
        files += args.config_files.split() if args.config_files else []
        extra = {**data_extra, **extra}
    else:
        dataset, files = args.dataset, args.config_files.split() if args.config_files else None
    quiet_logging()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recbole_tru_latency_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        backbones = [run_backbone(m, args, dataset, files, extra, work / m) for m in args.models.split(",")]
    import torch

    report = {"command": " ".join(["python benchmarks/latency.py"] + (argv if argv is not None else sys.argv[1:])),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
                         f"({torch.get_num_threads()} threads)",
              "environment": environment(), "wall_seconds": time.perf_counter() - start, "requests": args.requests,
              "kinds": args.kinds, "evaluate": args.evaluate, "method": args.method, "seed": args.seed, "config": extra,
              "generator": generator, "backbones": backbones}
    return publish(report, out, args.name, summarise, write_outputs, markdown)


if __name__ == "__main__":
    main()
