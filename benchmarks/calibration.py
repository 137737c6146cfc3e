"""TRU design choices, measured on a CALIBRATION request (``forget_seed=1``), never on the
request the README's results judge (``forget_seed=2024``).

Each row is a variant of TRU (or the reverse baseline) on the same cell: same original model,
same calibration forget set, same retrained reference. The variants are the spec's starting
design and the changes this project made to it; see the README, "TRU, as implemented".

    python benchmarks/calibration.py                  # 6 cells, ~10 min on 2 cores
    python benchmarks/calibration.py --models VBPR --regimes interaction
    python benchmarks/calibration.py --audit --tag _stop --variants "default;rank-AUC stop (δ .02)"   # + audit
    python benchmarks/calibration.py --seeds 1,2,3,4,5 --variants "default;..."   # 5 calibration requests

With several ``--seeds`` (calibration requests, never a judged request's seed), a second table
gives each variant's mean over the requests and its paired difference from the default, with
95 % Student-t intervals (``recbole_tru.stats.paired``): a design choice is then judged, like a
method, on repeated requests, not on one draw.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unlearning import grid_parser  # noqa: E402  (puts the repository root on the path)
from unlearning_jobs import FORGET_SEEDS, run_variants  # noqa: E402
from unlearning_report import fmt, half_width  # noqa: E402

import yaml  # noqa: E402

from recbole_tru.config import PROPERTIES  # noqa: E402
from recbole_tru.files import save_png, write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.stats import paired, t_interval  # noqa: E402

CALIBRATION_SEED = 1
VARIANTS = {
    "spec: KS stop (δ .05), lr .001, pooled matching": {"tru_stop_metric": "ks", "tru_item_stop_metric": "ks",
                                                       "tru_stop_delta": 0.05, "tru_learning_rate": 0.001,
                                                       "tru_match": "pooled"},
    "KS stop (δ .05), lr .003, pooled matching": {"tru_stop_metric": "ks", "tru_item_stop_metric": "ks",
                                                 "tru_stop_delta": 0.05, "tru_match": "pooled"},
    "recall stop (δ .01), lr .003, pooled matching": {"tru_match": "pooled", "tru_item_stop_metric": "recall"},
    "recall stop, per-user matching": {"tru_item_stop_metric": "recall"},
    "default (+ deleted items' pairs stop on rank AUC)": {},      # since 2026-12-06: items' rows routed, repair at the training lr; 2026-12-07: cold reset, crossing search
    "default, frozen reference": {"tru_reference": "frozen"},
    "default, no repair": {"tru_repair_epochs": 0},
    "reverse (default E=5)": {"method": "reverse"},
    "rank-AUC stop (δ .02)": {"tru_stop_metric": "auc", "tru_stop_delta": 0.02},      # every group on rank AUC
    "rank-AUC stop (δ .05)": {"tru_stop_metric": "auc", "tru_stop_delta": 0.05},
    "two-sided gate": {"tru_gate_two_sided": True},
    "two-sided gate + rank-AUC stop (δ .02)": {"tru_gate_two_sided": True, "tru_stop_metric": "auc", "tru_stop_delta": 0.02},
    "item rows routed too": {"tru_route_items": True},             # the default since 2026-12-06
    "items' rows not routed": {"tru_route_items": False},
    "items' bias not routed": {"tru_route_item_bias": False},
    "push not projected (before 2026-12-07 evening)": {"tru_push_project": 0},   # the default since then: r = 1
    "push projected off the top 4 directions": {"tru_push_project": 4},
    "push projected off the top 16 directions": {"tru_push_project": 16},
    "repair 4 epochs": {"tru_repair_epochs": 4},
    "matched in the order of retained support": {"tru_match_order": "support"},
    "support order + two-sided gate + rank-AUC stop": {"tru_match_order": "support", "tru_gate_two_sided": True,
                                                       "tru_stop_metric": "auc"},
    "support order + two-sided gate + rank-AUC stop + repair 4 epochs": {
        "tru_match_order": "support", "tru_gate_two_sided": True, "tru_stop_metric": "auc", "tru_repair_epochs": 4},
    "support order (pooled below 3 pairs) + two-sided gate + rank-AUC stop + repair 4 epochs": {
        "tru_match_order": "support", "tru_match_min_pairs": 3, "tru_gate_two_sided": True,
        "tru_stop_metric": "auc", "tru_repair_epochs": 4},
    "pooled support order + two-sided gate + rank-AUC stop + repair 4 epochs": {
        "tru_match": "pooled", "tru_match_order": "support", "tru_gate_two_sided": True, "tru_stop_metric": "auc",
        "tru_repair_epochs": 4},
    # tru_solve (docs/tru.md, "Forget pairs put at their targets in closed form"). The three "no gradient
    # steps" variants were measured (calibration_solve*.md) while the support key was measured only by the
    # targeted update's start: they ran in rank order, whatever their labels say; run now, they use support.
    "rows solved to the targets, support order, no gradient steps": {"tru_solve": "rows", "tru_match_order": "support",
                                                                    "tru_epochs": 0},
    "rows solved, support order, no gradient steps, pooled below 3 pairs": {
        "tru_solve": "rows", "tru_match_order": "support", "tru_epochs": 0, "tru_match_min_pairs": 3},
    "rows solved, support order, no gradient steps, drawn quantiles": {
        "tru_solve": "rows", "tru_match_order": "support", "tru_epochs": 0, "tru_match_quantiles": "drawn"},
    "rows solved, support order, drawn quantiles": {
        "tru_solve": "rows", "tru_match_order": "support", "tru_match_quantiles": "drawn"},
    "rows solved, drawn quantiles": {"tru_solve": "rows", "tru_match_quantiles": "drawn"},
    "isolation off (routing + mask)": {"tru_route": False, "tru_isolate": False},
    "learning rate .001": {"tru_learning_rate": 0.001},
    "repair at the training learning rate": {"tru_repair_learning_rate": None},   # the default since 2026-12-06
    "repair at the training learning rate, 1 epoch": {"tru_repair_learning_rate": None, "tru_repair_epochs": 1},
    "repair at the training learning rate + item rows routed": {"tru_repair_learning_rate": None,
                                                               "tru_route_items": True},
    "repair lr .001": {"tru_repair_learning_rate": 0.001},
    "before 2026-12-06 (items' rows not routed, repair lr .001)": {"tru_route_items": False,
                                                                   "tru_repair_learning_rate": 0.001},
    "gate off": {"tru_gate": False},
    "deleted items reset to init + cold items' drift": {"tru_reset_items": "cold"},   # the default since 2026-12-07
    "modality scaling off": {"tru_scaling": False},
    "adaptive check interval": {"tru_check_adaptive": True},
    "crossing refined (3 checks)": {"tru_stop_refine": 3},                 # the default since 2026-12-07
    "no crossing search (before 2026-12-07)": {"tru_stop_refine": 0},
    "deleted items reset to init (before 2026-12-07)": {"tru_reset_items": "init"},
    "repair first": {"tru_repair_first": True},
    "repair first, frozen reference": {"tru_repair_first": True, "tru_reference": "frozen"},
    "gated repair (down)": {"tru_repair_gate": "down"},
    "gated repair (both ways)": {"tru_repair_gate": "both"},
    "guarded repair": {"tru_repair_gate": "guarded"},
    "guarded repair, frozen reference": {"tru_repair_gate": "guarded", "tru_reference": "frozen"},
}
# the privacy-first presets as they are on disk (docs/tru.md). The gradient-step preset was
# properties/presets/tru_privacy.yaml until 2026-12-07 late (now tru_privacy_steps.yaml): the result
# files of that day name it by its old path, and this label still runs it.
PRESET = "privacy preset (properties/presets/tru_privacy.yaml)"
VARIANTS[PRESET] = yaml.safe_load((PROPERTIES / "presets" / "tru_privacy_steps.yaml").read_text(encoding="utf-8"))
SOLVE_PRESET = "privacy preset, closed-form solve (properties/presets/tru_privacy.yaml)"
VARIANTS[SOLVE_PRESET] = yaml.safe_load((PROPERTIES / "presets" / "tru_privacy.yaml").read_text(encoding="utf-8"))
SOLVE_PRESET_5 = "privacy preset, closed-form solve, 5 passes"       # 2026-12-08: the passes' convergence
VARIANTS[SOLVE_PRESET_5] = {**VARIANTS[SOLVE_PRESET], "tru_solve_passes": 5}
DEFAULT = "default (+ deleted items' pairs stop on rank AUC)"


def markdown(report):
    audit = report.get("audit", False)
    several = len(report.get("forget_seeds", [report.get("forget_seed")])) > 1
    extra = " MIA distance | rank-attack distance | delta distance | drop distance |" if audit else ""
    lines = ["| backbone | regime |" + (" request |" if several else "") + " variant | forget gap | retain gap | top-20 overlap |"
             + extra + " seconds | stop |",
             "| --- | --- |" + (" --- |" if several else "") + " --- | --- | --- | --- |" + " --- |" * (4 if audit else 0) + " --- | --- |"]
    for cell in report["cells"]:
        ref = cell["reference"].get("mia") or {}
        request = f" {cell['forget_seed']} |" if several else ""
        for name, r in cell["variants"].items():
            cols = ""
            if audit:
                attacks = r.get("attacks") or {}
                rank = abs(attacks["rank"] - ref["rank"]) if "rank" in attacks and "rank" in ref else None
                cols = (f" {fmt(r.get('mia_distance'), 3)} | {fmt(rank, 3)} | {fmt(r.get('delta_distance'), 3)} | "
                        f"{fmt(r.get('drop_distance'), 3)} |")
            lines.append(f"| {cell['model']} | {cell['regime']} |{request} {name} | {fmt(r['gap_to_retrain']['forget']['recall@20'])} | "
                         f"{fmt(r['gap_to_retrain']['retain']['ndcg@20'])} | {fmt(r['topk_overlap_with_retrain'], 3)} |"
                         f"{cols} {fmt(r['seconds'], 2)} | {r['stop_reason'] or ''} |")
    out = "\n".join(lines) + "\n"
    if several:
        out += "\n" + summary_markdown(report)
    return out


def figure(r, name):
    """One variant's figure on one request: ``forget_gap``, ``retain_gap``, ``seconds`` or
    ``mia_distance`` (None where the run did not measure it)."""
    if name == "forget_gap":
        return r["gap_to_retrain"]["forget"]["recall@20"]
    if name == "retain_gap":
        return r["gap_to_retrain"]["retain"]["ndcg@20"]
    return r.get(name)


def summary_figures(report):
    """The figures of the several-request summary: the gaps and seconds, and the MIA distance
    with the audit."""
    return ["forget_gap", "retain_gap", "seconds"] + (["mia_distance"] if report.get("audit") else [])


def summary(report):
    """``{(model, regime): {variant: {figure: {"mean": t_interval, "vs_default": paired}}}}`` over
    the requests of ``report`` (each variant paired with the default on the same requests; no
    ``vs_default`` when the default was not run)."""
    figures = summary_figures(report)
    cells = {}
    for cell in report["cells"]:
        for name, r in cell["variants"].items():
            per = cells.setdefault((cell["model"], cell["regime"]), {}).setdefault(name, {})
            for f in figures:
                per.setdefault(f, []).append(figure(r, f))
    out = {}
    for key, variants in cells.items():
        base = variants.get(DEFAULT)
        out[key] = {}
        for name, per in variants.items():
            out[key][name] = {f: {"mean": t_interval(per[f]),
                                  **({"vs_default": paired(per[f], base[f])} if base and name != DEFAULT else {})}
                              for f in figures}
    return out


def summary_markdown(report):
    """Mean ± 95 % half-width over the requests; for each variant but the default, its paired
    difference from the default (variant - default) [95 % CI] and the requests it is lower on."""
    table = summary(report)
    figures = summary_figures(report)
    names = {"forget_gap": "forget gap", "retain_gap": "retain gap", "seconds": "seconds", "mia_distance": "MIA distance"}
    lines = ["| backbone | regime | variant | requests | " + " | ".join(f"{names[f]}: mean | - default [95 % CI] (lower)"
                                                              for f in figures) + " |",
             "| --- | --- | --- | --- |" + " --- | --- |" * len(figures)]
    for (model, regime), variants in table.items():
        for name, figs in variants.items():
            cols = []
            for f in figures:
                m = figs[f]["mean"]
                digits = 2 if f == "seconds" else 4
                cols.append(f"{fmt(m['mean'], digits)} ± {fmt(half_width(m), digits)}" if m["n"] else "n/a")
                d = figs[f].get("vs_default")
                if d is None or d["n"] == 0:
                    cols.append("")
                else:
                    ci = d["diff"]
                    interval = "" if ci["ci_low"] is None else f" [{ci['ci_low']:+.{digits}f}, {ci['ci_high']:+.{digits}f}]"
                    cols.append(f"{ci['mean']:+.{digits}f}{interval} ({d['wins']}/{d['n']})")
            lines.append(f"| {model} | {regime} | {name} | {figs[figures[0]]['mean']['n']} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def parser():
    p = grid_parser(__doc__)
    p.add_argument("--audit", action="store_true", help="also run the interaction-level membership audit")
    p.add_argument("--runs", default=None, help="folder of the runs and their model cache (default: a new "
                   "calibration-runs-<time> under --out; an earlier run's folder reuses its trained models)")
    p.add_argument("--tag", default="", help="suffix of the result files: calibration<tag>.json/.md")
    p.add_argument("--seeds", default=str(CALIBRATION_SEED), help="calibration requests' forget seeds, comma list "
                   f"(default: {CALIBRATION_SEED}); never a judged request's seed ({FORGET_SEEDS[0]}..{FORGET_SEEDS[-1]})")
    p.add_argument("--variants", default=None, help=f"variant names separated by ';' (names hold commas) (default: all; 'default' = {DEFAULT!r})")
    return p


def chosen_variants(names):
    if names is None:
        return VARIANTS
    picked = [DEFAULT if n.strip() == "default" else n.strip() for n in names.split(";")]
    unknown = [n for n in picked if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    return {n: VARIANTS[n] for n in picked}


def plot_summary(report, path):
    """One panel per figure (forget gap, retain gap, seconds): each non-default variant's paired
    difference from the default per cell, mean and 95 % interval, 0 marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["summary"] if r["variant"] != DEFAULT and "vs_default" in r["forget_gap"]]
    if not rows:
        return None
    figures = [("forget_gap", "forget gap"), ("retain_gap", "retain gap"), ("seconds", "seconds")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(rows) + 1.6), sharey=True)
    labels = [f"{r['model']} {r['regime']}: {r['variant']}" for r in rows]
    for ax, (key, name) in zip(axes, figures):
        for y, r in enumerate(rows):
            d = r[key]["vs_default"]["diff"]
            if d["mean"] is None:
                continue
            if d["ci_low"] is not None:
                ax.plot([d["ci_low"], d["ci_high"]], [y, y], color="tab:blue")
            ax.plot([d["mean"]], [y], "o", color="tab:blue")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{name}: variant - default")
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"paired over calibration requests {report['forget_seeds']} (95 % t intervals)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def rotated(variants, i):
    """``variants`` in the order they run on the ``i``-th request: rotated by ``i``, so that over
    several requests each variant runs first about as often. A variant run later in a process
    can take longer for reasons of its place alone (measured at synthetic Clothing: 2.10 s then
    3.49 s in one order, 2.18 s then 2.73 s in the other); rotating keeps that out of the
    paired seconds."""
    names = list(variants)
    k = i % len(names) if names else 0
    return {n: variants[n] for n in names[k:] + names[:k]}


