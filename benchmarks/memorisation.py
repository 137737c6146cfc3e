"""Does a backbone memorise its training pairs on SYNTHETIC data? The original's forget Recall@20
against a model retrained without a 5 % random interaction deletion, per generator or model
variant, on a custom-size synthetic data set (:mod:`recbole_tru.data.builders.synthetic`).

The scale benchmark needs a data set on which MMGCN memorises as it does on ml-100k-mm (original
0.375 vs retrain 0.308 forget Recall@20 there), or TRU has nothing to undo; this measures which
knob, if any, gives one. Each variant runs in its own single-thread process, two at a time.

    python benchmarks/memorisation.py                            # the variants below, a quarter of Baby
    python benchmarks/memorisation.py --variants '[{"model": "MMGCN", "gen": {"noise": 1.0}}]'

Writes ``<out>/<name>.json`` and ``<name>.md`` (default ``benchmarks/results/memorisation``).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from recbole_tru.files import write_texts  # noqa: E402

# a quarter of Amazon Baby's users, items and interactions (its density), narrower image-like features
QUARTER_BABY = [4861, 1762, 40198, 512, 384]
VARIANTS = [
    {"model": "MMGCN"},
    {"model": "VBPR"},
    {"model": "MMGCN", "gen": {"noise": 2.0}},
    {"model": "MMGCN", "gen": {"affinity": 0.5}},
    {"model": "MMGCN", "config": {"learning_rate": 0.0002}},
    {"model": "MMGCN", "config": {"reg_weight": 0.0}},
]
TRAINING = {"epochs": 40, "stopping_step": 5}


def data_name(variant):
    gen = variant.get("gen") or {}
    return "memo-" + ("-".join(f"{k}{v}" for k, v in sorted(gen.items())) or "default")


def build(size, gen_knobs, folder, name):
    """The synthetic data set ``name`` with the generator's knobs changed by ``gen_knobs``."""
    import numpy as np

    from recbole_tru.data.builders import synthetic as syn

    dest = Path(folder) / name
    if (dest / "README.md").is_file():
        return
    size, gen = syn.Size(*size), replace(syn.Generator(), **gen_knobs)
    users, items, times, _, item_factors = syn.generate_interactions(size, gen)
    syn.write_inter(dest / f"{name}.inter", users, items, times)
    rng, tokens = np.random.default_rng([gen.seed, 1]), [f"i{i}" for i in range(size.items)]
    for modality, dim in (("imagelike", size.imagelike_dim), ("textlike", size.textlike_dim)):
        blocks = syn._feature_chunks(rng, item_factors, dim, modality, gen)
        syn.write_feature_stream(dest / f"{name}.{syn.MODALITIES[modality]}", tokens, blocks, modality)
    (dest / f"{name}.yaml").write_text(syn.config_text(name, size), encoding="utf-8")
    (dest / "README.md").write_text(f"SYNTHETIC, benchmarks/memorisation.py: size {list(size.__dict__.values())}, "
                                    f"generator {gen}\n", encoding="utf-8")


def measure(task):
    """Original and retrain (5 % random interactions) of one variant: their forget Recall@20."""
    import yaml

    from recbole_tru.config import Config
    from recbole_tru.data.forget import select_forget
    from recbole_tru.data.retained import UnlearnData
    from recbole_tru.training import load_data
    from recbole_tru.unlearn import pipeline
    from recbole_tru.unlearn.evaluation import Judge

    name, folder = task["name"], task["folder"]
    params = yaml.safe_load((Path(folder) / name / f"{name}.yaml").read_text())
    params.update({"data_path": folder, "state": "WARNING", "show_progress": False, "unlearn_trajectory": False,
                   "unlearn_cache": False, "audit_enabled": False, "forget_regime": "interaction",
                   "forget_share": 0.05, **TRAINING, **(task["variant"].get("config") or {})})
    config = Config(model=task["variant"]["model"], dataset=name, config_dict=params, read_cmd_line=False)
    _, train, valid, test = load_data(config)
    start = time.perf_counter()
    original, summary, _ = pipeline.train_reference(config, (train, valid), None, "original")
    forget = select_forget(config, train.dataset)
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    retrained, trainer, _ = pipeline.unlearn_method(config, "retrain", data, original)
    judge = Judge(config, data, retrained)
    metrics = judge.metrics(original)
    return {"variant": task["variant"], "data": name, "n_forget": len(forget),
            "best_epoch": summary["best_epoch"], "epochs": summary["epochs"], "retrain_epochs": trainer.summary["epochs"],
            "original_forget_recall@20": metrics["forget"]["recall@20"],
            "retrain_forget_recall@20": judge.reference["forget"]["recall@20"],
            "original_test_ndcg@20": metrics["retain"]["ndcg@20"],
            "retrain_test_ndcg@20": judge.reference["retain"]["ndcg@20"], "seconds": time.perf_counter() - start}


def run_one(task):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(task)],
                          capture_output=True, text=True, env=env, cwd=task["folder"])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {task['variant']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def markdown(report):
    lines = [f"`{report['command']}` ({report['wall_seconds'] / 60:.1f} min). SYNTHETIC data of size "
             f"{report['size']} (users, items, interactions, image-like and text-like widths); 5 % random "
             f"interactions deleted; training {report['training']}.", "",
             "| model | variant | original forget Recall@20 | retrain's | gap | gap / retrain's | best epoch, from 0 (epochs run) "
             "| original test NDCG@20 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        knobs = {**(r["variant"].get("gen") or {}), **(r["variant"].get("config") or {})}
        o, t = r["original_forget_recall@20"], r["retrain_forget_recall@20"]
        lines.append(f"| {r['variant']['model']} | {json.dumps(knobs) if knobs else 'defaults'} | {o:.4f} | {t:.4f} "
                     f"| {o - t:+.4f} | {(o - t) / t:+.0%} | {r['best_epoch']} ({r['epochs']}) "
                     f"| {r['original_test_ndcg@20']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default=",".join(map(str, QUARTER_BABY)),
                        help="users,items,interactions,imagelike width,textlike width")
    parser.add_argument("--variants", default=json.dumps(VARIANTS),
                        help='JSON list of {"model": M, "gen": {generator knobs}, "config": {model config}}')
    parser.add_argument("--data", default=str(HERE / "data"), help="parent folder of the generated data sets")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="memorisation")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(measure(json.loads(args.one))), flush=True)
        return None
    size = [int(x) for x in args.size.split(",")]
    variants = json.loads(args.variants)
    folder = str(Path(args.data).resolve())
    start = time.perf_counter()
    for variant in variants:
        build(size, variant.get("gen") or {}, folder, data_name(variant))
    tasks = [{"variant": v, "name": data_name(v), "folder": folder} for v in variants]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(run_one, tasks))
    report = {"command": " ".join(["python benchmarks/memorisation.py"] + (argv if argv is not None else sys.argv[1:])),
              "size": size, "training": TRAINING, "wall_seconds": time.perf_counter() - start, "rows": rows}
    write_texts(args.out, args.name, (("json", json.dumps(report, indent=2)), ("md", markdown(report))))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
