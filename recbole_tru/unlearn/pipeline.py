"""One run does the whole job: original model, deletion request, every requested method, the
retrained reference, the judge, and the results files.

Output folder ``<output_dir>/<model>-<dataset>-<regime>-<time>/``: ``forget.inter`` and
``forget_stats.json`` (the exact forget set, reusable as ``forget_regime: request``),
``results.json``, ``results.csv`` (one row per method). Trained originals and retrained
references are cached in ``<output_dir>/cache/`` under a key of config + data (+ forget set).
"""
import csv
import hashlib
import json
import time
from logging import getLogger
from pathlib import Path

import numpy as np
from recbole.utils import set_color

from recbole_tru.audit import Audit, wants_held_out_users
from recbole_tru.data.forget import save_forget_set, select_forget
from recbole_tru.data.retained import UnlearnData
from recbole_tru.data.split import hold_out_users, split_loaders
from recbole_tru.files import atomic_write, unique_path, write_text
from recbole_tru.provenance import environment
from recbole_tru.registry import get_unlearn_trainer
from recbole_tru.terminal import Progress
from recbole_tru.training import build_model, cached_fit, fit
from recbole_tru.unlearn.evaluation import Judge

METRIC_ORDER = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def forget_digest(forget):
    return hashlib.sha256(np.ascontiguousarray(forget.rows).tobytes()).hexdigest()[:16]


def run_folder(config):
    """A new folder for this run (never an existing one)."""
    base = Path(config["output_dir"]) / f"{config['model']}-{config['dataset']}-{config['forget_regime']}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = unique_path(base)
    path.mkdir(parents=True)
    return path


def train_reference(config, loaders, cache_dir, tag, extra_key=""):
    """Train (or load from the cache when ``unlearn_cache``) -> (model, summary, cached)."""
    train_loader, valid_loader = loaders
    if config["unlearn_cache"]:
        model, summary, _, cached = cached_fit(config, train_loader, valid_loader, cache_dir, tag, extra_key)
        return model, summary, cached
    model, _, summary = fit(config, train_loader, valid_loader)
    return model, summary, False


def start_from(config, data, original):
    """A copy of the original parameters on a model built from the RETAINED data (graph
    backbones read their graph from it)."""
    model = build_model(config, data.retain_dataset)
    model.load_state_dict(original.state_dict())
    return model


def unlearn_method(config, name, data, original, judge=None):
    """Run one method from the original model; returns ``(model, trainer, curve)``."""
    trainer = get_unlearn_trainer(name)(config, start_from(config, data, original), data)
    curve = []
    if judge is not None and config["unlearn_trajectory"]:
        curve.append({"epoch": -1, **_point(judge, trainer.model)})
        trainer.epoch_callback = lambda t, epoch: curve.append({"epoch": epoch, **_point(judge, t.model)})
    trainer.unlearn(show_progress=config["show_progress"])
    if curve:       # the state the method returns (after a restore of its best state, say)
        curve.append({"epoch": "final", **_point(judge, trainer.model)})
    return trainer.model, trainer, curve


def _point(judge, model):
    m = judge.metrics(model)
    return {"retain_ndcg@20": m["retain"]["ndcg@20"], "forget_recall@20": m["forget"]["recall@20"],
            "forget_gap": abs(m["forget"]["recall@20"] - judge.reference["forget"]["recall@20"]),
            "retain_gap": abs(m["retain"]["ndcg@20"] - judge.reference["retain"]["ndcg@20"])}


def _trainer_details(trainer):
    details = {"log": trainer.log}
    for key in ("checks", "stop_reason", "alphas"):
        if hasattr(trainer, key):
            details[key] = getattr(trainer, key)
    return details


def prepare_splits(config, train_data, valid_data, test_data):
    """In the ``user`` regime with the user-level audit on, hold a share of users out of every
    split before anything trains (the audit's never-seen users). Returns the loaders, the
    held-out users (or None) and a cache-key suffix."""
    if not wants_held_out_users(config):
        return (train_data, valid_data, test_data), None, ""
    datasets, held_out = hold_out_users(config, train_data.dataset, valid_data.dataset, test_data.dataset)
    return split_loaders(config, *datasets), held_out, "heldout-" + held_out.digest()


