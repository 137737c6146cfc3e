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
"""
import argparse
import csv
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_tru import stats  # noqa: E402
from recbole_tru.audit import SHADOW, audit_rng  # noqa: E402
from recbole_tru.audit.shadow import train_shadow  # noqa: E402
from recbole_tru.config import Config  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.quick_start import load_data, quiet_logging, run_recbole_tru  # noqa: E402
from recbole_tru.registry import get_unlearn_trainer  # noqa: E402
from recbole_tru.unlearn import pipeline  # noqa: E402
from recbole_tru.unlearn.data import UnlearnData  # noqa: E402
from recbole_tru.unlearn.evaluation import Judge  # noqa: E402
from recbole_tru.unlearn.forget import select_forget  # noqa: E402

METHODS = ("retrain", "finetune", "gradascent", "reverse", "tru", "sisa")
CURVE_METHODS = ("tru", "reverse", "finetune")
# Request r of every cell uses FORGET_SEEDS[r]. 2024 is the plugin's default request (forget_seed);
# the calibration request (forget_seed=1, benchmarks/calibration.py), on which TRU's defaults
# were chosen, is never among them.
FORGET_SEEDS = (2024, 2025, 2026, 2027, 2028, 2029, 2030, 2031, 2032, 2033)
# Original model k >= 1 of the variance study is trained with model_seed TRAIN_SEEDS[k] (the split
# stays that of config `seed`); original 0 is the plain run's (model_seed unset = `seed`, RecBole's
# default 2020), the original every main table is judged on.
TRAIN_SEEDS = (None, 2021, 2022, 2023, 2024)
# TRU minus one part: method name in the summary -> (label, config overrides)
ABLATIONS = {
    "tru": ("TRU (all parts)", {}),
    "tru-reset": ("- reset", {"tru_reset": False}),
    "tru-isolation": ("- isolation (routing + mask)", {"tru_route": False, "tru_isolate": False}),
    "tru-gate": ("- gate", {"tru_gate": False}),
    "tru-stop": ("- guarded stop", {"tru_stop": "epochs"}),
    "tru-scaling": ("- modality scaling", {"tru_scaling": False}),
    "tru-repair": ("- repair", {"tru_repair_epochs": 0}),
}
# metric -> lower is better?
METRICS = {"forget_gap": True, "retain_gap": True, "retain_ratio": None, "mia_distance": True,
           "mia_auc": None, "mia_user_distance": True, "topk_overlap": False, "seconds": True,
           "speedup": False, "retain_ndcg": None, "forget_recall": None}
PAIRED_METRICS = ("forget_gap", "retain_gap", "mia_distance", "topk_overlap", "seconds")
VARIANCE_METRICS = ("forget_gap", "retain_gap", "mia_distance", "retain_ndcg")
VARIANCE_METHODS = ("original", "retrain", "finetune", "reverse", "tru")


# ---------------------------------------------------------------------------------------------
# one request (runs in a worker process)

def cell_config(model, regime, out, extra):
    return {"unlearn": ",".join(METHODS), "forget_regime": regime, "unlearn_trajectory": True,
            "output_dir": str(out), "state": "WARNING", "show_progress": False,
            "sisa_parallel": False, **extra}   # SISA's shards one after another: every method timed in one process


def prepare_cell(model, regime, out, extra, dataset, config_files=None):
    """Config, retained data, original model, judge and retrain summary of one cell (the
    original and retrained models come from the run's cache when a cell ran before)."""
    base = cell_config(model, regime, out, extra)
    config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=base, read_cmd_line=False)
    _, train, valid, test = load_data(config)
    cache = Path(config["output_dir"]) / "cache"
    original, _, _ = pipeline.train_reference(config, (train, valid), cache, "original")
    forget = select_forget(config, train.dataset)
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    retrained, summary, _ = pipeline.train_reference(config, (data.retain_loader(), data.eval_loader("valid")),
                                                     cache, "retrain", pipeline.forget_digest(forget))
    return base, data, original, Judge(config, data, retrained), summary, config_files


