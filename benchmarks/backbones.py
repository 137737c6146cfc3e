"""Backbones tuned on validation: a Ray Tune search per model, then tuned vs untuned over seeds.

1. ``search``: for each model, ``--samples`` random trials over learning rate, L2 weight and
   embedding size (:data:`SPACES`), each trial a fresh training run with early stopping on
   validation NDCG@20 (``--epochs`` cap, stopping step 10), an ASHA scheduler stopping weak
   trials early, one CPU per trial, ``--cpus`` trials at a time
   (:mod:`recbole_tru.tune.backbone`). The test split is never read. Every trial is saved
   (``<name>_trials.csv``); the best finished trial is selected.
2. ``seeds``: the selected settings and the untuned ones (:data:`UNTUNED`: the plugin's and
   RecBole's defaults before this search) trained with ``--seeds`` model seeds on the same
   split, tested with RecBole's full-sort evaluator: test Recall@20 / NDCG@20 with a 95 % CI,
   the best and last epoch (a run that ends at the cap is flagged), and NDCG@20 on the cold
   half of the catalogue (:func:`cold_ndcg`: the items with the fewest training interactions,
   where content should help most).

    python benchmarks/backbones.py                              # search + seeds, 4 models
    python benchmarks/backbones.py --write-properties           # also write the tuned defaults
    python benchmarks/backbones.py --skip-search                # seeds only, from <name>.json
    python benchmarks/backbones.py --models VBPR --update       # one model again, the others kept
    python benchmarks/backbones.py --properties-only            # write the tuned defaults from <name>.json

``--write-properties`` writes each chosen setting as ``properties/dataset/<dataset>/<model>.yaml``
(the plugin loads it after ``dataset/<dataset>.yaml``, below ``--config_files``): the search's
pick where its mean validation NDCG@20 over the seeds beats the untuned settings' (:func:`choose`),
else no file (the model keeps its untuned defaults). Outputs:
``<out>/<name>.json``, ``.md``, ``.csv``, ``.png`` and ``<name>_trials.csv``.
"""
import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from recbole_tru.files import save_png, write_text, write_texts  # noqa: E402
from recbole_tru.stats import t_interval  # noqa: E402
from unlearning_report import pm  # noqa: E402

MODELS = ("BPR", "LightGCN", "VBPR", "MMGCN")
LEARNING_RATE = "loguniform [0.0003, 0.01]"
WIDTH = "choice [32, 64, 128]"
L2 = "choice [0.0, 1e-06, 1e-05, 0.0001, 0.001]"
# the L2 key of each model: RecBole's BPR has none of its own and uses the optimiser's weight decay
SPACES = {
    "BPR": {"learning_rate": LEARNING_RATE, "embedding_size": WIDTH,
            "weight_decay": "choice [0.0, 1e-07, 1e-06, 1e-05, 0.0001]"},
    "LightGCN": {"learning_rate": LEARNING_RATE, "embedding_size": WIDTH, "reg_weight": L2},
    # VBPR's penalty also covers the content vectors (reg_content): a wider range, up to 0.1
    "VBPR": {"learning_rate": LEARNING_RATE, "embedding_size": WIDTH,
             "reg_weight": "choice [0.0, 1e-05, 0.0001, 0.001, 0.01, 0.1]"},
    "MMGCN": {"learning_rate": LEARNING_RATE, "embedding_size": WIDTH, "reg_weight": L2},
}
# the settings before the search: properties/overall.yaml, properties/model/*.yaml, RecBole's
UNTUNED = {
    "BPR": {"learning_rate": 0.001, "embedding_size": 64, "weight_decay": 0.0},
    "LightGCN": {"learning_rate": 0.001, "embedding_size": 64, "reg_weight": 1e-05},
    "VBPR": {"learning_rate": 0.001, "embedding_size": 64, "reg_weight": 1e-05},
    "MMGCN": {"learning_rate": 0.001, "embedding_size": 64, "reg_weight": 1e-05},
}
COLD_SHARE = 0.5


def base_config(epochs, extra):
    return {"epochs": epochs, "stopping_step": 10, "eval_step": 1, "state": "WARNING", "show_progress": False,
            **extra}


def model_keys(model, dataset):
    from recbole_tru.config import Config

    return sorted(Config(model=model, dataset=dataset, config_dict={"state": "WARNING"},
                         read_cmd_line=False).final_config_dict)


def bundle_for(model, dataset, config_dict):
    return {"model": model, "dataset": dataset, "config_dict": config_dict, "model_keys": model_keys(model, dataset)}


