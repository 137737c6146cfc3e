"""Tune a backbone's training hyperparameters on validation with Ray Tune.

The unlearning sweeps (:mod:`recbole_tru.tune.sweep`) tune a method on a trained model; this
module tunes the model itself, as RecBole's hyper-tuning does: each trial trains the backbone
from scratch with RecBole's trainer (early stopping on ``valid_metric``), reports the best
validation score so far after every epoch (an ASHA scheduler may stop it early), and never
reads the test split. The best finished trial is the one selected.

A search space is a dict ``key -> "<distribution> [arguments]"`` in the notation of the
search-space files (:func:`recbole_tru.tune.space.parse_distribution`); keys are any of the
model's training keys (``learning_rate``, ``embedding_size``, ``reg_weight``, ...). ``TIED``
keys follow another key (VBPR's content width is its ID width).

A trial runs in a Ray worker, one CPU (``torch.set_num_threads``); everything it reads is in its
``bundle`` (model, data set, config dict with absolute paths).
"""
import time
from pathlib import Path

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from recbole_tru.cluster import node_id, ray_session
from recbole_tru.files import save_png
from recbole_tru.tune.report import write_best_yaml, write_csv
from recbole_tru.tune.space import parse_distribution

PATH_KEYS = ("data_path", "checkpoint_dir", "output_dir")

# key -> the key whose value it takes (widths kept equal, so the search has one width)
TIED = {"content_embedding_size": "embedding_size", "latent_dim": "embedding_size"}
METRIC = "best_valid"          # what a trial reports and the search maximises


def absolute_paths(config):
    """Trials run in their own working directory: every path they may read is absolute."""
    return {k: str(Path(config[k]).resolve()) for k in PATH_KEYS if config[k]}


def domains(space, source="search space"):
    """``{key: Ray Tune domain}`` and ``{key: (distribution, arguments)}`` of a search-space dict."""
    out, specs = {}, {}
    for key, text in space.items():
        parsed = parse_distribution(source, key, str(text))
        if parsed is None:
            raise ValueError(f"{source}: key '{key}': expected '<distribution> [arguments]', got {text!r}")
        specs[key], out[key] = parsed[:2], parsed[2]
    return out, specs


def settings(params, model_keys):
    """A trial's config values: its parameters plus the ``TIED`` keys the model declares."""
    tied = {k: params[src] for k, src in TIED.items() if k in model_keys and src in params and k not in params}
    return {**params, **tied}


def train_once(bundle, params, report=None):
    """Train ``bundle['model']`` with ``params`` (validation only). ``report(epoch, score, best)``
    is called after every validation. Returns the fit summary with ``capped`` (whether the
    epoch cap, not early stopping, ended it) and the trained ``(model, trainer, data)``."""
    from recbole_tru.config import Config
    from recbole_tru.registry import get_trainer
    from recbole_tru.training import build_model, fit_trainer, load_data

    config = Config(model=bundle["model"], dataset=bundle["dataset"],
                    config_dict={**bundle["config_dict"], **params}, read_cmd_line=False)
    _, train, valid, test = load_data(config)
    model = build_model(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if report is not None:
        valid_epoch, seen = trainer._valid_epoch, []

        def reporting(*args, **kwargs):
            score, result = valid_epoch(*args, **kwargs)
            seen.append(float(score))
            report(len(seen), float(score), max(seen))
            return score, result

        trainer._valid_epoch = reporting
    summary = fit_trainer(trainer, train, valid)
    # stopped by the cap when every allowed epoch ran and the last ones still improved or
    # had not yet waited stopping_step evaluations
    summary["capped"] = bool(summary["epochs"] >= int(config["epochs"])
                             and summary["epochs"] - summary["best_epoch"] - 1 < int(config["stopping_step"]))
    return summary, (model, trainer, (train, valid, test), config)


def run_trial(params, bundle):
    """Ray Tune function trainable: the best validation score after every epoch, then the
    summary once more with ``finished = 1``."""
    torch.set_num_threads(int(bundle.get("cpus_per_trial", 1)))
    from recbole_tru.training import quiet_logging

    quiet_logging()
    node, start = node_id(), time.perf_counter()
    values = settings(params, bundle["model_keys"])

    def report(epoch, score, best):
        tune.report({"epoch": epoch, "valid": score, METRIC: best, "finished": 0, "node_id": node})

    summary, _ = train_once(bundle, values, report)
    tune.report({"epoch": summary["epochs"], "valid": summary["best_valid_score"], METRIC: summary["best_valid_score"],
                 "finished": 1, "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs"],
                 "capped": int(summary["capped"]), "seconds": time.perf_counter() - start, "node_id": node})


