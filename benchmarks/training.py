"""Training benchmark: the plugin's multimodal backbones next to RecBole's ID-only models.

Each model is trained in its own process (so peak memory is its own) on the same data set,
split, seed and budget (epochs, early stopping, batch size, learning rate), and tested with
RecBole's full-sort evaluator. Reported: Recall/NDCG@10/20, epochs run, median seconds per
TRAINING epoch (validation excluded), peak resident memory, and the mean training popularity of
the recommended top-20 items (how popularity-driven the lists are).

    python benchmarks/training.py                 # ~4 min on 2 cores
    python benchmarks/training.py --models VBPR,BPR
"""
import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_tru.files import write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402

# name -> (model, config overrides)
ROWS = {
    "BPR": ("BPR", {}),
    "LightGCN": ("LightGCN", {}),
    "VBPR": ("VBPR", {}),
    "VBPR (text only)": ("VBPR", {"modalities": {"text": "textfeat"}}),
    "VBPR (meta only)": ("VBPR", {"modalities": {"meta": "metafeat"}}),
    "MMGCN": ("MMGCN", {}),
}


def measure(model, overrides, dataset):
    """Train and test one model in this process; returns a dict of figures."""
    import numpy as np

    from recbole_tru.config import Config
    from recbole_tru.data.retained import user_item_csr
    from recbole_tru.model.ranking import topk_lists
    from recbole_tru.registry import get_trainer
    from recbole_tru.training import build_model, fit_trainer, load_data, timed_train_epochs

    config = Config(model=model, dataset=dataset, config_dict={"state": "WARNING", "show_progress": False, **overrides},
                    read_cmd_line=False)
    _, train, valid, test = load_data(config)
    trained = build_model(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, trained)
    epoch_seconds = timed_train_epochs(trainer)
    summary = fit_trainer(trainer, train, valid)
    result = trainer.evaluate(test, load_best_model=False)
    # popularity of recommended items: mean training count of the top-20 of each test user
    uid, iid = train.dataset.uid_field, train.dataset.iid_field
    counts = np.bincount(train.dataset.inter_feat[iid].numpy(), minlength=train.dataset.item_num)
    users = np.unique(test.dataset.inter_feat[uid].numpy())
    seen_u = np.concatenate([train.dataset.inter_feat[uid].numpy(), valid.dataset.inter_feat[uid].numpy()])
    seen_i = np.concatenate([train.dataset.inter_feat[iid].numpy(), valid.dataset.inter_feat[iid].numpy()])
    lists = topk_lists(trained, users, user_item_csr(seen_u, seen_i, train.dataset.user_num), 20)
    return {"model": model, **{k: float(v) for k, v in result.items()}, "epochs": summary["epochs"],
            "best_epoch": summary["best_epoch"], "seconds_per_train_epoch": statistics.median(epoch_seconds),
            "fit_seconds": summary["seconds"], "avg_popularity@20": float(counts[lists].mean()),
            "test_item_popularity": float(counts[test.dataset.inter_feat[iid].numpy()].mean()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def markdown(rows):
    lines = ["| model | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | epochs | s / train epoch | peak RSS (MB) | "
             "mean popularity of top-20 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['recall@10']:.4f} | {r['recall@20']:.4f} | {r['ndcg@10']:.4f} | "
                     f"{r['ndcg@20']:.4f} | {r['epochs']} | {r['seconds_per_train_epoch']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['avg_popularity@20']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ROWS), help="row names, comma separated")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (smoke runs)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--one", help=argparse.SUPPRESS)   # internal: measure one row in this process
    args = parser.parse_args(argv)
    extra = json.loads(args.config)
    if args.one:
        model, overrides = ROWS[args.one]
        print("RESULT " + json.dumps(measure(model, {**extra, **overrides}, args.dataset)))
        return None
    rows = {}
    for name in args.models.split(","):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--dataset", args.dataset,
               "--config", args.config]
        Path(args.out).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=args.out)   # RecBole logs go there
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
        rows[name] = json.loads(line[0][len("RESULT "):])
        print(name, rows[name], flush=True)
    out = Path(args.out)
    report = {"environment": environment(), "machine": f"{platform.machine()}, {platform.python_version()}",
              "command": "python benchmarks/training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows}
    write_texts(out, "training", [("json", json.dumps(report, indent=1)), ("md", markdown(rows))])
    print(markdown(rows))
    return report


if __name__ == "__main__":
    main()
