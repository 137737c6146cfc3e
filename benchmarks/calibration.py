"""TRU design choices, measured on a CALIBRATION request (``forget_seed=1``), never on the
request the README's results judge (``forget_seed=2024``).

Each row is a variant of TRU (or the reverse baseline) on the same cell: same original model,
same calibration forget set, same retrained reference. The variants are the spec's starting
design and the changes this project made to it; see the README, "TRU, as implemented".

    python benchmarks/calibration.py                  # 6 cells, ~10 min on 2 cores
    python benchmarks/calibration.py --models VBPR --regimes interaction
    python benchmarks/calibration.py --audit --tag _stop --variants "default;rank-AUC stop (δ .02)"   # + audit
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unlearning import grid_parser  # noqa: E402  (puts the repository root on the path)
from unlearning_jobs import run_variants  # noqa: E402
from unlearning_report import fmt  # noqa: E402

from recbole_tru.files import write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402

CALIBRATION_SEED = 1
VARIANTS = {
    "spec: KS stop (δ .05), lr .001, pooled matching": {"tru_stop_metric": "ks", "tru_item_stop_metric": "ks",
                                                       "tru_stop_delta": 0.05, "tru_learning_rate": 0.001,
                                                       "tru_match": "pooled"},
    "KS stop (δ .05), lr .003, pooled matching": {"tru_stop_metric": "ks", "tru_item_stop_metric": "ks",
                                                 "tru_stop_delta": 0.05, "tru_match": "pooled"},
    "recall stop (δ .01), lr .003, pooled matching": {"tru_match": "pooled", "tru_item_stop_metric": "recall"},
    "recall stop, per-user matching": {"tru_item_stop_metric": "recall"},
    "default (+ deleted items' pairs stop on rank AUC)": {},      # since 2026-12-06: items' rows routed, repair at the training lr
    "default, frozen reference": {"tru_reference": "frozen"},
    "default, no repair": {"tru_repair_epochs": 0},
    "reverse (default E=5)": {"method": "reverse"},
    "rank-AUC stop (δ .02)": {"tru_stop_metric": "auc", "tru_stop_delta": 0.02},      # every group on rank AUC
    "rank-AUC stop (δ .05)": {"tru_stop_metric": "auc", "tru_stop_delta": 0.05},
    "two-sided gate": {"tru_gate_two_sided": True},
    "two-sided gate + rank-AUC stop (δ .02)": {"tru_gate_two_sided": True, "tru_stop_metric": "auc", "tru_stop_delta": 0.02},
    "item rows routed too": {"tru_route_items": True},             # the default since 2026-12-06
    "items' rows not routed": {"tru_route_items": False},
    "repair 4 epochs": {"tru_repair_epochs": 4},
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
    "deleted items reset to init + cold items' drift": {"tru_reset_items": "cold"},
    "modality scaling off": {"tru_scaling": False},
    "adaptive check interval": {"tru_check_adaptive": True},
    "repair first": {"tru_repair_first": True},
    "repair first, frozen reference": {"tru_repair_first": True, "tru_reference": "frozen"},
    "gated repair (down)": {"tru_repair_gate": "down"},
    "gated repair (both ways)": {"tru_repair_gate": "both"},
    "guarded repair": {"tru_repair_gate": "guarded"},
    "guarded repair, frozen reference": {"tru_repair_gate": "guarded", "tru_reference": "frozen"},
}
DEFAULT = "default (+ deleted items' pairs stop on rank AUC)"


def markdown(report):
    audit = report.get("audit", False)
    extra = " MIA distance | rank-attack distance | delta distance |" if audit else ""
    lines = ["| backbone | regime | variant | forget gap | retain gap | top-20 overlap |" + extra + " seconds | stop |",
             "| --- | --- | --- | --- | --- | --- |" + " --- |" * (3 if audit else 0) + " --- | --- |"]
    for cell in report["cells"]:
        ref = cell["reference"].get("mia") or {}
        for name, r in cell["variants"].items():
            cols = ""
            if audit:
                attacks = r.get("attacks") or {}
                rank = abs(attacks["rank"] - ref["rank"]) if "rank" in attacks and "rank" in ref else None
                cols = f" {fmt(r.get('mia_distance'), 3)} | {fmt(rank, 3)} | {fmt(r.get('delta_distance'), 3)} |"
            lines.append(f"| {cell['model']} | {cell['regime']} | {name} | {fmt(r['gap_to_retrain']['forget']['recall@20'])} | "
                         f"{fmt(r['gap_to_retrain']['retain']['ndcg@20'])} | {fmt(r['topk_overlap_with_retrain'], 3)} |"
                         f"{cols} {fmt(r['seconds'], 2)} | {r['stop_reason'] or ''} |")
    return "\n".join(lines) + "\n"


def parser():
    p = grid_parser(__doc__)
    p.add_argument("--audit", action="store_true", help="also run the interaction-level membership audit")
    p.add_argument("--runs", default=None, help="folder of the runs and their model cache (default: a new "
                   "calibration-runs-<time> under --out; an earlier run's folder reuses its trained models)")
    p.add_argument("--tag", default="", help="suffix of the result files: calibration<tag>.json/.md")
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


def main(argv=None):
    args = parser().parse_args(argv)
    variants = chosen_variants(args.variants)
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / f"calibration-runs-{time.strftime('%Y%m%d-%H%M%S')}"
    extra = {**json.loads(args.config), "forget_seed": CALIBRATION_SEED, "audit_enabled": False}
    report = {"environment": environment(), "command": "python benchmarks/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "forget_seed": CALIBRATION_SEED, "audit": args.audit, "cells": []}
    for model in args.models.split(","):
        for regime in args.regimes.split(","):
            print(f"== {model} / {regime}", flush=True)
            cell = run_variants(model, regime, runs, extra, args.dataset, variants, audit=args.audit,
                                config_files=args.config_files.split() if args.config_files else None)
            report["cells"].append({"model": model, "regime": regime, **cell})
    write_texts(out, f"calibration{args.tag}", [("json", json.dumps(report, indent=1, default=float)),
                                                ("md", markdown(report))])
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