def search(bundle, param_space, num_samples, max_epochs, seed=0, num_cpus=2, grace_period=10, storage=None,
           reduction_factor=3, max_concurrent=None, cpus_per_trial=1, scheduler="asha", address=None, points=None):
    """Run the trials (``param_space``: ``{key: Ray Tune domain}``, see :func:`domains`); returns
    a list of dicts, one per trial: its parameters (tied keys included), ``status``, and the
    last reported metrics. ``points``: settings tried first (e.g. the current defaults), each
    counted in ``num_samples``."""
    bundle = {**bundle, "cpus_per_trial": int(cpus_per_trial)}
    if scheduler == "asha":
        chosen = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs + 1,
                               grace_period=min(grace_period, max_epochs), reduction_factor=reduction_factor)
    else:
        chosen = FIFOScheduler()
    with ray_session(address, num_cpus):
        trainable = tune.with_resources(tune.with_parameters(run_trial, bundle=bundle), {"cpu": int(cpus_per_trial)})
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=num_samples, scheduler=chosen,
                search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or num_cpus or 0,
                                                 points_to_evaluate=points)),
            run_config=tune.RunConfig(name=f"{bundle['model']}", storage_path=storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)))
        grid = tuner.fit()
    rows = []
    for n, result in enumerate(grid):
        metrics = dict(result.metrics or {})
        status = ("error" if result.error is not None else
                  "finished" if metrics.get("finished") == 1 else "stopped early (ASHA)")
        rows.append({"trial": n, **settings(dict(result.config or {}), bundle["model_keys"]), "status": status,
                     "best_valid": metrics.get(METRIC), "epochs_run": metrics.get("epochs_run", metrics.get("epoch")),
                     "best_epoch": metrics.get("best_epoch"), "capped": metrics.get("capped"),
                     "seconds": metrics.get("seconds"), "node_id": metrics.get("node_id"),
                     "error": None if result.error is None else str(result.error).splitlines()[-1][:300]})
    return rows


def select(rows):
    """The finished trial with the best validation score (ASHA-stopped and failed trials are
    not candidates: their training did not end by its own stopping rule)."""
    finished = [r for r in rows if r["status"] == "finished" and r["best_valid"] is not None]
    if not finished:
        raise RuntimeError("No trial finished: nothing to select (raise num_samples or the epoch cap)")
    return max(finished, key=lambda r: r["best_valid"])


def plot_trials(path, rows, title):
    """Each trial's best validation score against its learning rate (log scale), by status,
    the selected trial ringed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for status, marker in (("finished", "o"), ("stopped early (ASHA)", "x")):
        points = [(r.get("learning_rate"), r["best_valid"]) for r in rows
                  if r["status"] == status and r["best_valid"] is not None and r.get("learning_rate")]
        if points:
            ax.scatter(*zip(*points), marker=marker, label=status)
    best = select(rows)
    if best.get("learning_rate"):
        ax.scatter([best["learning_rate"]], [best["best_valid"]], s=160, facecolors="none", edgecolors="red",
                   label="selected")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("best validation score")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, replace=False)
    plt.close(fig)


def run_backbone_sweep(config, space, out):
    """The ``--tune`` sweep of a backbone search-space file (``space.method == 'backbone'``):
    trials as :func:`search`, the first one at the run's current settings (so the selection is
    never worse on validation than keeping them, unless ASHA stops that trial), the epoch cap and
    stopping rule of ``config``; writes
    ``trials.csv``, ``best.yaml`` (a RecBole YAML for ``--config_files``) and ``trials.png``
    into ``out``. The test split is never read."""
    s = space.settings
    paths = absolute_paths(config)
    # RecBole's config holds data_path joined with the data set's name; a trial's Config joins it again
    paths["data_path"] = str(Path(paths["data_path"]).parent)
    config_dict = {**config.external_config_dict, **paths,
                   **space.fixed, "tune": None, "unlearn": None, "state": "WARNING", "show_progress": False}
    bundle = {"model": config["model"], "dataset": config["dataset"], "config_dict": config_dict,
              "model_keys": sorted(config.final_config_dict)}
    start = time.perf_counter()
    rows = search(bundle, space.domains, int(s["tune_num_samples"]), int(config["epochs"]), seed=int(s["tune_seed"]),
                  num_cpus=s["tune_num_cpus"], grace_period=int(s["tune_grace_period"]), storage=str(out / "ray"),
                  reduction_factor=float(s["tune_reduction_factor"]), max_concurrent=int(s["tune_max_concurrent"]),
                  cpus_per_trial=int(s["tune_cpus_per_trial"]), scheduler=s["tune_scheduler"],
                  address=config["ray_address"], points=[{k: config[k] for k in space.domains}])
    seconds = time.perf_counter() - start
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(out / "trials.csv", rows, keys)
    finished = [r for r in rows if r["status"] == "finished"]
    if not finished:
        raise RuntimeError(f"No trial of the backbone search finished; see {out / 'trials.csv'} and {out / 'ray'}")
    best = select(rows)
    chosen = {**{k: best[k] for k in space.domains}, **space.fixed}
    chosen = settings(chosen, bundle["model_keys"])
    write_best_yaml(out / "best.yaml", chosen, [
        f"Training settings of {config['model']} on {config['dataset']} selected on validation "
        f"{config['valid_metric']} (trial {best['trial']} of {len(rows)}, best validation score "
        f"{float(best['best_valid']):.6f} at epoch {best['best_epoch']} of {best['epochs_run']}).",
        f"Use: python run_recbole_tru.py --model={config['model']} --config_files={out / 'best.yaml'}"])
    plot_trials(out / "trials.png", rows, f"{config['model']} on {config['dataset']}: {len(rows)} trials")
    capped = sum(bool(r["capped"]) for r in finished)
    print(f"backbone search: {len(rows)} trials ({len(finished)} finished, {capped} at the epoch cap), "
          f"{seconds:.0f} s; selected {chosen} (validation {float(best['best_valid']):.4f}"
          f"{', ENDED AT THE EPOCH CAP: raise epochs' if best['capped'] else ''})")
    print(f"sweep written to {out}")
    return {"output_dir": str(out), "method": "backbone", "trials": rows, "best": best, "best_settings": chosen,
            "search_seconds": seconds, "judged": None}
