"""Where the forget pairs rank, on CALIBRATION requests: the 10/25/50/75/90 % quantiles of their
ranks (1 = top) among each user's items outside the retained training history, under the
original, the retrained model and TRU's variants (``calibration.py``'s names), next to the
held-out test pairs' quantiles under each model; mean ± 95 % CI over the requests, and the rank
AUC of forget vs test pairs (0.5: told apart no better than chance).

Retraining ranks a forgotten pair like a held-out pair all the way down the list. The stop on
Recall@20 matches the top of that distribution only, the membership attacks read all of it: this
benchmark shows where a method's forget pairs sit against retrain's, quantile by quantile.
Judged requests' seeds are refused (nothing here may be read on them).

    python benchmarks/rank_quantiles.py --seeds 1,2,3,4,5 --runs <calibration runs folder> \\
        --variants "default;rank-AUC stop (δ .02);support order + two-sided gate + rank-AUC stop"
"""
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from calibration import DEFAULT, chosen_variants, over_requests, request_parser  # noqa: E402
from unlearning_jobs import prepare_cell, unlearn_variant  # noqa: E402
from unlearning_report import fmt, pm, publish  # noqa: E402

import numpy as np  # noqa: E402

from recbole_tru.files import save_png  # noqa: E402
from recbole_tru.model.ranking import pair_ranks  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.stats import t_interval  # noqa: E402
from recbole_tru.unlearn.gate import auc_signed  # noqa: E402

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def placement(model, data):
    """The forget pairs' and the test pairs' rank quantiles under ``model`` and the rank AUC of
    forget vs test pairs (> 0.5: forget pairs rank higher)."""
    f, test = data.forget, data.test_dataset
    history = data.train_history()
    forget = pair_ranks(model, f.users, f.items, history)
    held_out = pair_ranks(model, test.inter_feat[test.uid_field].numpy(), test.inter_feat[test.iid_field].numpy(),
                          history)
    return {"forget": np.quantile(forget, QUANTILES).tolist(), "test": np.quantile(held_out, QUANTILES).tolist(),
            "auc": 0.5 + auc_signed(forget, held_out)}


def run_request(model, regime, runs, seed, dataset, config_files, variants, config):
    base, data, original, _, _, files, (_, retrained) = prepare_cell(
        model, regime, runs, {**config, "forget_seed": seed}, dataset, config_files)
    out = {"original": placement(original, data), "retrain": placement(retrained, data)}
    for name, overrides in variants.items():
        unlearned, _ = unlearn_variant(model, dataset, files, base, overrides, data, original)
        out[name] = placement(unlearned, data)
    return out


def summarise(cells):
    rows = []
    for cell in cells:
        requests = cell["requests"]
        for name in requests[0]["models"]:
            per = [r["models"][name] for r in requests]
            rows.append({"model": cell["model"], "regime": cell["regime"], "method": name, "n": len(per),
                         "forget": [t_interval([p["forget"][q] for p in per]) for q in range(len(QUANTILES))],
                         "test": [t_interval([p["test"][q] for p in per]) for q in range(len(QUANTILES))],
                         "auc": t_interval([p["auc"] for p in per])})
    return rows


def markdown(report):
    heads = " | ".join(f"forget {q:.0%}" for q in QUANTILES)
    lines = [f"Calibration requests (forget seeds {', '.join(map(str, report['seeds']))}): quantiles of the ranks "
             "(1 = top) among each user's items outside the retained training history, mean ± 95 % CI over the "
             "requests; `test` the held-out test pairs' under the same model; `AUC`: forget ranked above test "
             "(retrain's is where a forgotten pair is ranked like a held-out one).", "",
             f"| backbone | regime | model | {heads} | test 10 % / 50 % / 90 % | AUC forget vs test |",
             "| --- | --- | --- | " + " | ".join("---" for _ in QUANTILES) + " | --- | --- |"]
    for r in report["summary"]:
        forget = " | ".join(pm(q, 0) for q in r["forget"])
        test = " / ".join(fmt(r["test"][k]["mean"], 0) for k in (0, 2, 4))
        lines.append(f"| {r['model']} | {r['regime']} | {r['method']} | {forget} | {test} | {pm(r['auc'], 3)} |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["model"], r["regime"]) for r in report["summary"]})
    fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4.2), squeeze=False)
    for ax, (model, regime) in zip(axes[0], cells):
        rows = [r for r in report["summary"] if (r["model"], r["regime"]) == (model, regime)]
        for r in rows:
            style = {"original": ":", "retrain": "-"}.get(r["method"], "--")
            ax.plot([q * 100 for q in QUANTILES], [m["mean"] for m in r["forget"]], style, marker="o",
                    label=f"{r['method']} (AUC {r['auc']['mean']:.3f})", lw=2.5 if r["method"] == "retrain" else 1.5)
        test = next(r for r in rows if r["method"] == "retrain")["test"]
        ax.plot([q * 100 for q in QUANTILES], [m["mean"] for m in test], color="grey", lw=6, alpha=0.3,
                label="held-out test pairs (retrain)")
        ax.set_yscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("quantile of the forget pairs (%)")
        ax.set_ylabel("rank (log; top = 1)")
        ax.set_title(f"{model} {regime}: where the forget pairs rank")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main(argv=None):
    p = request_parser(__doc__, "rank_quantiles", models="VBPR", regimes="interaction")
    p.add_argument("--variants", default="default", help=f"calibration.py's variant names, ';'-separated ('default' = {DEFAULT!r})")
    args = p.parse_args(argv)
    variants = chosen_variants(args.variants)
    files = args.config_files.split() if args.config_files else None
    start = time.time()
    seeds, cells = over_requests(args, "rank_quantiles", lambda model, regime, seed: {"models": run_request(
        model, regime, Path(args.runs), seed, args.dataset, files, variants, json.loads(args.config))})
    report = {"command": "python benchmarks/rank_quantiles.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": environment(), "seeds": seeds, "quantiles": list(QUANTILES),
              "wall_seconds": time.time() - start, "cells": cells, "summary": summarise(cells)}
    return publish(args.out, f"rank_quantiles{args.tag}", report, markdown, plot)


if __name__ == "__main__":
    main()
