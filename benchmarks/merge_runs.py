"""Add figures of a second run of the unlearning benchmark to the first run's results, request
by request, without re-running what the first run measured.

A second run on the same originals and forget seeds reproduces the first run's quality figures
bit for bit (docs/operations.md, Reproducibility); it may measure more (a method the first run
did not have, or an attack such as the likelihood-ratio one). This script copies from ``ADD``
into ``BASE``, for every request present in both (same backbone, regime, original and forget
seed):

* ``--methods``: whole method records the first run lacks (e.g. ``influence``);
* ``--metrics``: metrics of the methods both runs have (e.g. ``mia_lr_distance``), and
  ``--attacks``: attack AUCs into each method's ``attacks``;
* ``--replace``: whole method records that the second run measured again after the method
  changed (e.g. ``tru`` with new defaults), with its trajectory and, for ``tru``, the ablation.
  The replaced method's figures differ by design; every other method both runs have (the
  original and the retrained model above all) must still agree. Its ``speedup`` stays the one
  measured beside its own run's retraining.
* ``--backbones``: every cell of these backbones, whole (and their originals' training records),
  after the backbone itself changed (new defaults from a validation search, say): nothing of the
  first run's cells of that backbone can be compared any more, so nothing is checked; the cells
  keep the base run's order. The added run must have all of the base run's regimes of each named
  backbone.

Before anything is copied, every quality figure both runs have (forget gap, retain gap, MIA AUC,
top-K overlap) must be equal in the two runs; any difference stops the merge (the runs would not
be comparable). The merged report is re-aggregated and written with ``unlearning_report``'s
files (``unlearning.json``, ``unlearning_summary.csv``, ``unlearning.md``, the plot) to ``--out``;
the merge is recorded in the report's ``merged_from``.

    python benchmarks/merge_runs.py benchmarks/results/unlearning.json runs/lr/unlearning.json \\
        --metrics mia_lr_distance,delta_distance,mia_lr_tpr --attacks lira --out benchmarks/results
    python benchmarks/merge_runs.py benchmarks/results/unlearning.json runs/vbpr/unlearning.json \\
        --backbones VBPR --out benchmarks/results
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from unlearning_report import summarise, write_outputs  # noqa: E402

QUALITY = ("forget_gap", "retain_gap", "mia_auc", "topk_overlap")


def request_key(cell, request):
    return cell["model"], cell["regime"], request["original"], request["forget_seed"]


def merge(base, add, methods=(), metrics=(), attacks=(), replace=()):
    """``base`` with ``add``'s figures copied in (see the module); returns the number of
    requests merged. Raises ValueError on a quality figure that differs between the runs."""
    added = {request_key(c, r): r for c in add["cells"] for r in c["requests"]}
    merged = 0
    for cell in base["cells"]:
        for request in cell["requests"]:
            other = added.get(request_key(cell, request))
            if other is None:
                continue
            for method in (set(request["methods"]) & set(other["methods"])) - set(replace):
                for metric in QUALITY:
                    a, b = request["methods"][method].get(metric), other["methods"][method].get(metric)
                    if a is not None and b is not None and a != b:
                        raise ValueError(f"{request_key(cell, request)} {method} {metric}: {a} in the base run, "
                                         f"{b} in the added run: not the same measurements")
            for method in [*methods, *replace]:
                if method in other["methods"]:
                    request["methods"][method] = other["methods"][method]
            for method in replace:
                if method in other.get("trajectories", {}):
                    request.setdefault("trajectories", {})[method] = other["trajectories"][method]
            if "tru" in replace and other.get("ablation"):
                request["ablation"] = other["ablation"]
            for method, record in request["methods"].items():
                source = other["methods"].get(method)
                if source is None or method in methods or method in replace:
                    continue
                for metric in metrics:
                    if metric in source:
                        record[metric] = source[metric]
                for attack in attacks:
                    if attack in source.get("attacks", {}):
                        record.setdefault("attacks", {})[attack] = source["attacks"][attack]
            merged += 1
    return merged


def replace_backbones(base, add, backbones):
    """Replace every cell (and original record) of ``backbones`` in ``base`` with ``add``'s;
    returns the number of requests replaced. Raises ValueError when ``add`` lacks a cell of a
    named backbone that ``base`` has."""
    cells = {(c["model"], c["regime"]): c for c in add["cells"]}
    replaced = 0
    for position, cell in enumerate(base["cells"]):
        if cell["model"] not in backbones:
            continue
        new = cells.get((cell["model"], cell["regime"]))
        if new is None:
            raise ValueError(f"the added run has no {cell['model']} {cell['regime']} cell: "
                             f"cannot replace the backbone's cells whole")
        base["cells"][position] = new
        replaced += len(new["requests"])
    if "originals" in base:
        kept = [o for o in base["originals"] if o["model"] not in backbones]
        base["originals"] = kept + [o for o in add.get("originals", []) if o["model"] in backbones]
    return replaced


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("add")
    parser.add_argument("--methods", default="")
    parser.add_argument("--metrics", default="")
    parser.add_argument("--attacks", default="")
    parser.add_argument("--replace", default="")
    parser.add_argument("--backbones", default="", help="comma list: replace these backbones' cells whole")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    base, add = json.loads(Path(args.base).read_text()), json.loads(Path(args.add).read_text())
    split = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    backbones = split(args.backbones)
    if backbones and (args.methods or args.metrics or args.attacks or args.replace):
        parser.error("--backbones replaces whole cells: it does not combine with --methods, --metrics, "
                     "--attacks or --replace")
    if backbones:
        n = replace_backbones(base, add, backbones)
    else:
        n = merge(base, add, split(args.methods), split(args.metrics), split(args.attacks), split(args.replace))
    if n == 0:
        raise SystemExit("no request of the added run matches the base run")
    record = {"file": args.add, "command": add.get("command"), "requests": n, "methods": split(args.methods),
              "metrics": split(args.metrics), "attacks": split(args.attacks), "replace": split(args.replace)}
    if backbones:             # the replaced cells were measured there: keep where and how
        record.update(backbones=backbones, environment=add.get("environment"), wall_seconds=add.get("wall_seconds"))
    base.setdefault("merged_from", []).append(record)
    report = summarise(base)
    write_outputs(report, Path(args.out))
    print(f"{n} requests merged into {args.out}")
    return report


if __name__ == "__main__":
    main()
