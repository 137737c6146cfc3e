"""What the two attacks that hold the original model read, on CALIBRATION requests: the fitted
``delta`` attack (logistic on score and score change, fitted on the audited model's members vs
non-members) and the unfitted ``drop`` attack (the pairs whose score fell most since the
original are called deleted).

Neither of ``delta``'s fitting sets was deleted (retained pairs vs held-out pairs), so the weight
it fits on the score change says nothing about what a deletion does: this benchmark records, per
request and model, that weight (per unit of score change; < 0: a fall reads as "member"), the
two attacks' AUCs on the forget pairs vs the evaluation's held-out pairs, and the mean score
change of each pair set. Judged requests' seeds are refused (nothing here may be read on them).

    python benchmarks/audit_delta.py --models VBPR,MMGCN --regimes interaction,user,item --seeds 1,2,3,4,5
"""
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from calibration import over_requests, request_parser  # noqa: E402
from unlearning_jobs import prepare_cell, unlearn_variant  # noqa: E402
from unlearning_report import fmt, pm  # noqa: E402

import numpy as np  # noqa: E402

from recbole_tru.audit import SUITE, Audit  # noqa: E402
from recbole_tru.audit.features import DELTA  # noqa: E402
from recbole_tru.files import write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.stats import paired, t_interval  # noqa: E402

METHODS = ("tru", "reverse")
SETS = ("fit_members", "fit_nonmembers", "eval_members", "eval_nonmembers")


def delta_weight(attack):
    """The fitted ``delta`` attack's weight on the score change, per unit (the logistic's
    coefficient divided by the standardiser's scale; 0 where the column was constant)."""
    scaler, logistic = attack.model[0], attack.model[-1]
    column = attack.columns.index(DELTA)
    scale = scaler.scale_[column]
    return float(logistic.coef_[0][column] / scale) if scale else 0.0


def read_model(audit, model):
    feats = audit.interaction.features(model)
    delta = SUITE["delta"].make(audit.seed).fit(feats["fit_members"], feats["fit_nonmembers"])
    drop = SUITE["drop"].make(audit.seed).fit(feats["fit_members"], feats["fit_nonmembers"])
    members, nonmembers = feats["eval_members"], feats["eval_nonmembers"]
    return {"delta_auc": delta.report(members, nonmembers), "delta_weight": delta_weight(delta),
            "drop_auc": drop.report(members, nonmembers),
            "mean_change": {name: float(np.mean(feats[name][DELTA])) for name in SETS}}


def run_request(model, regime, runs, seed, dataset, config_files, methods, config=None):
    extra = {**(config or {}), "forget_seed": seed, "audit_enabled": True}
    base, data, original, _, _, files, (config, retrained) = prepare_cell(model, regime, runs, extra, dataset,
                                                                          config_files)
    audit = Audit(config, data, original)
    out = {"retrain": read_model(audit, retrained)}
    for method in methods:
        unlearned, _ = unlearn_variant(model, dataset, files, base, {}, data, original, method)
        out[method] = read_model(audit, unlearned)
    return out


def summarise(cells, methods):
    rows = []
    for cell in cells:
        requests = cell["requests"]
        for name in ("retrain", *methods):
            row = {"model": cell["model"], "regime": cell["regime"], "method": name, "n": len(requests)}
            for key in ("delta_auc", "drop_auc", "delta_weight"):
                row[key] = t_interval([r[name][key] for r in requests])
            row["weight_negative"] = sum(r[name]["delta_weight"] < 0 for r in requests)
            if name != "retrain":
                for attack in ("delta", "drop"):
                    distance = [abs(r[name][f"{attack}_auc"] - r["retrain"][f"{attack}_auc"]) for r in requests]
                    row[f"{attack}_distance"] = t_interval(distance)
                # is the drop attack's distance to retrain lower than the delta attack's, request by request?
                row["drop_vs_delta"] = paired(
                    [abs(r[name]["drop_auc"] - r["retrain"]["drop_auc"]) for r in requests],
                    [abs(r[name]["delta_auc"] - r["retrain"]["delta_auc"]) for r in requests])
            rows.append(row)
    return rows


def markdown(report):
    lines = [f"Calibration requests (forget seeds {', '.join(map(str, report['seeds']))}); mean ± 95 % CI over the "
             "requests. `delta weight`: the fitted `delta` attack's weight per unit of score change (< 0: a fall reads "
             "as member), `negative`: requests where it is < 0. Distances are |AUC − retrain's| per request; "
             "`drop − delta` is their paired difference (< 0: the unfitted `drop` attack is the nearer to "
             "retrain's), with the requests where `drop` is strictly nearer.", "",
             "| backbone | regime | model | delta AUC | delta weight | negative | drop AUC | delta distance "
             "| drop distance | drop − delta distance | drop nearer |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["summary"]:
        distances = [pm(r[k], 3) if k in r else "" for k in ("delta_distance", "drop_distance")]
        versus = r.get("drop_vs_delta")
        distances += [pm(versus["diff"], 3), f"{versus['wins']}/{versus['n']}"] if versus else ["", ""]
        lines.append(f"| {r['model']} | {r['regime']} | {r['method']} | {pm(r['delta_auc'], 3)} | {pm(r['delta_weight'], 3)} | "
                     f"{r['weight_negative']}/{r['n']} | {pm(r['drop_auc'], 3)} | {' | '.join(distances)} |")
    lines += ["", "Mean score change since the original, per pair set (first request of each cell):", "",
              "| backbone | regime | model | fit members | fit non-members | forget pairs | eval held-out |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        first = cell["requests"][0]
        for name, r in first.items():
            if name == "seed":
                continue
            c = r["mean_change"]
            lines.append(f"| {cell['model']} | {cell['regime']} | {name} | "
                         + " | ".join(fmt(c[s], 3) for s in SETS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = request_parser(__doc__, "audit_delta")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--render", default=None, metavar="JSON",
                   help="rewrite the .md of this audit_delta<tag>.json into --out (no measuring)")
    args = p.parse_args(argv)
    if args.render:
        report = json.loads(Path(args.render).read_text())
        write_texts(args.out, Path(args.render).stem, [("md", markdown(report))])
        return report
    methods = [m for m in args.methods.split(",") if m]
    files = args.config_files.split() if args.config_files else None
    start = time.time()
    seeds, cells = over_requests(args, "audit_delta", lambda model, regime, seed: run_request(
        model, regime, Path(args.runs), seed, args.dataset, files, methods, json.loads(args.config)))
    report = {"command": "python benchmarks/audit_delta.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": environment(), "seeds": seeds, "wall_seconds": time.time() - start,
              "cells": cells, "summary": summarise(cells, methods)}
    write_texts(args.out, f"audit_delta{args.tag}", [("json", json.dumps(report, indent=1) + "\n"),
                                                     ("md", markdown(report))])
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