def run_unlearning(config, dataset, train_data, valid_data, test_data, methods):
    """The whole unlearning run (see module); one progress line as each stage starts and ends:
    the original model, the deletion request, the retrained reference, the evaluation and audit
    of both, then each method (``retrain`` is the reference itself)."""
    logger = getLogger()
    out = run_folder(config)
    cache = Path(config["output_dir"]) / "cache"
    unlearners = [name for name in methods if name != "retrain"]
    progress = Progress(4 + len(unlearners), logger)
    (train_data, valid_data, test_data), held_out, held_key = prepare_splits(config, train_data, valid_data, test_data)
    with progress.stage("original model") as stage:
        original, original_summary, original_cached = train_reference(config, (train_data, valid_data), cache,
                                                                      "original", held_key)
        stage.note = _how_trained(original_summary, original_cached)
    with progress.stage("deletion request") as stage:
        forget = select_forget(config, train_data.dataset, heldout=(valid_data.dataset, test_data.dataset))
        save_forget_set(forget, train_data.dataset, out)
        logger.info(set_color("forget set", "yellow") + f": {forget.stats()}")
        data = UnlearnData(config, train_data.dataset, valid_data.dataset, test_data.dataset, forget)
        stage.note = f"{forget.stats()['interactions']} interactions to forget"
    with progress.stage("retrained reference") as stage:
        retrained, retrain_summary, retrain_cached = train_reference(
            config, (data.retain_loader(), data.eval_loader("valid")), cache, "retrain", forget_digest(forget) + held_key)
        stage.note = _how_trained(retrain_summary, retrain_cached)
    with progress.stage("audit of the original and the reference" if config["audit_enabled"]
                        else "evaluation of the original and the reference"):
        judge = Judge(config, data, retrained)
        audit = Audit(config, data, original, held_out=held_out) if config["audit_enabled"] else None
        audited = audit.run if audit else (lambda model: {})
        results = {
            "model": config["model"], "dataset": config["dataset"], "forget": forget.stats(),
            "environment": environment(),
            "audit": audit.info() if audit else None,
            "original": {**judge.report(original), **audited(original), "training": original_summary,
                         "cached": original_cached},
            "retrain_reference": {**judge.reference, **audited(retrained), "training": retrain_summary,
                                  "cached": retrain_cached},
            "methods": {},
        }
    for name in methods:
        if name == "retrain":
            results["methods"][name] = {**judge.report(retrained), **audited(retrained),
                                        "seconds": retrain_summary["seconds"], "epochs": retrain_summary["epochs"],
                                        "cached": retrain_cached}
            continue
        with progress.stage(f"unlearning with {name}") as stage:
            model, trainer, curve = unlearn_method(config, name, data, original, judge)
            results["methods"][name] = {**judge.report(model), **audited(model), "seconds": trainer.seconds,
                                        "speedup_vs_retrain": retrain_summary["seconds"] / max(trainer.seconds, 1e-9),
                                        "trajectory": curve, "details": _trainer_details(trainer)}
            stage.note = f"of which {name} itself {trainer.seconds:.1f} s, the rest evaluation" + (
                " and audit" if audit else "")
    write_results(out, results)
    print(format_table(results))
    print(f"results written to {out}")
    results["output_dir"] = str(out)
    return results


def _how_trained(summary, cached):
    epochs = f"{summary['epochs']} epoch" + ("" if summary["epochs"] == 1 else "s")
    if cached:
        return f"loaded from the cache (trained {epochs} in {summary['seconds']:.1f} s)"
    return f"trained {epochs}"


def result_rows(results):
    rows = [("original", results["original"], None)]
    rows += [(name, r, r.get("seconds")) for name, r in results["methods"].items()]
    table = []
    for name, r, seconds in rows:
        row = {"method": name}
        for part in ("retain", "forget"):
            for metric in METRIC_ORDER:
                row[f"{part}_{metric}"] = r[part][metric]
        row["forget_gap_recall@20"] = r["gap_to_retrain"]["forget"]["recall@20"]
        row["retain_gap_ndcg@20"] = r["gap_to_retrain"]["retain"]["ndcg@20"]
        row["topk_overlap_with_retrain"] = r["topk_overlap_with_retrain"]
        row["mia_auc"] = r.get("mia_auc")
        row["mia_auc_user"] = r.get("mia_auc_user")
        row["seconds"] = seconds
        table.append(row)
    return table


def format_table(results):
    ref = results["retrain_reference"]
    lines = [f"{results['model']} on {results['dataset']}, forget set: {results['forget']}",
             f"retrained reference: test NDCG@20 {ref['retain']['ndcg@20']:.4f}, forget Recall@20 {ref['forget']['recall@20']:.4f}, "
             f"{ref['training']['seconds']:.1f} s",
             f"{'method':<12}{'test NDCG@20':>14}{'forget R@20':>13}{'|Δforget|':>11}{'|Δretain|':>11}{'top20∩':>9}"
             f"{'MIA AUC':>9}{'user MIA':>10}{'seconds':>10}"]
    for row in result_rows(results):
        sec = "" if row["seconds"] is None else f"{row['seconds']:.2f}"
        mia = "" if row["mia_auc"] is None else f"{row['mia_auc']:.3f}"
        mia_user = "" if row["mia_auc_user"] is None else f"{row['mia_auc_user']:.3f}"
        lines.append(f"{row['method']:<12}{row['retain_ndcg@20']:>14.4f}{row['forget_recall@20']:>13.4f}"
                     f"{row['forget_gap_recall@20']:>11.4f}{row['retain_gap_ndcg@20']:>11.4f}"
                     f"{row['topk_overlap_with_retrain']:>9.3f}{mia:>9}{mia_user:>10}{sec:>10}")
    if results.get("retrain_reference", {}).get("mia_auc") is not None:
        lines.append(f"MIA AUC of the retrained model (the target): {results['retrain_reference']['mia_auc']:.3f}"
                     + ("" if results["retrain_reference"].get("mia_auc_user") is None
                        else f", user-level {results['retrain_reference']['mia_auc_user']:.3f}"))
    return "\n".join(lines)


def write_results(folder, results):
    write_text(Path(folder) / "results.json", json.dumps(results, indent=2, default=float))
    rows = result_rows(results)

    def write_csv(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(Path(folder) / "results.csv", write_csv)
