"""TRU design choices, measured on a CALIBRATION request (``forget_seed=1``), never on the
request the README's results judge (``forget_seed=2024``).

Each row is a variant of TRU (or the reverse baseline) on the same cell: same original model,
same calibration forget set, same retrained reference. The variants are the spec's starting
design and the changes this project made to it; see the README, "TRU, as implemented".

    python benchmarks/calibration.py                  # 6 cells, ~10 min on 2 cores
    python benchmarks/calibration.py --models VBPR --regimes interaction
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unlearning import grid_parser  # noqa: E402  (puts the repository root on the path)
from unlearning_jobs import run_variants  # noqa: E402
from unlearning_report import fmt  # noqa: E402

from recbole_tru.files import atomic_write  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402

CALIBRATION_SEED = 1
VARIANTS = {
    "spec: KS stop (δ .05), lr .001, pooled matching": {"tru_stop_metric": "ks", "tru_stop_delta": 0.05,
                                                       "tru_learning_rate": 0.001, "tru_match": "pooled"},
    "KS stop (δ .05), lr .003, pooled matching": {"tru_stop_metric": "ks", "tru_stop_delta": 0.05, "tru_match": "pooled"},
    "recall stop (δ .01), lr .003, pooled matching": {"tru_match": "pooled"},
    "recall stop, per-user matching = default": {},
    "default, frozen reference": {"tru_reference": "frozen"},
    "default, no repair": {"tru_repair_epochs": 0},
    "reverse (default E=5)": {"method": "reverse"},
}


def markdown(report):
    lines = ["| backbone | regime | variant | forget gap | retain gap | top-20 overlap | seconds | stop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        for name, r in cell["variants"].items():
            lines.append(f"| {cell['model']} | {cell['regime']} | {name} | {fmt(r['gap_to_retrain']['forget']['recall@20'])} | "
                         f"{fmt(r['gap_to_retrain']['retain']['ndcg@20'])} | {fmt(r['topk_overlap_with_retrain'], 3)} | "
                         f"{fmt(r['seconds'], 2)} | {r['stop_reason'] or ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = grid_parser(__doc__).parse_args(argv)
    out = Path(args.out)
    runs = out / f"calibration-runs-{time.strftime('%Y%m%d-%H%M%S')}"
    extra = {**json.loads(args.config), "forget_seed": CALIBRATION_SEED, "audit_enabled": False}
    report = {"environment": environment(), "command": "python benchmarks/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "forget_seed": CALIBRATION_SEED, "cells": []}
    for model in args.models.split(","):
        for regime in args.regimes.split(","):
            print(f"== {model} / {regime}", flush=True)
            cell = run_variants(model, regime, runs, extra, args.dataset, VARIANTS)
            report["cells"].append({"model": model, "regime": regime, **cell})
    atomic_write(out / "calibration.json", lambda p: Path(p).write_text(json.dumps(report, indent=1, default=float)),
                 replace=True)
    atomic_write(out / "calibration.md", lambda p: Path(p).write_text(markdown(report)), replace=True)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