def cold_ndcg(model, train, test, share=COLD_SHARE, k=20):
    """NDCG@k on the cold part of the catalogue: the ``share`` of items with the fewest training
    interactions (ties by id). Each test user with a cold test item ranks the cold items only
    (its training items masked); positives are its cold test items. Returns ``(ndcg, users)``."""
    from recbole_tru.data.retained import user_item_csr
    from recbole_tru.model.ranking import user_scores

    uid, iid = train.dataset.uid_field, train.dataset.iid_field
    n_items = train.dataset.item_num
    counts = np.bincount(train.dataset.inter_feat[iid].numpy(), minlength=n_items)[1:]   # id 0 is padding
    cold = 1 + np.argsort(counts, kind="stable")[: int(round(share * (n_items - 1)))]
    is_cold = np.zeros(n_items, dtype=bool)
    is_cold[cold] = True
    tu, ti = test.dataset.inter_feat[uid].numpy(), test.dataset.inter_feat[iid].numpy()
    keep = is_cold[ti]
    tu, ti = tu[keep], ti[keep]
    users = np.unique(tu)
    history = user_item_csr(train.dataset.inter_feat[uid].numpy(), train.dataset.inter_feat[iid].numpy(),
                            train.dataset.user_num)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for start in range(0, len(users), 256):
        block = users[start:start + 256]
        scores = user_scores(model, block, history)[:, torch_index(cold)].numpy()
        top = cold[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
        for row, user in enumerate(block):
            positives = set(ti[tu == user].tolist())
            hits = np.fromiter((item in positives for item in top[row]), dtype=bool, count=top.shape[1])
            ideal = discount[: min(len(positives), k)].sum()
            total += float(discount[: top.shape[1]][hits].sum() / ideal)
    return total / max(len(users), 1), int(len(users))


def torch_index(ids):
    import torch

    return torch.as_tensor(ids, dtype=torch.long)


def run_seed(task):
    """One training run with settings ``task['params']`` and model seed ``task['seed']``, tested."""
    import torch

    from recbole_tru.training import quiet_logging
    from recbole_tru.tune.backbone import settings, train_once

    torch.set_num_threads(1)
    quiet_logging()
    bundle = task["bundle"]
    params = {**settings(task["params"], bundle["model_keys"]), "model_seed": task["seed"]}
    summary, (model, trainer, (train, valid, test), _) = train_once(bundle, params)
    result = trainer.evaluate(test, load_best_model=False)
    cold, cold_users = cold_ndcg(model, train, test)
    return {"model": bundle["model"], "variant": task["variant"], "seed": task["seed"], "params": task["params"],
            "recall@20": float(result["recall@20"]), "ndcg@20": float(result["ndcg@20"]), "cold_ndcg@20": cold,
            "cold_users": cold_users, "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
            "capped": summary["capped"], "valid_ndcg@20": summary["best_valid_score"], "seconds": summary["seconds"]}


def run_seeds(tasks, cpus):
    import ray

    from recbole_tru.cluster import ray_session

    with ray_session(None, cpus):
        remote = ray.remote(num_cpus=1)(run_seed)
        return ray.get([remote.remote(t) for t in tasks])


def summarise(report):
    cells = {}
    for row in report["runs"]:
        cells.setdefault((row["model"], row["variant"]), []).append(row)
    report["cells"] = []
    for (model, variant), rows in cells.items():
        cell = {"model": model, "variant": variant, "params": rows[0]["params"], "seeds": [r["seed"] for r in rows],
                "capped": sum(bool(r["capped"]) for r in rows),
                "best_epochs": [r["best_epoch"] for r in rows], "epochs": [r["epochs"] for r in rows]}
        for key in ("recall@20", "ndcg@20", "cold_ndcg@20", "valid_ndcg@20"):
            cell[key] = t_interval([r[key] for r in rows])
        report["cells"].append(cell)
    return report


def params_text(params):
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def markdown(report):
    lines = [f"`{report['command']}` ({report['wall_seconds'] / 60:.1f} min, {report['machine']}). Data set "
             f"{report['dataset']}; epoch cap {report['epochs']}, stopping step 10, selection on validation NDCG@20.", ""]
    if report.get("search"):
        lines += ["### Searches", "", "| model | trials (finished / stopped early / error) | capped | best valid NDCG@20 "
                  "| selected settings | its epochs (best) |", "| --- | --- | --- | --- | --- | --- |"]
        for model, s in report["search"].items():
            rows = s["trials"]
            count = {k: sum(r["status"].startswith(k) for r in rows) for k in ("finished", "stopped", "error")}
            best = s["selected"]
            lines.append(f"| {model} | {len(rows)} ({count['finished']} / {count['stopped']} / {count['error']}) | "
                         f"{sum(bool(r['capped']) for r in rows if r['capped'] is not None)} | {best['best_valid']:.4f} | "
                         f"{params_text(s['params'])} | {best['epochs_run']} ({best['best_epoch']}) |")
        lines.append("")
    choice = report.get("choice") or {}
    lines += ["### Tuned vs untuned (mean ± 95 % CI half-width over model seeds)", "",
              "The default (last column) is the search's pick only where its mean validation NDCG@20 over the "
              "seeds beats the untuned settings'; the test columns take no part in that choice.", "",
              "| model | settings | seeds | valid NDCG@20 | test Recall@20 | test NDCG@20 | cold-half NDCG@20 "
              "| best epochs | runs ending at the cap | default |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in report["cells"]:
        chosen = "yes" if choice.get(c["model"], {}).get("variant") == c["variant"] else ""
        lines.append(f"| {c['model']} | {c['variant']}: {params_text(c['params'])} | {len(c['seeds'])} | "
                     f"{pm(c['valid_ndcg@20'])} | {pm(c['recall@20'])} | {pm(c['ndcg@20'])} | {pm(c['cold_ndcg@20'])} | "
                     f"{', '.join(map(str, c['best_epochs']))} | {c['capped']} | {chosen} |")
    return "\n".join(lines) + "\n"


def csv_text(report):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "variant", "seed", "recall@20", "ndcg@20", "cold_ndcg@20", "epochs", "best_epoch",
                     "capped", "settings"])
    for r in report["runs"]:
        writer.writerow([r["model"], r["variant"], r["seed"], f"{r['recall@20']:.6f}", f"{r['ndcg@20']:.6f}",
                         f"{r['cold_ndcg@20']:.6f}", r["epochs"], r["best_epoch"], int(bool(r["capped"])),
                         json.dumps(r["params"], sort_keys=True)])
    return out.getvalue()


