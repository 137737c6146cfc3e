"""Unlearning benchmark: backbones x deletion regimes x every method, judged against retraining.

For each cell (backbone, regime) one unlearning run (``recbole_tru.unlearn.pipeline``) trains
the original model, draws the 5 % forget set, retrains from scratch on the retained data (timed
in the same run), runs every method with per-epoch trade-off curves and the membership audit.
An ablation (TRU minus each intervention) runs on the interaction cell of each backbone.

Writes to ``--out`` (default ``benchmarks/results``): ``unlearning.json`` (everything),
``unlearning.md`` (the tables for the README) and ``unlearning_tradeoff.png`` (curves).

    python benchmarks/unlearning.py                      # full run, ~15 min on 2 cores
    python benchmarks/unlearning.py --models VBPR --regimes interaction --no-ablation
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_tru.config import Config  # noqa: E402
from recbole_tru.quick_start import load_data, run_recbole_tru  # noqa: E402
from recbole_tru.unlearn import pipeline  # noqa: E402
from recbole_tru.unlearn.data import UnlearnData  # noqa: E402
from recbole_tru.unlearn.evaluation import Judge  # noqa: E402
from recbole_tru.unlearn.forget import select_forget  # noqa: E402

METHODS = ("retrain", "finetune", "gradascent", "reverse", "tru", "sisa")
CURVE_METHODS = ("tru", "reverse", "finetune")
ABLATIONS = {
    "TRU (all parts)": {},
    "- reset": {"tru_reset": False},
    "- isolation (routing + mask)": {"tru_route": False, "tru_isolate": False},
    "- gate": {"tru_gate": False},
    "- guarded stop": {"tru_stop": "epochs"},
    "- modality scaling": {"tru_scaling": False},
    "- repair": {"tru_repair_epochs": 0},
}


def cell_config(model, regime, out, extra):
    return {"unlearn": ",".join(METHODS), "forget_regime": regime, "unlearn_trajectory": True,
            "output_dir": str(out), "state": "WARNING", "show_progress": False,
            "sisa_parallel": False, **extra}   # SISA's shards one after another: every method timed in one process


def run_cell(model, regime, out, extra, dataset):
    start = time.perf_counter()
    results = run_recbole_tru(model=model, dataset=dataset, config_dict=cell_config(model, regime, out, extra),
                              read_cmd_line=False)
    results["wall_seconds"] = time.perf_counter() - start
    return results


def prepare_cell(model, regime, out, extra, dataset):
    """Config, retained data, original model, judge and retrain summary of one cell (the
    original and retrained models come from the run's cache when a cell ran before)."""
    base = cell_config(model, regime, out, extra)
    config = Config(model=model, dataset=dataset, config_dict=base, read_cmd_line=False)
    _, train, valid, test = load_data(config)
    cache = Path(config["output_dir"]) / "cache"
    original, _, _ = pipeline.train_reference(config, (train, valid), cache, "original")
    forget = select_forget(config, train.dataset)
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    retrained, summary, _ = pipeline.train_reference(config, (data.retain_loader(), data.eval_loader("valid")),
                                                     cache, "retrain", pipeline.forget_digest(forget))
    return base, data, original, Judge(config, data, retrained), summary


def run_variants(model, regime, out, extra, dataset, variants, method="tru"):
    """``method`` with each ``{name: overrides}`` variant on one cell; judged, no audit."""
    base, data, original, judge, summary = prepare_cell(model, regime, out, extra, dataset)
    rows = {}
    for name, overrides in variants.items():
        variant = Config(model=model, dataset=dataset, config_dict={**base, **overrides, "unlearn_trajectory": False},
                         read_cmd_line=False)
        data.config = variant
        model_u, trainer, _ = pipeline.unlearn_method(variant, overrides.get("method", method), data, original)
        rows[name] = {**judge.report(model_u), "seconds": trainer.seconds,
                      "stop_reason": getattr(trainer, "stop_reason", None)}
    return {"retrain_seconds": summary["seconds"], "reference": judge.reference, "variants": rows}


def run_ablation(model, out, extra, dataset):
    """TRU with each intervention switched off, on the interaction cell."""
    return run_variants(model, "interaction", out, extra, dataset, ABLATIONS)


def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(report):
    lines = ["| backbone | regime | method | test NDCG@20 | forget Recall@20 | forget gap | retain gap | "
             "top-20 overlap | MIA AUC | seconds | x faster than retrain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        res = cell["results"]
        retrain_s = res["methods"]["retrain"]["seconds"]
        rows = [("original", res["original"])] + list(res["methods"].items())
        for name, r in rows:
            seconds = r.get("seconds")
            speed = None if seconds is None or name == "retrain" else retrain_s / max(seconds, 1e-9)
            lines.append(
                f"| {cell['model']} | {cell['regime']} | {name} | {fmt(r['retain']['ndcg@20'])} | "
                f"{fmt(r['forget']['recall@20'])} | {fmt(r['gap_to_retrain']['forget']['recall@20'])} | "
                f"{fmt(r['gap_to_retrain']['retain']['ndcg@20'])} | {fmt(r['topk_overlap_with_retrain'], 3)} | "
                f"{fmt(r.get('mia_auc'), 3)} | {fmt(seconds, 2)} | {fmt(speed, 1)} |")
    verdict = ["", "| backbone | regime | TRU forget gap | reverse forget gap | TRU retain gap | reverse retain gap | "
               "TRU closer on both? | TRU speed-up |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        m = cell["results"]["methods"]
        t, r = m["tru"]["gap_to_retrain"], m["reverse"]["gap_to_retrain"]
        tf, rf = t["forget"]["recall@20"], r["forget"]["recall@20"]
        tr, rr = t["retain"]["ndcg@20"], r["retain"]["ndcg@20"]
        both = "yes" if tf < rf and tr < rr else ("tie on forget, yes on retain" if tf == rf and tr < rr else "no")
        verdict.append(f"| {cell['model']} | {cell['regime']} | {fmt(tf)} | {fmt(rf)} | {fmt(tr)} | {fmt(rr)} | {both} | "
                       f"{fmt(m['retrain']['seconds'] / max(m['tru']['seconds'], 1e-9), 1)} |")
    lines += verdict + [""] + audit_markdown(report)
    for model, ab in report.get("ablations", {}).items():
        lines += ["", f"Ablation, {model}, interaction regime (retrain: test NDCG@20 "
                  f"{fmt(ab['reference']['retain']['ndcg@20'])}, forget Recall@20 {fmt(ab['reference']['forget']['recall@20'])}):",
                  "", "| variant | forget gap | retain gap | top-20 overlap | seconds |",
                  "| --- | --- | --- | --- | --- |"]
        for name, r in ab["variants"].items():
            lines.append(f"| {name} | {fmt(r['gap_to_retrain']['forget']['recall@20'])} | "
                         f"{fmt(r['gap_to_retrain']['retain']['ndcg@20'])} | {fmt(r['topk_overlap_with_retrain'], 3)} | "
                         f"{fmt(r['seconds'], 2)} |")
    return "\n".join(lines) + "\n"


ATTACKS = ("logistic", "rank", "score", "margin", "delta", "shadow")


def audit_markdown(report):
    """Membership-inference AUC (forget pairs vs unseen pairs) of every model, each attack, and
    the headline (logistic) AUC's distance to the retrained model's."""
    lines = ["Membership inference, AUC of forget pairs vs never-trained pairs (`mia_auc` = logistic attack on all "
             "output features; abs diff = distance to retrain's; user-level = Zhang et al., deleted vs never-seen users):", "",
             "| backbone | regime | model | mia_auc | abs diff to retrain | " + " | ".join(ATTACKS[1:]) + " | user-level |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in ATTACKS[1:]) + " | --- |"]
    for cell in report["cells"]:
        res = cell["results"]
        target = res["methods"]["retrain"].get("mia_auc")
        for name, r in [("original", res["original"])] + list(res["methods"].items()):
            auc, mia = r.get("mia_auc"), r.get("mia") or {}
            diff = None if auc is None or target is None else abs(auc - target)
            attacks = " | ".join(fmt(mia.get(a), 3) for a in ATTACKS[1:])
            lines.append(f"| {cell['model']} | {cell['regime']} | {name} | {fmt(auc, 3)} | "
                         f"{'' if name == 'retrain' else fmt(diff, 3)} | {attacks} | {fmt(r.get('mia_auc_user'), 3)} |")
    return lines


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    fig, axes = plt.subplots(1 if len(cells) <= 3 else 2, min(len(cells), 3), figsize=(5 * min(len(cells), 3), 4.2 * (1 if len(cells) <= 3 else 2)),
                             squeeze=False)
    colors = {"tru": "tab:green", "reverse": "tab:red", "finetune": "tab:blue"}
    for ax, cell in zip(axes.flat, cells):
        res = cell["results"]
        ref = res["retrain_reference"]
        for name in CURVE_METHODS:
            curve = res["methods"][name].get("trajectory") or []
            if not curve:
                continue
            ax.plot([p["forget_recall@20"] for p in curve], [p["retain_ndcg@20"] for p in curve], "-o", ms=3,
                    color=colors[name], label=f"{name} (per epoch, then final)")
            ax.plot(curve[-1]["forget_recall@20"], curve[-1]["retain_ndcg@20"], "s", ms=7, color=colors[name])
        ax.plot(res["original"]["forget"]["recall@20"], res["original"]["retain"]["ndcg@20"], "kx", ms=9, label="original")
        ax.plot(ref["forget"]["recall@20"], ref["retain"]["ndcg@20"], "*", color="gold", mec="k", ms=16, label="retrain")
        ax.set_title(f"{cell['model']}, {cell['regime']} regime")
        ax.set_xlabel("forget Recall@20 (retrain's value is the target)")
        ax.set_ylabel("test NDCG@20")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Retain utility vs forgetting, per unlearning epoch (square = final state)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_parser(doc):
    """The arguments of a benchmark over backbones x regimes (this one and calibration.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="VBPR,MMGCN")
    parser.add_argument("--regimes", default="interaction,user,item")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (e.g. for a smoke run)")
    return parser


def main(argv=None):
    parser = grid_parser(__doc__)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--render", action="store_true", help="rewrite the .md and .png from <out>/unlearning.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.render:
        report = json.loads((out / "unlearning.json").read_text())
        (out / "unlearning.md").write_text(markdown(report))
        plot(report, out / "unlearning_tradeoff.png")
        return report
    out.mkdir(parents=True, exist_ok=True)
    runs = out / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"   # fresh cache: retraining is timed in this run
    extra = json.loads(args.config)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    report = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}",
              "command": " ".join(["python benchmarks/unlearning.py"] + (argv if argv is not None else sys.argv[1:])),
              "cells": [], "ablations": {}}
    for model in args.models.split(","):
        for regime in args.regimes.split(","):
            print(f"== {model} / {regime}", flush=True)
            res = run_cell(model, regime, runs, extra, args.dataset)
            report["cells"].append({"model": model, "regime": regime, "results": res})
        if not args.no_ablation and "interaction" in args.regimes.split(","):
            print(f"== ablation {model}", flush=True)
            report["ablations"][model] = run_ablation(model, runs, extra, args.dataset)
    (out / "unlearning.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "unlearning.md").write_text(markdown(report))
    plot(report, out / "unlearning_tradeoff.png")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