def request_parser(doc, name, models="VBPR,MMGCN", regimes="interaction,user,item"):
    """The arguments of a benchmark that reads calibration requests one at a time against the
    cached originals and retrains of ``--runs`` (``audit_delta.py``, ``rank_quantiles.py``); its
    ``--seeds`` go through :func:`calibration_seeds`."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--models", default=models)
    p.add_argument("--regimes", default=regimes)
    p.add_argument("--seeds", default="1,2,3,4,5", help="calibration forget seeds (never a judged request's)")
    p.add_argument("--dataset", default="ml-100k-mm")
    p.add_argument("--config_files", default=None, help="space-separated YAML files, as run_recbole_tru.py")
    p.add_argument("--config", default="{}", help="JSON dict of extra config")
    p.add_argument("--runs", default=f"runs/{name}", help="output_dir of the cached originals and retrains")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--tag", default="")
    return p


def over_requests(args, name, measure):
    """``(seeds, cells)``: ``measure(model, regime, seed)`` (a dict) on every cell of ``args.models``
    x ``args.regimes`` and every calibration seed of ``args.seeds``, one progress line each;
    cells are ``{"model", "regime", "requests": [{"seed", **measured}]}``."""
    seeds = calibration_seeds(args.seeds)
    start, cells = time.time(), []
    for model in args.models.split(","):
        for regime in args.regimes.split(","):
            cell = {"model": model, "regime": regime, "requests": []}
            for seed in seeds:
                print(f"[{name}] {model} {regime} seed {seed} ({time.time() - start:.0f} s)", flush=True)
                cell["requests"].append({"seed": seed, **measure(model, regime, seed)})
            cells.append(cell)
    return seeds, cells


def calibration_seeds(text):
    """The ``--seeds`` list; a judged request's seed is refused (defaults are never chosen on a
    request the benchmark judges them by)."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds: a comma list of integers, got {text!r}") from None
    judged = sorted(set(seeds) & set(FORGET_SEEDS))
    if judged:
        raise SystemExit(f"--seeds: {judged} are judged requests' seeds (benchmarks/unlearning.py's FORGET_SEEDS); "
                         f"calibrate on other requests")
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds: repeated seed in {text!r}")
    return seeds