def trials_csv(report):
    out = io.StringIO()
    rows = [{"model": m, **r} for m, s in (report.get("search") or {}).items() for r in s["trials"]]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    models = list(dict.fromkeys(c["model"] for c in cells))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "ndcg@20", "test NDCG@20"), (axes[1], "cold_ndcg@20", "cold-half NDCG@20")):
        for offset, variant in ((-0.2, "untuned"), (0.2, "tuned")):
            xs, means, errs = [], [], []
            for i, model in enumerate(models):
                cell = next((c for c in cells if c["model"] == model and c["variant"] == variant), None)
                if cell is None:
                    continue
                xs.append(i + offset)
                means.append(cell[key]["mean"])
                errs.append((cell[key]["ci_high"] - cell[key]["ci_low"]) / 2 if cell[key]["n"] > 1 else 0)
            ax.bar(xs, means, width=0.4, yerr=errs, capsize=3, label=variant)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(f"{title} ({report['dataset']}, 95 % CI over seeds)")
        ax.legend()
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def write_outputs(report, out, name):
    texts = [("json", json.dumps(report, indent=2)), ("md", markdown(report)), ("csv", csv_text(report))]
    write_texts(out, name, texts)
    if report.get("search"):
        write_texts(out, f"{name}_trials", [("csv", trials_csv(report))])
    plot(report, out / f"{name}.png")


# the '# (type) what' comment of each key a tuned property file may hold (the house style of properties/)
KEY_COMMENTS = {
    "learning_rate": "(float) Learning rate.",
    "embedding_size": "(int) Width of the ID embeddings.",
    "content_embedding_size": "(int) Width of each modality's factors (tied to embedding_size by the search).",
    "latent_dim": "(int) Width each modality is projected to (tied to embedding_size by the search).",
    "reg_weight": "(float) L2 weight of the model's loss.",
    "weight_decay": "(float) The optimiser's weight decay (RecBole's BPR has no L2 term of its own).",
}


def properties_text(model, dataset, values, report_name):
    """``properties/dataset/<dataset>/<model>.yaml``: the selected settings (tied widths
    included), each with its typed comment; floats as PyYAML writes them (``1.0e-06``, which
    YAML 1.1 readers, RecBole's included, read as a float)."""
    lines = [f"# {model} on {dataset}: training settings selected on validation NDCG@20 by a Ray Tune search",
             f"# (benchmarks/backbones.py; every trial in benchmarks/results/{report_name}_trials.csv). Loaded after",
             f"# properties/model/{model}.yaml and properties/dataset/{dataset}.yaml; --config_files and the",
             "# command line override it."]
    for key, value in values.items():
        lines.append(f"{yaml.safe_dump({key: value}).strip():<31} # {KEY_COMMENTS[key]}")
    return "\n".join(lines) + "\n"


def choose(report):
    """Per model, the settings that become the default: the search's pick only where its mean
    VALIDATION NDCG@20 over the seeds beats the untuned settings' (a guard: an ASHA search can
    stop a slow but good trial early, and its pick is one seed's score); the test split takes no
    part. Returns ``{model: {"variant", "valid": {variant: mean}}}``."""
    out = {}
    for model in dict.fromkeys(c["model"] for c in report["cells"]):
        valid = {c["variant"]: c["valid_ndcg@20"]["mean"] for c in report["cells"] if c["model"] == model}
        variant = "tuned" if valid.get("tuned", -1) > valid.get("untuned", -1) else "untuned"
        out[model] = {"variant": variant, "valid": valid}
    return out