def run_variants(model, regime, out, extra, dataset, variants, method="tru", config_files=None):
    """``method`` with each ``{name: overrides}`` variant on one cell; judged, no audit."""
    base, data, original, judge, summary, files = prepare_cell(model, regime, out, extra, dataset, config_files)
    rows = {}
    for name, overrides in variants.items():
        variant = Config(model=model, dataset=dataset, config_file_list=files,
                         config_dict={**base, **overrides, "unlearn_trajectory": False}, read_cmd_line=False)
        data.config = variant
        model_u, trainer, _ = pipeline.unlearn_method(variant, overrides.get("method", method), data, original)
        rows[name] = {**judge.report(model_u), "seconds": trainer.seconds,
                      "stop_reason": getattr(trainer, "stop_reason", None)}
    return {"retrain_seconds": summary["seconds"], "reference": judge.reference, "variants": rows}


def figures(r, ref, retrain_seconds):
    """The benchmark's per-request figures of one method's result ``r`` (``ref``: the retrained
    model's result in the same request)."""
    out = {"forget_recall": r["forget"]["recall@20"], "retain_ndcg": r["retain"]["ndcg@20"],
           "forget_gap": r["gap_to_retrain"]["forget"]["recall@20"],
           "retain_gap": r["gap_to_retrain"]["retain"]["ndcg@20"],
           "retain_ratio": r["retain"]["ndcg@20"] / ref["retain"]["ndcg@20"] if ref["retain"]["ndcg@20"] else None,
           "topk_overlap": r["topk_overlap_with_retrain"]}
    if r.get("mia_auc") is not None and ref.get("mia_auc") is not None:
        out["mia_auc"] = r["mia_auc"]
        out["mia_distance"] = abs(r["mia_auc"] - ref["mia_auc"])
        out["attacks"] = r.get("mia") or {}
    if r.get("mia_auc_user") is not None and ref.get("mia_auc_user") is not None:
        out["mia_user_distance"] = abs(r["mia_auc_user"] - ref["mia_auc_user"])
    seconds = r.get("seconds")
    if seconds is not None:
        out["seconds"] = seconds
        out["speedup"] = retrain_seconds / max(seconds, 1e-9)
    return out


def model_seed(job):
    """The config override that trains original ``job["original"]`` (none for original 0)."""
    return {"model_seed": TRAIN_SEEDS[job["original"]]} if job["original"] else {}


def request_job(job):
    """One request of one cell: the unlearning run (+ the ablation) -> a compact record."""
    extra = {**job["extra"], "forget_seed": job["forget_seed"], **model_seed(job)}
    if job["methods"] != METHODS:
        extra["unlearn"] = ",".join(job["methods"])
    start = time.perf_counter()
    res = run_recbole_tru(model=job["model"], dataset=job["dataset"], config_file_list=job["config_files"],
                          config_dict={**cell_config(job["model"], job["regime"], job["out"], {}), **extra},
                          read_cmd_line=False)
    ref = res["retrain_reference"]
    retrain_s = res["methods"]["retrain"]["seconds"]
    methods = {"original": figures(res["original"], ref, retrain_s)}
    trajectories = {}
    for name, r in res["methods"].items():
        methods[name] = figures(r, ref, retrain_s)
        if name in CURVE_METHODS and r.get("trajectory"):
            trajectories[name] = [{"forget_recall": p["forget_recall@20"], "retain_ndcg": p["retain_ndcg@20"],
                                   "epoch": p["epoch"]} for p in r["trajectory"]]
        if name == "tru":
            methods[name]["stop_reason"] = r.get("details", {}).get("stop_reason")
    record = {"model": job["model"], "regime": job["regime"], "forget_seed": job["forget_seed"],
              "original": job["original"], "forget": res["forget"], "output_dir": res.get("output_dir"),
              "retrain": {"retain_ndcg": ref["retain"]["ndcg@20"], "forget_recall": ref["forget"]["recall@20"],
                          "mia_auc": ref.get("mia_auc"), "seconds": retrain_s},
              "original_training": res["original"].get("training"), "methods": methods,
              "trajectories": trajectories, "unlearning_seconds": time.perf_counter() - start}
    if job["ablation"]:
        variants = {name: overrides for name, (_, overrides) in ABLATIONS.items()}
        ab = run_variants(job["model"], job["regime"], job["out"], extra, job["dataset"], variants,
                          config_files=job["config_files"])
        record["ablation"] = {name: {**figures(r, ab["reference"], ab["retrain_seconds"]), "stop_reason": r["stop_reason"]}
                              for name, r in ab["variants"].items()}
    record["wall_seconds"] = time.perf_counter() - start
    return record


