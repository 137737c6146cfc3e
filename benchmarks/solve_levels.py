"""Where each model ranks a request's forget pairs against the same users' validation pairs: the
instrument for the level a TRU variant puts the forget pairs at, read beside the retrained model's.

For every request (cached original and retrained models of a run folder, as ``tru_seconds.py``
reads them) and every ``--variants`` entry, the pair-level hit rate at each ``--ks`` cut-off (the
share of pairs ranked within the top k, history masked, exact full-sort ranks) of

* the forget pairs (the deleted items' pairs counted apart: ``partial`` is the rest), and
* the validation pairs of the users who forget something,

for the original, the retrained model and each variant. A variant that targets the validation
level (``tru_solve: rows``) should end with its forget pairs where its own validation pairs are;
retraining shows where an exact unlearner puts them. Nothing here chooses a default; the seeds
may be calibration or judged requests, the report says which were run. Not timed.

    python benchmarks/solve_levels.py --dataset synthetic-baby --runs RUNS --seeds 1 \\
        --config_files benchmarks/data/synthetic-baby/synthetic-baby.yaml \\
        --config '{"data_path": "benchmarks/data", "stopping_step": 10, "epochs": 30}' \\
        --variants '{"solve, 2 passes": {"tru_solve": "rows", "tru_match_quantiles": "drawn"},
                     "solve, 5 passes": {"tru_solve": "rows", "tru_match_quantiles": "drawn", "tru_solve_passes": 5}}'
"""
import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from unlearning_jobs import prepare_cell, unlearn_variant  # noqa: E402
from unlearning_report import publish  # noqa: E402

from recbole_tru.files import save_png  # noqa: E402
from recbole_tru.model.ranking import pair_ranks  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402


def levels(model, data, ks, partial, chosen):
    """``{group: {k: hit rate}}`` of one model: ``forget``, ``partial`` (pairs of items kept: the
    mask ``partial``), ``deleted_items`` (None without such pairs) and ``valid`` (the validation
    pairs in ``chosen``: the forget users')."""
    f, history = data.forget, data.train_history()
    forget = pair_ranks(model, f.users, f.items, history)
    valid = pair_ranks(model, data.valid_users[chosen], data.valid_items[chosen], history)

    def hits(ranks):
        return None if len(ranks) == 0 else {str(k): float(np.mean(ranks <= k)) for k in ks}
    return {"forget": hits(forget), "partial": hits(forget[partial]), "deleted_items": hits(forget[~partial]),
            "valid": hits(valid)}


def run_request(args, seed, variants, ks):
    extra = {**json.loads(args.config), "forget_seed": seed, "audit_enabled": False}
    files = args.config_files.split() if args.config_files else None
    base, data, original, _, _, files, (_, retrained) = prepare_cell(args.model, args.regime, Path(args.runs), extra,
                                                                     args.dataset, files)
    f = data.forget
    partial, users = ~np.isin(f.items, f.deleted_items), np.unique(f.users)
    chosen = np.isin(data.valid_users, users)
    out = {"seed": seed, "pairs": int(len(f.users)), "deleted_item_pairs": int((~partial).sum()),
           "users": int(len(users)), "models": {}}
    with torch.no_grad():
        out["models"]["original"] = levels(original, data, ks, partial, chosen)
        out["models"]["retrain"] = levels(retrained, data, ks, partial, chosen)
    for name, overrides in variants.items():
        model, trainer = unlearn_variant(args.model, args.dataset, files, base, overrides, data, original)
        with torch.no_grad():
            out["models"][name] = {**levels(model, data, ks, partial, chosen),
                                   "stop": getattr(trainer, "stop_reason", None)}
    return out


def markdown(report):
    ks = report["ks"]
    lines = [f"# Forget pairs against the same users' validation pairs ({report['model']}, {report['dataset']})", "",
             f"`{report['command']}`", "",
             "Pair-level hit rates (share of pairs ranked within the top k, history masked); `partial`: the forget "
             "pairs of items that stay; `- valid`: the forget pairs' hit rate minus the validation pairs' of the "
             "same model.", "",
             "| request | model | " + " | ".join(f"forget @{k} | partial @{k} | valid @{k} | - valid @{k}" for k in ks)
             + " |",
             "| --- | --- | " + " | ".join("--- | --- | --- | ---" for _ in ks) + " |"]
    for request in report["requests"]:
        for name, m in request["models"].items():
            cells = []
            for k in ks:
                k = str(k)
                cells += [f"{m['forget'][k]:.4f}", f"{m['partial'][k]:.4f}" if m["partial"] else "n/a",
                          f"{m['valid'][k]:.4f}" if m["valid"] else "n/a",
                          f"{m['forget'][k] - m['valid'][k]:+.4f}" if m["valid"] else "n/a"]
            lines.append(f"| {request['seed']} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Per model (the original left out: it is off the scale, in the table) and cut-off k, the
    forget pairs' hit rate minus the validation pairs', mean over the requests."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ks, requests = [str(k) for k in report["ks"]], report["requests"]
    names = [n for n in requests[0]["models"] if n != "original"]
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(names), 3.6))
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        gaps = [np.mean([r["models"][n]["forget"][k] - r["models"][n]["valid"][k] if r["models"][n]["valid"]
                         else np.nan for r in requests]) for n in names]
        ax.bar(np.arange(len(names)) + j * width, gaps, width, label=f"k = {k}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(ks) - 1) / 2, names, fontsize=7, rotation=15)
    ax.set_ylabel("forget hit@k - validation hit@k")
    ax.set_title(f"forget pairs against the model's own validation pairs ({len(requests)} request(s); "
                 "the original is off the scale)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k-mm")
    p.add_argument("--config_files", default="")
    p.add_argument("--runs", required=True, help="run folder of the cached models (trained there when missing)")
    p.add_argument("--model", default="VBPR")
    p.add_argument("--regime", default="interaction")
    p.add_argument("--seeds", default="1", help="forget seeds of the requests")
    p.add_argument("--ks", default="5,20,100")
    p.add_argument("--config", default="{}", help="JSON dict of extra config")
    p.add_argument("--variants", default='{"default": {}}', help="JSON {name: config overrides}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    try:
        variants = json.loads(args.variants)
        json.loads(args.config)
    except json.JSONDecodeError as e:
        p.error(f"--variants / --config: not JSON ({e})")
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        p.error("--variants: a JSON object {name: {config key: value}}")
    if {"original", "retrain"} & set(variants):
        p.error("--variants: 'original' and 'retrain' are the reference rows' names")
    ks = [int(k) for k in args.ks.split(",")]
    torch.set_num_threads(args.threads)
    start = time.time()
    requests = [run_request(args, int(s), variants, ks) for s in args.seeds.split(",")]
    report = {"command": "python benchmarks/solve_levels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": environment(), "model": args.model, "dataset": args.dataset, "ks": ks,
              "variants": variants, "wall_seconds": time.time() - start, "requests": requests}
    return publish(args.out, f"solve_levels{args.tag}", report, markdown, plot)


if __name__ == "__main__":
    main()