def main(argv=None):
    args = parser().parse_args(argv)
    variants = chosen_variants(args.variants)
    seeds = calibration_seeds(args.seeds)
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / f"calibration-runs-{time.strftime('%Y%m%d-%H%M%S')}"
    report = {"environment": environment(), "command": "python benchmarks/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "forget_seed": seeds[0], "forget_seeds": seeds, "audit": args.audit, "cells": []}
    for model in args.models.split(","):
        for regime in args.regimes.split(","):
            for i, seed in enumerate(seeds):
                print(f"== {model} / {regime} / forget seed {seed}", flush=True)
                extra = {**json.loads(args.config), "forget_seed": seed, "audit_enabled": False}
                cell = run_variants(model, regime, runs, extra, args.dataset, rotated(variants, i), audit=args.audit,
                                    config_files=args.config_files.split() if args.config_files else None)
                cell["run_order"] = list(cell["variants"])
                cell["variants"] = {name: cell["variants"][name] for name in variants}
                report["cells"].append({"model": model, "regime": regime, "forget_seed": seed, **cell})
    if len(seeds) > 1:
        report["summary"] = [{"model": m, "regime": r, "variant": v, **figs}
                             for (m, r), vs in summary(report).items() for v, figs in vs.items()]
    write_texts(out, f"calibration{args.tag}", [("json", json.dumps(report, indent=1, default=float)),
                                                ("md", markdown(report))])
    if len(seeds) > 1:
        plot_summary(report, out / f"calibration{args.tag}.png")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