def original_job(job):
    """Train (into the run's cache) what every request of one original reuses: the original
    model, the audit's shadow model and SISA's shard models (none depends on the request)."""
    start = time.perf_counter()
    config = Config(model=job["model"], dataset=job["dataset"], config_file_list=job["config_files"],
                    config_dict={**cell_config(job["model"], job["regime"], job["out"], job["extra"]),
                                 **model_seed(job), "forget_seed": FORGET_SEEDS[0]}, read_cmd_line=False)
    _, train, valid, test = load_data(config)
    (train, valid, test), _, held_key = pipeline.prepare_splits(config, train, valid, test)
    original, summary, cached = pipeline.train_reference(config, (train, valid), Path(job["out"]) / "cache",
                                                         "original", held_key)
    forget = select_forget(config, train.dataset, heldout=(valid.dataset, test.dataset))
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    if config["audit_enabled"] and config["audit_shadow"]:
        train_shadow(config, data, audit_rng(config, SHADOW))
    if "sisa" in job["methods"]:
        get_unlearn_trainer("sisa")(config, pipeline.start_from(config, data, original), data).train_original()
    return {"model": job["model"], "regime": job["regime"], "original": job["original"], "summary": summary,
            "cached": cached, "wall_seconds": time.perf_counter() - start}


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
# aggregation

def _values(records, method, metric, part="methods"):
    return [rec[part][method].get(metric) for rec in records if method in rec.get(part, {})]


def aggregate(records):
    """Per method (and ablation variant): ``{metric: t_interval}`` over the records' requests."""
    out = {}
    methods = list(dict.fromkeys(m for rec in records for m in rec["methods"]))
    for method in methods:
        out[method] = {metric: stats.t_interval(_values(records, method, metric)) for metric in METRICS}
        out[method] = {k: v for k, v in out[method].items() if v["n"]}
        attacks = sorted({a for rec in records for a in rec["methods"][method].get("attacks", {})})
        if attacks:
            out[method]["attacks"] = {a: stats.t_interval([rec["methods"][method].get("attacks", {}).get(a)
                                                           for rec in records]) for a in attacks}
    for name in ABLATIONS:
        if name != "tru" and any(name in rec.get("ablation", {}) for rec in records):
            out[name] = {metric: stats.t_interval(_values(records, name, metric, "ablation"))
                         for metric in ("forget_gap", "retain_gap", "retain_ratio", "topk_overlap", "seconds",
                                        "speedup")}
    return out


