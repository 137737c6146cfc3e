"""Ray Tune sweep of one unlearning method, tuned as an operator would, then judged fresh.

    python run_recbole_tru.py --model=MMGCN --unlearn=tru --tune=properties/tune/tru.yaml
    python run_recbole_tru.py --model=VBPR --unlearn=reverse --tune=properties/tune/reverse.yaml \
        --tune_num_samples=16 --ray_address=auto          # on an existing Ray cluster

1. The driver trains the original model once (or loads it from ``<output_dir>/cache``, shared
   with unlearning runs), draws the CALIBRATION request (``forget_seed =
   tune_calibration_seed``), retrains on its retained data once, and writes both models as
   checkpoints in the sweep folder.
2. Ray Tune runs ``tune_num_samples`` trials of :func:`recbole_tru.tune.trial.run_trial`
   (``tune_cpus_per_trial`` CPUs each, at most ``tune_max_concurrent`` at once), each loading
   the original by absolute path and unlearning the calibration request with its settings; it
   reports :mod:`recbole_tru.tune.objective`'s metrics after every epoch, so the ASHA scheduler
   (``tune_scheduler: asha``) can stop trials that trail. A trial that raises is recorded as an
   error; the other trials go on.
3. ``trials.csv``, ``best.yaml`` (the best finished trial by objective) and ``pareto.png``.
4. The chosen settings, and the method's defaults for comparison, are judged on a FRESH request
   (``forget_seed``, which must differ from the calibration seed) against that request's own
   retrained model, on the test set (:class:`~recbole_tru.unlearn.evaluation.Judge`):
   ``judged.json``. Neither the fresh request nor the test set takes part in the selection.

Output folder: ``<output_dir>/sweep-<method>-<model>-<dataset>-<regime>-<time>/``.

Without ``--unlearn``, a search-space file of training keys (``properties/tune/backbone.yaml``)
tunes the backbone itself on validation instead (:mod:`recbole_tru.tune.backbone`), into
``<output_dir>/sweep-backbone-<model>-<dataset>-<time>/``.
"""
import json
import shutil
import time
from logging import getLogger
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from recbole.utils import set_color

from recbole_tru.checkpoint import save_checkpoint
from recbole_tru.cluster import ray_session
from recbole_tru.config import PACKAGE_ROOT
from recbole_tru.data.forget import select_forget
from recbole_tru.data.retained import UnlearnData, with_overrides
from recbole_tru.files import unique_path, write_text
from recbole_tru.training import load_data
from recbole_tru.tune.objective import CalibrationScore
from recbole_tru.tune.report import (METRICS, NODE, plot_pareto, select_best, trial_rows, write_best_yaml,
                                     write_csv)
from recbole_tru.tune.backbone import absolute_paths, run_backbone_sweep
from recbole_tru.tune.space import BACKBONE, SearchSpaceError, load_search_space
from recbole_tru.tune.trial import run_trial
from recbole_tru.unlearn import pipeline
from recbole_tru.unlearn.evaluation import Judge

SCHEDULERS = ("asha", "fifo")
ASHA_MAX_T = 1000          # epochs: a cap above any trial's, so ASHA never ends a trial for length alone


def check_settings(space, config, backbone=False):
    s = space.settings
    if s["tune_scheduler"] not in SCHEDULERS:
        raise SearchSpaceError(f"tune_scheduler must be one of {', '.join(SCHEDULERS)}, got {s['tune_scheduler']!r}")
    for key in ("tune_num_samples", "tune_max_concurrent", "tune_cpus_per_trial", "tune_grace_period"):
        if int(s[key]) < 1:
            raise SearchSpaceError(f"{key} must be >= 1, got {s[key]}")
    if backbone:            # no deletion request takes part in a backbone search
        return
    if int(s["tune_calibration_seed"]) == int(config["forget_seed"]):
        raise SearchSpaceError(
            f"tune_calibration_seed ({s['tune_calibration_seed']}) equals forget_seed: the request that is "
            f"judged must not be the one the settings were chosen on; give them different values")
    if config["forget_regime"] == "request":
        raise SearchSpaceError("A sweep draws its calibration and fresh requests: forget_regime must be "
                               "interaction, user or item, not request")


def sweep_folder(config, method):
    regime = "" if method == BACKBONE else f"-{config['forget_regime']}"
    base = Path(config["output_dir"]).resolve() / (
        f"sweep-{method}-{config['model']}-{config['dataset']}{regime}-{time.strftime('%Y%m%d-%H%M%S')}")
    path = unique_path(base)
    path.mkdir(parents=True)
    return path


def scheduler(settings):
    if settings["tune_scheduler"] == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", max_t=ASHA_MAX_T,
                         grace_period=int(settings["tune_grace_period"]),
                         reduction_factor=float(settings["tune_reduction_factor"]))


