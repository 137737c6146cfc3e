"""Where TRU's recall stop puts the forget pairs, against retraining: the stop's own quantity
(Recall@k of the forget pairs minus that of the reference pairs, over the users that have both,
ranked as the checks rank them) read on the RETRAINED model, where it would be 0 if the stop's
zero were retraining's value; the reference's own Recall@k there and under TRU's edit (the live
reference moves with the edit); TRU's state when the stop returns it (before the repair) and
after the repair, each in the stop's terms and in the judge's (forget Recall@20 against
retrain's).

One row per request (calibration requests by default: ``forget_seed`` 1); interaction-type
requests only (the partially deleted users' group, whose stop reads the recall distance).

    python benchmarks/stop_target.py --models VBPR --tag _vbpr
    python benchmarks/stop_target.py --models VBPR --config '{"forget_share": 0.011}' --tag _sparse
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unlearning import grid_parser  # noqa: E402  (puts the repository root on the path)
from unlearning_jobs import prepare_cell, variant_config  # noqa: E402
from unlearning_report import fmt  # noqa: E402

from recbole_tru.audit import Audit  # noqa: E402
from recbole_tru.files import write_texts  # noqa: E402
from recbole_tru.model.ranking import pair_ranks  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.registry import get_unlearn_trainer  # noqa: E402
from recbole_tru.unlearn import pipeline  # noqa: E402
from recbole_tru.unlearn.gate import recall_difference, recall_pair  # noqa: E402

CALIBRATION_SEED = 1


def stop_terms(trainer, model):
    """``(forget Recall@k, reference Recall@k, users with both, the difference's standard error)``
    (:func:`~recbole_tru.unlearn.gate.recall_difference`), ranked under ``model`` as TRU's
    checks rank them (same history mask, same item sample, same reference pairs, each user scored
    once) and read as the stop reads them (:func:`~recbole_tru.unlearn.gate.recall_pair`)."""
    f = trainer.data.forget
    ref_users, ref_items = trainer._reference_pairs()["partial"]
    idx = np.flatnonzero(trainer.partial_pair)
    users, items = f.users[idx], f.items[idx]
    ranks = pair_ranks(model, np.concatenate([users, ref_users]), np.concatenate([items, ref_items]),
                       trainer.data.train_history(), candidates=trainer.rank_sample)
    k = int(trainer.option("stop_k"))
    forget, reference = recall_pair(users, ranks[:len(users)], ref_users, ranks[len(users):], k)
    _, se = recall_difference(users, ranks[:len(users)], ref_users, ranks[len(users):], k)
    return forget, reference, len(np.intersect1d(users, ref_users)), se


def measure(model_name, dataset, runs, extra, config_files, overrides, audit=False):
    base, data, original, judge, _, files, (config, retrained) = prepare_cell(
        model_name, "interaction", runs, extra, dataset, config_files)
    variant = variant_config(model_name, dataset, files, base, overrides)
    data.config = variant
    trainer = get_unlearn_trainer("tru")(variant, pipeline.start_from(variant, data, original), data)
    if not trainer.partial_pair.any():
        raise SystemExit("stop_target.py: the request has no partially deleted user (an interaction request is needed)")

    auditor = Audit(config, data, original) if audit else None

    def forget_recall(model):
        return judge.metrics(model)["forget"]["recall@20"]

    def mia(model):
        """(headline AUC, rank-only attack's AUC), or Nones without ``audit``."""
        if auditor is None:
            return None, None
        out = auditor.run(model)
        return out["mia_auc"], out["mia"].get("rank")

    row = {"model": model_name, "forget_seed": int(config["forget_seed"]), "pairs": int(len(data.forget.rows)),
           "users": int(len(np.unique(data.forget.users))),
           "retrain_judge": judge.reference["forget"]["recall@20"]}
    fr, rr, row["users_with_both"], se = stop_terms(trainer, retrained)
    row.update(retrain_signed=fr - rr, retrain_signed_se=se, retrain_reference=rr)
    row["retrain_mia"], row["retrain_mia_rank"] = mia(retrained)
    at_stop = {}
    repair = trainer.repair

    def repair_recorded(first_epoch):     # the state the stop returned, before the repair edits it
        fr_, rr_, _, _ = stop_terms(trainer, trainer.model)
        at_stop.update(signed=fr_ - rr_, reference=rr_, judge=forget_recall(trainer.model))
        at_stop["mia"], at_stop["mia_rank"] = mia(trainer.model)
        repair(first_epoch)

    trainer.repair = repair_recorded
    trainer.unlearn()
    fr, rr, _, _ = stop_terms(trainer, trainer.model)
    final = {"signed": fr - rr, "reference": rr, "judge": forget_recall(trainer.model)}
    final["mia"], final["mia_rank"] = mia(trainer.model)
    at_stop = at_stop or final                # no repair ran: the returned state is final
    row.update(stop_signed=at_stop["signed"], stop_reference=at_stop["reference"], stop_judge=at_stop["judge"],
               stop_mia=at_stop["mia"], final_mia=final["mia"], stop_mia_rank=at_stop["mia_rank"],
               final_mia_rank=final["mia_rank"], final_signed=final["signed"],
               final_judge=final["judge"], repair_lift=final["judge"] - at_stop["judge"],
               stop_reason=trainer.stop_reason, steps=trainer.step)
    data.config = config
    return row


def se_text(row):
    """`` ± 1.96 se`` of the stop's quantity on retrain (reports written before it have none)."""
    se = row.get("retrain_signed_se")
    return f" ± {1.96 * se:.4f}" if se is not None and np.isfinite(se) else ""


def markdown(report):
    lines = ["| backbone | forget seed | pairs / users (with both) | stop's quantity on retrain (± 95 %) | TRU at the stop: stop's quantity | "
             "reference R@k: retrain / TRU at the stop | judge: retrain's forget R@20 | TRU at the stop | after the repair | "
             "repair's lift | stop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['forget_seed']} | {r['pairs']} / {r['users']} ({r['users_with_both']}) | "
                     f"{r['retrain_signed']:+.4f}{se_text(r)} | {r['stop_signed']:+.4f} | "
                     f"{fmt(r['retrain_reference'])} / {fmt(r['stop_reference'])} | {fmt(r['retrain_judge'])} | "
                     f"{fmt(r['stop_judge'])} ({r['stop_judge'] - r['retrain_judge']:+.4f}) | "
                     f"{fmt(r['final_judge'])} ({r['final_judge'] - r['retrain_judge']:+.4f}) | "
                     f"{r['repair_lift']:+.4f} | {r['stop_reason']} |")
    if any(r.get("retrain_mia") is not None for r in report["rows"]):
        lines += ["", "| backbone | forget seed | attack | AUC: retrain | TRU at the stop (distance) | after the repair (distance) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in report["rows"]:
            for attack, suffix in (("headline", ""), ("rank only", "_rank")):
                ref, stop, final = (r[f"{k}_mia{suffix}"] for k in ("retrain", "stop", "final"))
                lines.append(f"| {r['model']} | {r['forget_seed']} | {attack} | {ref:.3f} | {stop:.3f} "
                             f"({abs(stop - ref):.3f}) | {final:.3f} ({abs(final - ref):.3f}) |")
    return "\n".join(lines) + "\n"


def parser():
    p = grid_parser(__doc__)
    p.set_defaults(regimes="interaction")
    p.add_argument("--runs", default=None, help="folder of the runs and their model cache (default: a new "
                   "stop-target-runs-<time> under --out; an earlier run's folder reuses its trained models)")
    p.add_argument("--seeds", default=str(CALIBRATION_SEED), help="forget seeds, comma list (default: the calibration request)")
    p.add_argument("--tru", default="{}", help="JSON dict of TRU overrides (e.g. '{\"tru_check_adaptive\": true}')")
    p.add_argument("--tag", default="", help="suffix of the result files: stop_target<tag>.json/.md")
    p.add_argument("--audit", action="store_true", help="also the headline and the rank-only membership attacks' AUC "
                   "of the retrained model and of TRU at the stop and after the repair")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.regimes != "interaction":
        raise SystemExit("stop_target.py: --regimes must be interaction (the recall stop's group)")
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / f"stop-target-runs-{time.strftime('%Y%m%d-%H%M%S')}"
    files = args.config_files.split() if args.config_files else None
    rows = []
    for model in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            extra = {**json.loads(args.config), "forget_seed": seed, "audit_enabled": False}
            print(f"== {model} / forget seed {seed}", flush=True)
            rows.append(measure(model, args.dataset, runs, extra, files, json.loads(args.tru), audit=args.audit))
    report = {"environment": environment(), "dataset": args.dataset,
              "command": "python benchmarks/stop_target.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows}
    write_texts(out, f"stop_target{args.tag}", [("json", json.dumps(report, indent=1, default=float)),
                                                 ("md", markdown(report))])
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