def compare(records):
    """TRU against every other method, request by request; ablation variants against full TRU
    (on the ablation's own TRU run, so both sides share the cell's data and reference)."""
    out = {}
    for method in dict.fromkeys(m for rec in records for m in rec["methods"]):
        if method in ("tru", "retrain"):
            continue
        out[method] = {metric: stats.paired(_values(records, "tru", metric), _values(records, method, metric),
                                            lower_is_better=METRICS[metric] is not False)
                       for metric in PAIRED_METRICS if METRICS[metric] is not None}
    ablation = {}
    for name in ABLATIONS:
        if name == "tru" or not any(name in rec.get("ablation", {}) for rec in records):
            continue
        # variant - TRU: a positive gap difference means the part helps (removing it widens the gap)
        ablation[name] = {metric: stats.paired(_values(records, name, metric, "ablation"),
                                               _values(records, "tru", metric, "ablation"),
                                               lower_is_better=METRICS[metric])
                          for metric in ("forget_gap", "retain_gap")}
    return out, ablation


def variance(records):
    """Original-model vs request variance per method and metric (records of >= 2 training seeds)."""
    seeds = sorted({rec["original"] for rec in records})   # originals 0..K-1
    requests = sorted({rec["forget_seed"] for rec in records})
    if len(seeds) < 2 or len(requests) < 2:
        return None
    by_key = {(rec["original"], rec["forget_seed"]): rec for rec in records}
    out = {}
    for method in VARIANCE_METHODS:
        for metric in VARIANCE_METRICS:
            table = [[by_key.get((s, r), {}).get("methods", {}).get(method, {}).get(metric) for r in requests]
                     for s in seeds]
            if any(v is None for row in table for v in row):
                continue
            comp = stats.variance_components(table)
            out.setdefault(method, {})[metric] = {**comp, "mean": float(np.mean(table))}
    return {"originals": seeds, "forget_seeds": requests, "components": out}


def summarise(report):
    """Aggregates, paired comparisons and variance per cell (from the per-request records)."""
    for cell in report["cells"]:
        main = [rec for rec in cell["requests"] if rec["original"] == 0]
        cell["aggregate"] = aggregate(main)
        cell["paired"], cell["ablation_paired"] = compare(main)
        cell["variance"] = variance(cell["requests"])
    return report


def summary_rows(report):
    for cell in report["cells"]:
        for method, metrics in cell["aggregate"].items():
            for metric, ci in metrics.items():
                if metric == "attacks":
                    continue
                yield {"backbone": cell["model"], "regime": cell["regime"], "method": method, "metric": metric,
                       "n": ci["n"], "mean": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}


def write_summary_csv(report, path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["backbone", "regime", "method", "metric", "n", "mean", "ci_low",
                                               "ci_high"])
        writer.writeheader()
        for row in summary_rows(report):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# ---------------------------------------------------------------------------------------------
# tables and plot

def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def half_width(ci):
    """Half the width of a t_interval (0 when it is undefined, n = 1)."""
    return 0.0 if ci["ci_high"] is None else (ci["ci_high"] - ci["ci_low"]) / 2


