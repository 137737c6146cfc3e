"""The work of ``benchmarks/unlearning.py``: the study's design (methods, requests, originals,
ablation) and the jobs its worker processes run -- one original model, or one deletion request
of one cell judged against retraining (imported by ``unlearning.py``, which puts the
repository root on ``sys.path``; :func:`run_variants` is also ``calibration.py``'s)."""
import time
from pathlib import Path

from recbole_tru.audit import REFERENCES, SHADOW, Audit, audit_rng
from recbole_tru.audit.likelihood import train_references
from recbole_tru.audit.shadow import train_shadow
from recbole_tru.config import Config
from recbole_tru.data.builders.synthetic import generator_of
from recbole_tru.data.forget import select_forget
from recbole_tru.data.retained import UnlearnData
from recbole_tru.quick_start import run_recbole_tru
from recbole_tru.registry import get_unlearn_trainer
from recbole_tru.training import load_data
from recbole_tru.unlearn import pipeline
from recbole_tru.unlearn.evaluation import Judge

METHODS = ("retrain", "finetune", "gradascent", "reverse", "tru", "sisa", "influence")
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


# ---------------------------------------------------------------------------------------------
# one request (runs in a worker process)

def cell_config(model, regime, out, extra):
    return {"unlearn": ",".join(METHODS), "forget_regime": regime, "unlearn_trajectory": True,
            "output_dir": str(out), "state": "WARNING", "show_progress": False,
            "sisa_parallel": False, **extra}   # SISA's shards one after another: every method timed in one process


def prepare_cell(model, regime, out, extra, dataset, config_files=None, retrain=True):
    """Config, retained data, original model, judge and retrain summary of one cell (the
    original and retrained models come from the run's cache when a cell ran before). Without
    ``retrain`` no retrained model is loaded or trained: judge, summary and retrained are None."""
    base = cell_config(model, regime, out, extra)
    config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=base, read_cmd_line=False)
    _, train, valid, test = load_data(config)
    cache = Path(config["output_dir"]) / "cache"
    original, _, _ = pipeline.train_reference(config, (train, valid), cache, "original")
    forget = select_forget(config, train.dataset)
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    if not retrain:
        return base, data, original, None, None, config_files, (config, None)
    retrained, summary, _ = pipeline.train_reference(config, (data.retain_loader(), data.eval_loader("valid")),
                                                     cache, "retrain", pipeline.forget_digest(forget))
    return base, data, original, Judge(config, data, retrained), summary, config_files, (config, retrained)


def variant_config(model, dataset, files, base, overrides=None):
    """The config of one variant on a prepared cell: the cell's ``base`` with ``overrides`` and no
    trajectory recording (the benchmarks time and judge the final model only)."""
    return Config(model=model, dataset=dataset, config_file_list=files,
                  config_dict={**base, **(overrides or {}), "unlearn_trajectory": False}, read_cmd_line=False)


def unlearn_variant(model, dataset, files, base, overrides, data, original, method="tru"):
    """``(unlearned model, trainer)``: ``method`` (``overrides["method"]`` where set) run with
    :func:`variant_config` on the cell's ``data`` from ``original``; ``data.config`` is the
    variant's while it runs and the cell's again after."""
    variant = variant_config(model, dataset, files, base, overrides)
    cell, data.config = data.config, variant
    try:
        unlearned, trainer, _ = pipeline.unlearn_method(variant, overrides.get("method", method), data, original)
    finally:
        data.config = cell
    return unlearned, trainer


def run_variants(model, regime, out, extra, dataset, variants, method="tru", config_files=None, audit=False):
    """``method`` with each ``{name: overrides}`` variant on one cell, judged; with ``audit`` also
    the interaction-level membership audit (headline AUC and its distance to retrain's, every
    attack's AUC) of the retrained model and of every variant."""
    base, data, original, judge, summary, files, (config, retrained) = prepare_cell(model, regime, out, extra,
                                                                                    dataset, config_files)
    auditor = Audit(config, data, original) if audit else None
    reference = {**judge.reference, **(auditor.run(retrained) if auditor else {})}
    rows = {}
    for name, overrides in variants.items():
        variant = variant_config(model, dataset, files, base, overrides)
        data.config = variant
        model_u, trainer, _ = pipeline.unlearn_method(variant, overrides.get("method", method), data, original)
        rows[name] = {**judge.report(model_u), "seconds": trainer.seconds,
                      "stop_reason": getattr(trainer, "stop_reason", None)}
        if auditor:
            rows[name].update(figures({**rows[name], **auditor.run(model_u)}, reference, summary["seconds"]))
    data.config = config
    return {"retrain_seconds": summary["seconds"], "reference": reference, "variants": rows}


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
        attacks, ref_attacks = out["attacks"], ref.get("mia") or {}
        for attack, metric in (("lira", "mia_lr_distance"), ("delta", "delta_distance"), ("drop", "drop_distance")):
            if attack in attacks and attack in ref_attacks:
                out[metric] = abs(attacks[attack] - ref_attacks[attack])
        if (r.get("mia_tpr_at_1pct_fpr") or {}).get("lira") is not None:
            out["mia_lr_tpr"] = r["mia_tpr_at_1pct_fpr"]["lira"]
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
    model, the audit's shadow model, the likelihood-ratio attack's reference models (with
    ``audit_lr``) and SISA's shard models (none depends on the request)."""
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
    if config["audit_enabled"] and config["audit_lr"]:
        train_references(config, data, audit_rng(config, REFERENCES))
    if "sisa" in job["methods"]:
        get_unlearn_trainer("sisa")(config, pipeline.start_from(config, data, original), data).train_original()
    return {"model": job["model"], "regime": job["regime"], "original": job["original"], "summary": summary,
            "cached": cached, "wall_seconds": time.perf_counter() - start,
            "data_generator": generator_of(config["data_path"])}   # a synthetic folder's knobs, else None