def search(space, bundle, out, address=None):
    """Run the trials; returns Ray Tune's ``ResultGrid`` (errored trials included)."""
    s = space.settings
    cpus = int(s["tune_cpus_per_trial"])
    with ray_session(address, s["tune_num_cpus"]):      # before with_parameters puts the bundle
        trainable = tune.with_resources(tune.with_parameters(run_trial, bundle=bundle), {"cpu": cpus})
        tuner = tune.Tuner(
            trainable,
            param_space=space.domains,
            tune_config=tune.TuneConfig(
                metric="objective", mode="max", num_samples=int(s["tune_num_samples"]), scheduler=scheduler(s),
                # the limit goes to the generator: Ray ignores max_concurrent_trials with a generator instance
                search_alg=BasicVariantGenerator(random_state=int(s["tune_seed"]),
                                                 max_concurrent=int(s["tune_max_concurrent"])),
                reuse_actors=True),
            run_config=tune.RunConfig(
                name="trials", storage_path=str(out / "ray"), verbose=1,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
        return tuner.fit()


def prepare(config, out, calibration_seed):
    """Splits, the original model and the calibration request with its retrained model, each
    trained once (cached in ``<output_dir>/cache`` as unlearning runs are)."""
    logger = getLogger()
    _, train_data, valid_data, test_data = load_data(config)
    (train_data, valid_data, test_data), _, held_key = pipeline.prepare_splits(
        config, train_data, valid_data, test_data)
    cache = Path(config["output_dir"]).resolve() / "cache"
    original, summary, cached = pipeline.train_reference(config, (train_data, valid_data), cache, "original", held_key)
    logger.info(set_color("original", "yellow") + f": {summary['epochs']} epochs, {summary['seconds']:.1f} s"
                + (" (cached)" if cached else ""))
    datasets = (train_data.dataset, valid_data.dataset, test_data.dataset)
    cal_config = with_overrides(config, forget_seed=calibration_seed)
    forget = select_forget(cal_config, datasets[0], heldout=datasets[1:])
    data = UnlearnData(cal_config, *datasets, forget)
    retrained, retrain_summary, _ = pipeline.train_reference(
        cal_config, (data.retain_loader(), data.eval_loader("valid")), cache, "retrain",
        pipeline.forget_digest(forget) + held_key)
    meta = {"model": config["model"], "dataset": config["dataset"]}
    original_path = save_checkpoint(out / "original.pth", original, {**meta, "tag": "original", "summary": summary})
    save_checkpoint(out / "calibration_retrain.pth", retrained,
                    {**meta, "tag": "retrain", "forget_seed": calibration_seed, "summary": retrain_summary})
    return {"datasets": datasets, "held_key": held_key, "cache": cache, "original": original,
            "original_path": original_path, "forget": forget, "data": data, "retrained": retrained,
            "retrain_summary": retrain_summary, "original_summary": summary}


def judge_fresh(config, method, best_settings, prep):
    """The method with its default settings and with ``best_settings`` on the FRESH request
    (``forget_seed``), judged against that request's own retrained model on the test set."""
    datasets = prep["datasets"]
    forget = select_forget(config, datasets[0], heldout=datasets[1:])
    data = UnlearnData(config, *datasets, forget)
    retrained, retrain_summary, cached = pipeline.train_reference(
        config, (data.retain_loader(), data.eval_loader("valid")), prep["cache"], "retrain",
        pipeline.forget_digest(forget) + prep["held_key"])
    judge = Judge(config, data, retrained)
    judged = {"forget_seed": config["forget_seed"], "forget": forget.stats(),
              "retrain_reference": {**judge.reference, "seconds": retrain_summary["seconds"],
                                    "epochs": retrain_summary["epochs"], "cached": cached},
              "original": judge.report(prep["original"]), "settings": {}, "methods": {}}
    for name, settings in (("default", {}), ("best", best_settings)):
        variant = with_overrides(config, **settings)
        data.config = variant
        try:
            model, trainer, _ = pipeline.unlearn_method(variant, method, data, prep["original"])
        finally:
            data.config = config            # restored on success and on error alike
        judged["settings"][name] = {k: variant[k] for k in sorted(best_settings)}
        judged["methods"][name] = {**judge.report(model), "seconds": trainer.seconds,
                                   "speedup_vs_retrain": retrain_summary["seconds"] / max(trainer.seconds, 1e-9)}
    return judged


def summary_lines(method, best, judged):
    ref = judged["retrain_reference"]
    lines = [f"{method} sweep, judged on the fresh request (forget_seed={judged['forget_seed']}), test set; "
             f"retrain: NDCG@20 {ref['retain']['ndcg@20']:.4f}, forget R@20 {ref['forget']['recall@20']:.4f}, "
             f"{ref['seconds']:.1f} s",
             f"{'':<10}{'test NDCG@20':>14}{'forget R@20':>13}{'|Δforget|':>11}{'|Δretain|':>11}{'seconds':>9}"]
    rows = [("original", judged["original"], None)] + [(n, r, r["seconds"]) for n, r in judged["methods"].items()]
    for name, r, sec in rows:
        lines.append(f"{name:<10}{r['retain']['ndcg@20']:>14.4f}{r['forget']['recall@20']:>13.4f}"
                     f"{r['gap_to_retrain']['forget']['recall@20']:>11.4f}{r['gap_to_retrain']['retain']['ndcg@20']:>11.4f}"
                     f"{'' if sec is None else f'{sec:.2f}':>9}")
    lines.append(f"best settings (objective {float(best['objective']):.4f} on the calibration request): "
                 f"{judged['settings']['best']}")
    return lines


def run_sweep(config, judge=True):
    """Run the sweep configured by ``config['tune']``; returns a dict of results and paths.
    ``judge=False`` skips step 4 (e.g. to time the search alone)."""
    logger = getLogger()
    space = load_search_space(config["tune"], config, PACKAGE_ROOT)
    if space.method == BACKBONE:
        check_settings(space, config, backbone=True)
        out = sweep_folder(config, BACKBONE)
        shutil.copyfile(space.path, out / "space.yaml")
        logger.info(set_color("backbone search", "green") + f" in {out}: " + "; ".join(space.describe()))
        return run_backbone_sweep(config, space, out)
    check_settings(space, config)
    s, method = space.settings, space.method
    out = sweep_folder(config, method)
    shutil.copyfile(space.path, out / "space.yaml")
    logger.info(set_color(f"sweep of {method}", "green") + f" in {out}: " + "; ".join(space.describe()))
    start = time.perf_counter()
    calibration_seed = int(s["tune_calibration_seed"])
    prep = prepare(config, out, calibration_seed)

    cal_config = with_overrides(config, forget_seed=calibration_seed)
    score = CalibrationScore(cal_config, prep["data"], s["tune_gap_weight"])
    score.reference_forget_recall = score.forget_recall(prep["retrained"])
    references = {"original": score(prep["original"]), "retrain": score(prep["retrained"])}

    config_dict = {**config.external_config_dict, **absolute_paths(config), **space.fixed,
                   "unlearn": method, "tune": None, "forget_seed": calibration_seed,
                   "state": "WARNING", "show_progress": False}
    bundle = {"model": config["model"], "dataset": config["dataset"], "config_dict": config_dict,
              "method": method, "datasets": prep["datasets"], "forget": prep["forget"],
              "original": str(prep["original_path"]), "gap_weight": float(s["tune_gap_weight"]),
              "reference_forget_recall": score.reference_forget_recall,
              "cpus_per_trial": int(s["tune_cpus_per_trial"])}
    search_start = time.perf_counter()
    grid = search(space, bundle, out, config["ray_address"])
    search_seconds = time.perf_counter() - search_start

    keys = list(space.domains)
    rows = trial_rows(grid, keys)
    write_csv(out / "trials.csv", rows, ["trial", "status", "reports", *keys, *METRICS, NODE, "error"])
    best = select_best(rows)
    if best is None:
        raise RuntimeError(f"Every trial of the sweep failed; see {out / 'trials.csv'} and {out / 'ray'}")
    best_settings = {**{k: best[k] for k in keys}, **space.fixed}
    write_best_yaml(out / "best.yaml", best_settings, [
        f"Best settings of a {method} sweep ({config['model']} on {config['dataset']}, {config['forget_regime']} regime, "
        f"trial {best['trial']} of {len(rows)}).",
        f"Objective {float(best['objective']):.6f} = valid NDCG@20 {float(best['valid_ndcg@20']):.6f} - "
        f"{float(s['tune_gap_weight'])} x forget gap {float(best['forget_gap']):.6f} (calibration request, forget_seed={calibration_seed}).",
        f"Use: python run_recbole_tru.py --model={config['model']} --unlearn={method} --config_files={out / 'best.yaml'}",
    ])
    plot_pareto(out / "pareto.png", [(method, rows)],
                f"{method} sweep, {config['model']} on {config['dataset']}: calibration request "
                f"(forget_seed={calibration_seed}), {len(rows)} trials",
                [("original model", references["original"]["forget_gap"], references["original"]["valid_ndcg@20"], "x"),
                 ("retrained (gap 0)", 0.0, references["retrain"]["valid_ndcg@20"], "D")])

    counts = {status: sum(r["status"] == status for r in rows) for status in ("finished", "stopped", "error")}
    result = {"output_dir": str(out), "method": method, "trials": rows, "counts": counts, "best": best,
              "best_settings": best_settings, "search_seconds": search_seconds, "judged": None}
    if judge:
        judged = judge_fresh(config, method, best_settings, prep)
        judged.update({"method": method, "calibration_seed": calibration_seed, "best_trial": best,
                       "calibration_references": references, "search_seconds": search_seconds,
                       "total_seconds": time.perf_counter() - start})
        text = json.dumps(judged, indent=2, default=float)
        write_text(out / "judged.json", text)
        for line in summary_lines(method, best, judged):
            logger.info(line)
            print(line)
        result["judged"] = judged
    print(f"sweep written to {out}")
    return {**result, "total_seconds": time.perf_counter() - start}