def pm(ci, digits=4):
    """``mean ± half-width`` of a t_interval (the mean alone when n = 1)."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    if ci.get("ci_high") is None:
        return fmt(ci["mean"], digits)
    return f"{ci['mean']:.{digits}f} ± {half_width(ci):.{digits}f}"


def diff_ci(p, digits=4):
    d = p["diff"]
    if d["mean"] is None:
        return "n/a"
    if d["ci_low"] is None:
        return f"{d['mean']:+.{digits}f}"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def wins(p):
    return f"{p['wins']}/{p['n']}" + (f" ({p['ties']} tied)" if p["ties"] else "")


def headline(report):
    """The README's table: TRU, reverse and finetune per cell (mean ± CI) and TRU's wins."""
    n = report["requests"]
    lines = [f"Mean ± 95 % t-interval half-width over {n} requests per cell; wins = requests (of {n}) where TRU's "
             "gap is strictly smaller (forget / retain / MIA distance).", "",
             "| backbone | regime | forget gap: TRU | reverse | finetune | retain gap: TRU | reverse | finetune | "
             "TRU wins vs reverse | TRU wins vs finetune | TRU x faster than retrain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        a, p = cell["aggregate"], cell["paired"]

        def w(base):
            if base not in p:
                return "n/a"
            return " / ".join(str(p[base][m]["wins"]) if m in p[base] and p[base][m]["n"] else "-"
                              for m in ("forget_gap", "retain_gap", "mia_distance"))

        g = lambda m, metric: pm(a.get(m, {}).get(metric))  # noqa: E731
        lines.append(f"| {cell['model']} | {cell['regime']} | {g('tru', 'forget_gap')} | {g('reverse', 'forget_gap')} | "
                     f"{g('finetune', 'forget_gap')} | {g('tru', 'retain_gap')} | {g('reverse', 'retain_gap')} | "
                     f"{g('finetune', 'retain_gap')} | {w('reverse')} | {w('finetune')} | "
                     f"{pm(a.get('tru', {}).get('speedup'), 1)} |")
    return lines


def markdown(report):
    n = report["requests"]
    lines = headline(report) + ["", f"Every method, mean ± 95 % t-interval half-width over {n} requests per cell "
                                f"(forget seeds {', '.join(map(str, FORGET_SEEDS[:n]))}), one original per backbone.", "",
             "| backbone | regime | method | forget gap | retain gap | test NDCG@20 / retrain's | MIA distance | "
             "top-20 overlap | seconds | x faster than retrain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        for method, a in cell["aggregate"].items():
            if method.startswith("tru-"):
                continue
            lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {pm(a.get('forget_gap'))} | "
                         f"{pm(a.get('retain_gap'))} | {pm(a.get('retain_ratio'), 3)} | {pm(a.get('mia_distance'), 3)} | "
                         f"{pm(a.get('topk_overlap'), 3)} | {pm(a.get('seconds'), 2) if method != 'original' else 'n/a'} | "
                         f"{pm(a.get('speedup'), 1) if method not in ('original', 'retrain') else 'n/a'} |")
    lines += ["", "TRU against each baseline, request by request: TRU's wins out of the requests (smaller gap or "
              "MIA distance), the mean paired difference TRU − baseline with its 95 % t-interval, and the exact "
              "two-sided sign test (with 5 requests its smallest possible p is 0.0625).", "",
              "| backbone | regime | baseline | forget gap: wins, diff [CI], sign p | retain gap: wins, diff [CI], sign p | "
              "MIA distance: wins, diff [CI], sign p |", "| --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        for base, p in cell["paired"].items():
            parts = [f"{wins(p[m])}, {diff_ci(p[m])}, p={p[m]['sign_p']:.3f}" if m in p and p[m]["n"] else "n/a"
                     for m in ("forget_gap", "retain_gap", "mia_distance")]
            lines.append(f"| {cell['model']} | {cell['regime']} | {base} | " + " | ".join(parts) + " |")
    lines += [""] + audit_markdown(report)
    for cell in report["cells"]:
        if not cell.get("ablation_paired"):
            continue
        a = cell["aggregate"]
        lines += ["", f"Ablation, {cell['model']}, {cell['regime']} regime: TRU without one part, on the same "
                  f"{n} requests. Δ = variant − full TRU (paired, 95 % t-interval); a positive Δ means the part "
                  "narrows that gap (it helps).", "",
                  "| variant | forget gap | retain gap | Δ forget gap [CI] | Δ retain gap [CI] | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        main = [rec for rec in cell["requests"] if rec["original"] == 0]
        tru = {m: stats.t_interval(_values(main, "tru", m, "ablation")) for m in ("forget_gap", "retain_gap")}
        lines.append(f"| {ABLATIONS['tru'][0]} | {pm(tru['forget_gap'])} | {pm(tru['retain_gap'])} | | | |")
        for name, p in cell["ablation_paired"].items():
            lines.append(f"| {ABLATIONS[name][0]} | {pm(a[name]['forget_gap'])} | {pm(a[name]['retain_gap'])} | "
                         f"{diff_ci(p['forget_gap'])} | {diff_ci(p['retain_gap'])} | {pm(a[name]['seconds'], 2)} |")
    lines += variance_markdown(report)
    return "\n".join(lines) + "\n"


ATTACKS = ("logistic", "rank", "score", "margin", "delta", "shadow")


def audit_markdown(report):
    """Membership-inference AUC (forget pairs vs unseen pairs), mean ± CI of every model and
    attack, and the headline (logistic) AUC's distance to the retrained model's."""
    lines = ["Membership inference, AUC of forget pairs vs never-trained pairs, mean ± 95 % CI over the requests "
             "(`mia_auc` = logistic attack on all output features; distance = |AUC − retrain's| per request):", "",
             "| backbone | regime | model | mia_auc | distance to retrain | " + " | ".join(ATTACKS[1:]) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in ATTACKS[1:]) + " |"]
    for cell in report["cells"]:
        for method, a in cell["aggregate"].items():
            if "mia_auc" not in a:
                continue
            attacks = a.get("attacks", {})
            lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {pm(a['mia_auc'], 3)} | "
                         f"{'' if method == 'retrain' else pm(a.get('mia_distance'), 3)} | "
                         + " | ".join(pm(attacks.get(x), 3) for x in ATTACKS[1:]) + " |")
    return lines


def variance_markdown(report):
    cells = [c for c in report["cells"] if c.get("variance")]
    if not cells:
        return []
    lines = ["", "Where the spread comes from: two-way random-effects ANOVA over training seeds (the original "
             "model) x requests, one run per pair; shares of the variance due to the original model, the "
             "request, and their interaction/noise.", "",
             "| backbone | regime | method | metric | mean | sd | original model | request | residual |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in cells:
        v = cell["variance"]
        for method, metrics in v["components"].items():
            for metric, c in metrics.items():
                sd = (c["var_seed"] + c["var_request"] + c["var_residual"]) ** 0.5
                share = lambda x: "n/a" if x is None else f"{100 * x:.0f} %"  # noqa: E731
                lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {metric} | {fmt(c['mean'])} | "
                             f"{fmt(sd)} | {share(c['share_seed'])} | {share(c['share_request'])} | "
                             f"{share(c['share_residual'])} |")
        lines.append(f"| | | | ({len(v['originals'])} training seeds x {len(v['forget_seeds'])} requests) | | | | | |")
    return lines


def mean_curve(curves):
    """Mean and 95 % half-widths per epoch over requests (the epochs every request reached),
    then the final state's."""
    epochs = [p for p in curves[0] if p["epoch"] != "final"]
    points = []
    for k in range(len(epochs)):
        at = [c[k] for c in curves if k < len(c) and c[k]["epoch"] != "final"]
        if len(at) < len(curves):
            break
        points.append(at)
    points.append([next(p for p in c if p["epoch"] == "final") for c in curves if any(p["epoch"] == "final" for p in c)])
    out = []
    for at in points:
        x = stats.t_interval([p["forget_recall"] for p in at])
        y = stats.t_interval([p["retain_ndcg"] for p in at])
        out.append((x["mean"], y["mean"], half_width(x), half_width(y)))
    return out


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    cols = min(len(cells), 3)
    rows = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False)
    colors = {"tru": "tab:green", "reverse": "tab:red", "finetune": "tab:blue"}
    for ax, cell in zip(axes.flat, cells):
        recs = [r for r in cell["requests"] if r["original"] == 0]
        for name in CURVE_METHODS:
            curves = [r["trajectories"][name] for r in recs if r["trajectories"].get(name)]
            if not curves:
                continue
            pts = np.array(mean_curve(curves))
            ax.plot(pts[:, 0], pts[:, 1], "-o", ms=3, color=colors[name], label=f"{name} (mean per epoch, then final)")
            order = np.argsort(pts[:, 0])
            ax.fill_between(pts[order, 0], pts[order, 1] - pts[order, 3], pts[order, 1] + pts[order, 3],
                            color=colors[name], alpha=0.18, lw=0)
            ax.errorbar(pts[-1, 0], pts[-1, 1], xerr=pts[-1, 2], yerr=pts[-1, 3], fmt="s", ms=7, color=colors[name],
                        capsize=3)
        for label, key, style in (("original", None, dict(fmt="kx", ms=9)),
                                  ("retrain", "retrain", dict(fmt="*", color="gold", mec="k", ms=16))):
            if key:
                xs, ys = [r["retrain"]["forget_recall"] for r in recs], [r["retrain"]["retain_ndcg"] for r in recs]
            else:
                xs = [r["methods"]["original"]["forget_recall"] for r in recs]
                ys = [r["methods"]["original"]["retain_ndcg"] for r in recs]
            x, y = stats.t_interval(xs), stats.t_interval(ys)
            ax.errorbar(x["mean"], y["mean"], xerr=half_width(x), yerr=half_width(y), capsize=3, label=label, **style)
        ax.set_title(f"{cell['model']}, {cell['regime']} regime ({len(recs)} requests)")
        ax.set_xlabel("forget Recall@20 (retrain's value is the target)")
        ax.set_ylabel("test NDCG@20")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Retain utility vs forgetting per unlearning epoch: mean over requests, 95 % band (square = final state)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report, out):
    """The JSON, the summary CSV, the tables and the plot, each written whole (temp + rename)."""
    out.mkdir(parents=True, exist_ok=True)

    def put(name, write):
        tmp = out / f".{name}.tmp"
        write(tmp)
        tmp.replace(out / name)

    put("unlearning.json", lambda p: p.write_text(json.dumps(report, indent=1, default=float)))
    put("unlearning_summary.csv", lambda p: write_summary_csv(report, p))
    put("unlearning.md", lambda p: p.write_text(markdown(report)))
    put("unlearning_tradeoff.png", lambda p: plot(report, p.with_suffix(".png")) or p.with_suffix(".png").replace(p))


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
                for forget_seed in FORGET_SEEDS[:args.requests]:
                    requests.append({**common, "model": model, "regime": regime, "original": k,
                                     "forget_seed": forget_seed,
                                     # the variance study runs the methods that start from the original
                                     "methods": methods if k == 0 else tuple(m for m in methods if m != "sisa"),
                                     "ablation": k == 0 and regime == "interaction" and not args.no_ablation})
    # longest first (MMGCN, requests with SISA and the ablation), so the pool ends together
    requests.sort(key=lambda j: (j["model"] != "MMGCN", "sisa" not in j["methods"], not j["ablation"]))
    return originals, requests


def main(argv=None):
    parser = grid_parser(__doc__)
    parser.add_argument("--requests", type=int, default=5, help=f"requests per cell (at most {len(FORGET_SEEDS)})")
    parser.add_argument("--train-seeds", type=int, default=1,
                        help="originals per backbone for the variance study (1 = none; at most 5)")
    parser.add_argument("--variance-cells", default="interaction", help="regimes of the variance study")
    parser.add_argument("--methods", default=None, help=f"comma list out of {','.join(METHODS)} (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (1 = this process)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--render", action="store_true",
                        help="rewrite the .md, .csv and .png from <out>/unlearning.json (aggregates recomputed)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.render:
        report = summarise(json.loads((out / "unlearning.json").read_text()))
        write_outputs(report, out)
        return report
    if not 1 <= args.requests <= len(FORGET_SEEDS) or not 1 <= args.train_seeds <= len(TRAIN_SEEDS):
        raise SystemExit(f"--requests must be in 1..{len(FORGET_SEEDS)} and --train-seeds in 1..{len(TRAIN_SEEDS)}")
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
              "wall_seconds": wall, "requests": args.requests, "forget_seeds": list(FORGET_SEEDS[:args.requests]),
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