def write_properties(report, models, root, name):
    """``properties/dataset/<dataset>/<model>.yaml`` for each model whose tuned settings were
    chosen (:func:`choose`); a model that keeps its untuned settings gets no file (an earlier
    one is removed)."""
    from recbole_tru.tune.backbone import settings

    chosen = report.get("choice") or choose(report)
    for model in models:
        path = Path(root) / "dataset" / report["dataset"] / f"{model}.yaml"
        if chosen[model]["variant"] != "tuned":
            path.unlink(missing_ok=True)
            continue
        values = settings(report["search"][model]["params"], model_keys(model, report["dataset"]))
        text = properties_text(model, report["dataset"], values, name)
        write_text(path, text, replace=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--samples", type=int, default=12, help="trials per model")
    parser.add_argument("--epochs", type=int, default=300, help="epoch cap of every training run")
    parser.add_argument("--seeds", default="1,2,3", help="model seeds of the tuned-vs-untuned runs")
    parser.add_argument("--cpus", type=int, default=2, help="trials / runs at a time (one thread each)")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (smoke runs)")
    parser.add_argument("--skip-search", action="store_true", help="seeds only, with the selections in <name>.json")
    parser.add_argument("--update", action="store_true",
                        help="search and run --models again, keeping the other models' results from <name>.json")
    parser.add_argument("--write-properties", action="store_true",
                        help="write properties/dataset/<dataset>/<model>.yaml from the selections")
    parser.add_argument("--properties-only", action="store_true",
                        help="only write the property files from the selections in <name>.json")
    parser.add_argument("--properties", default=str(ROOT / "properties"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="backbones")
    args = parser.parse_args(argv)
    import platform

    from recbole_tru.tune.backbone import domains, search, select

    out, models = Path(args.out), [m for m in args.models.split(",") if m]
    config_dict = base_config(args.epochs, json.loads(args.config))
    start = time.perf_counter()
    reuse = args.skip_search or args.properties_only or args.update
    previous = json.loads((out / f"{args.name}.json").read_text()) if reuse else {}
    if args.properties_only:
        previous["choice"] = choose(previous)
        write_outputs(previous, out, args.name)
        write_properties(previous, models, args.properties, args.name)
        return previous
    report = {"command": " ".join(["python benchmarks/backbones.py"] + (argv if argv is not None else sys.argv[1:])),
              "dataset": args.dataset, "epochs": args.epochs, "machine": f"{platform.machine()}, {args.cpus} workers x 1 thread",
              "search": previous.get("search", {}), "runs": []}
    bundles = {m: bundle_for(m, args.dataset, config_dict) for m in models}
    if not args.skip_search:
        for model in models:
            tick = time.perf_counter()
            print(f"[search {model}] {args.samples} trials ...", flush=True)
            rows = search(bundles[model], domains(SPACES[model])[0], args.samples, args.epochs, seed=args.search_seed,
                          num_cpus=args.cpus, storage=str(out.resolve() / f".{args.name}_ray"))
            best = select(rows)
            report["search"][model] = {"trials": rows, "selected": best, "seconds": time.perf_counter() - tick,
                                       "params": {k: best[k] for k in SPACES[model]}}
            print(f"[search {model}] {time.perf_counter() - tick:.0f} s, best valid {best['best_valid']:.4f} "
                  f"{params_text(report['search'][model]['params'])}", flush=True)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    tasks = [{"bundle": bundles[m], "variant": variant, "params": params, "seed": seed}
             for m in models for variant, params in (("untuned", UNTUNED[m]), ("tuned", report["search"][m]["params"]))
             for seed in seeds]
    print(f"[seeds] {len(tasks)} runs ...", flush=True)
    report["runs"] = run_seeds(tasks, args.cpus)
    if args.update:         # the other models' searches and runs are kept from <name>.json
        report["runs"] = [r for r in previous["runs"] if r["model"] not in models] + report["runs"]
        report["search"] = {**{m: v for m, v in previous["search"].items() if m not in models}, **report["search"]}
        report["command"] = f"{previous['command']}; then {report['command']}"
        report["wall_seconds"] = previous.get("wall_seconds", 0) + (time.perf_counter() - start)
    report.setdefault("wall_seconds", time.perf_counter() - start)
    report = summarise(report)
    report["choice"] = choose(report)
    write_outputs(report, out, args.name)
    if args.write_properties:
        write_properties(report, models, args.properties, args.name)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
