"""TRU against the baselines over every (original model x request) run of a variance study.

    python benchmarks/pooled.py benchmarks/results/variance/unlearning.json > benchmarks/results/variance/pooled.md

Reads the JSON ``benchmarks/unlearning.py --train-seeds K`` wrote and prints, per cell, each
method's mean with its 95 % t-interval over all K x N runs and TRU's paired comparison with
``reverse`` and ``finetune`` (wins / ties / losses, mean difference TRU - baseline with its
interval, exact sign test). The runs share K originals, so they are not independent: read the
intervals together with the study's variance shares (the original model's share shrinks the
effective number of runs towards K).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_tru import stats  # noqa: E402

METRICS = ("forget_gap", "retain_gap", "mia_distance")
METHODS = ("tru", "reverse", "finetune", "original")
BASELINES = ("reverse", "finetune")


def fmt(ci):
    return f"{ci['mean']:.4f} ± {ci['ci_high'] - ci['mean']:.4f}"


def table(report):
    lines = ["| backbone | regime | runs | metric | " + " | ".join(METHODS) + " | "
             + " | ".join(f"TRU vs {b}: w/t/l, TRU − {b} [95 % CI], sign p" for b in BASELINES) + " |",
             "| --- " * (4 + len(METHODS) + len(BASELINES)) + "|"]
    for cell in report["cells"]:
        runs = cell["requests"]
        for metric in METRICS:
            row = [cell["model"], cell["regime"], str(len(runs)), metric]
            row += [fmt(stats.t_interval([r["methods"][m].get(metric) for r in runs])) for m in METHODS]
            for b in BASELINES:
                p = stats.paired([r["methods"]["tru"][metric] for r in runs], [r["methods"][b][metric] for r in runs])
                d = p["diff"]
                row.append(f"{p['wins']}/{p['ties']}/{p['losses']}, {d['mean']:+.4f} [{d['ci_low']:+.4f}, "
                           f"{d['ci_high']:+.4f}], {p['sign_p']:.4f}")
            lines.append("| " + " | ".join(row) + " |")
    return lines


if __name__ == "__main__":
    report = json.loads(Path(sys.argv[1]).read_text())
    print("Every (original model x request) run pooled: mean ± 95 % t-interval half-width; paired "
          "comparisons of TRU with each baseline over the same runs.\n")
    print("\n".join(table(report)))
