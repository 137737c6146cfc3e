"""One CSV of the scale figures: ``benchmarks/results/scale_summary.csv`` from the scale benchmark's
``scale*.json`` (``scale.py``, one request per cell), the one-request latency's ``latency*.json``
(``latency.py``) and the unlearning benchmark's ``unlearning.json`` run on a synthetic data set
(``unlearning.py --dataset synthetic-baby``: repeated requests, one retrain each) and TRU's own
seconds on cached models (``tru_seconds.py``: methods ``tru[<variant>]``, no retraining timed).

Columns ``backbone,size,request,method,seconds,speedup,forced,generator_affinity,requests,
forget_gap,forget_gap_ci,retain_gap,retain_gap_ci``:

* ``request``: ``5%`` (a share of the training interactions, the sweep's share-sized request),
  ``1000`` (any fixed count: the count itself), ``one-user``, ``one-item``, and ``user`` /
  ``item`` for the unlearning benchmark's regimes that delete whole users / items;
* ``seconds``: the median of the method's runs (retrain: its single run, or the median of the
  requests' retrains);
* ``speedup``: retrain's seconds / the method's, both from the same run of the same process
  (over repeated requests: the ratio of the medians); empty where that run has no retrain (the
  latency benchmark trains none);
* ``forced``: 1 where TRU's guarded stop was overridden (a variant with ``tru_stop_delta: 0``, or
  with ``tru_stop: epochs``: a fixed amount of work), else 0;
* ``generator_affinity``: the synthetic generator's affinity β of the data the row was measured
  on (3.0 since 2026-12-06, when MMGCN began to memorise on it). A report that does not record
  its generator counts as 1.5 (every report before the record was), unless
  ``--affinity STEM=BETA`` names it (two runs on the β = 3 data predate the record);
* ``requests``: how many requests the gaps are a mean over (1: ``scale.py``'s one request);
* ``forget_gap`` / ``retain_gap``: |forget Recall@20 - retrain's| and |test NDCG@20 - retrain's|
  (the mean over the requests), ``*_ci`` the half-width of its 95 % t-interval (empty for one
  request); empty for retrain itself and where the run has no retrain.

    python benchmarks/scale_summary.py benchmarks/results/scale_vbpr_final.json \\
        benchmarks/results/scale_mmgcn_final.json benchmarks/results/latency_clothing.json \\
        benchmarks/results/scale_vbpr_beta3.json --affinity scale_vbpr_beta3=3
"""
import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from recbole_tru.files import write_text  # noqa: E402

COLUMNS = ("backbone", "size", "request", "method", "seconds", "speedup", "forced", "generator_affinity",
           "requests", "forget_gap", "forget_gap_ci", "retain_gap", "retain_gap_ci")
BEFORE_RECORDS = 1.5          # the generator's affinity in every report that does not record it


def _request(spec):
    """The ``request`` label of a scale forget spec (an int count or a float share)."""
    if isinstance(spec, float) and spec < 1:
        return f"{spec * 100:g}%"
    return str(int(spec))


def _forced(overrides):
    """1 where a method's config overrides take TRU's stop decision away (``tru_stop_delta: 0``,
    or ``tru_stop: epochs``: every epoch runs), else 0."""
    overrides = overrides or {}
    return int(overrides.get("tru_stop_delta", None) == 0 or overrides.get("tru_stop") == "epochs")


def _interaction_label(share, interactions):
    """An interaction request's label: a whole percentage as scale.py's share requests are
    labelled (``5%``), else the pair count (``1000``)."""
    percent = share * 100
    return f"{round(percent)}%" if round(percent) >= 1 and abs(percent - round(percent)) < 0.01 else str(interactions)


def _affinity(generator, unrecorded=BEFORE_RECORDS):
    return float((generator or {}).get("affinity", unrecorded))


NO_GAPS = {"requests": 1, "forget_gap": "", "forget_gap_ci": "", "retain_gap": "", "retain_gap_ci": ""}


def _gap(value, digits=4):
    return "" if value is None else f"{value:.{digits}f}"


def scale_rows(report, unrecorded=BEFORE_RECORDS):
    rows = []
    for cell in report["unlearn"]:
        affinity = _affinity((report.get("data") or {}).get(cell["size"], {}).get("generator"), unrecorded)
        for forget in cell["forget"]:
            methods = forget["methods"]
            retrain = methods.get("retrain") or {}
            for name, entry in methods.items():
                if entry.get("seconds") is None:
                    continue
                judged = retrain.get("seconds") is not None and name != "retrain"
                speedup = f"{retrain['seconds'] / entry['seconds']:.1f}" if judged else ""
                gaps = dict(NO_GAPS)
                if judged and "forget_recall@20" in entry and "forget_recall@20" in retrain:
                    gaps["forget_gap"] = _gap(abs(entry["forget_recall@20"] - retrain["forget_recall@20"]))
                    gaps["retain_gap"] = _gap(abs(entry["test_ndcg@20"] - retrain["test_ndcg@20"]))
                rows.append({"backbone": cell["model"], "size": cell["size"], "request": _request(forget["forget"]),
                             "method": name, "seconds": f"{entry['seconds']:.3f}", "speedup": speedup,
                             "forced": _forced(entry.get("config")), "generator_affinity": affinity, **gaps})
    return rows


def _half_width(interval):
    if interval.get("ci_low") is None:
        return None
    return (interval["ci_high"] - interval["ci_low"]) / 2


def requests_rows(report, unrecorded=BEFORE_RECORDS):
    """Rows of an ``unlearning.py`` report: per cell and method the median seconds over the
    requests, retrain's median / the method's, and the gaps' means with their intervals."""
    rows = []
    size = report["dataset"].removeprefix("synthetic-")
    affinity = _affinity(report.get("data_generator"), unrecorded)
    for cell in report["cells"]:
        if not cell["requests"]:
            continue
        label = cell["regime"]                               # user, item: whole users / items deleted
        if label == "interaction":
            forget = cell["requests"][0]["forget"]
            label = _interaction_label(forget["share_of_train"], forget["interactions"])
        per_method = {}
        for record in cell["requests"]:
            for name, entry in record["methods"].items():
                if entry.get("seconds") is not None:
                    per_method.setdefault(name, []).append(entry["seconds"])
        retrain = statistics.median(per_method["retrain"]) if "retrain" in per_method else None
        for name, seconds in per_method.items():
            median = statistics.median(seconds)
            agg = cell["aggregate"].get(name, {})
            judged = name != "retrain" and retrain is not None
            gaps = {"requests": len(seconds)}
            for key in ("forget_gap", "retain_gap"):
                interval = agg.get(key) or {}
                gaps[key] = _gap(interval.get("mean")) if judged else ""
                gaps[f"{key}_ci"] = _gap(_half_width(interval)) if judged and interval else ""
            rows.append({"backbone": cell["model"], "size": size, "request": label, "method": name,
                         "seconds": f"{median:.3f}", "speedup": f"{retrain / median:.1f}" if judged else "",
                         "forced": 0, "generator_affinity": affinity, **gaps})
    return rows


def latency_rows(report, unrecorded=BEFORE_RECORDS):
    rows = []
    for record in report["backbones"]:
        size = record["dataset"].removeprefix("synthetic-")
        forced = _forced(report.get("config"))
        for kind, summary in record["summary"].items():
            rows.append({"backbone": record["model"], "size": size, "request": f"one-{kind}",
                         "method": report["method"], "seconds": f"{summary['median_seconds']:.3f}", "speedup": "",
                         "forced": forced, "generator_affinity": _affinity(report.get("generator"), unrecorded),
                         **NO_GAPS})
    return rows


def seconds_rows(report, unrecorded=BEFORE_RECORDS):
    """Rows of a ``tru_seconds.py`` report (TRU alone on cached models, no retraining timed): per
    target and variant the median of the requests' medians, as method ``tru[<variant>]``; the gaps
    where the run judged against retrained models, no speedup (nothing was retrained in it)."""
    rows = []
    by_target = {t["label"]: t for t in report["targets"]}
    for row in report["summary"]:
        target = by_target[row["dataset"]]
        requests = target["requests"]
        label = _interaction_label(target["forget_share"], int(statistics.median(r["interactions"] for r in requests)))
        gaps = {"requests": row["requests"]}
        for key in ("forget_gap", "retain_gap"):
            interval = row.get(key)
            gaps[key] = _gap(interval["mean"]) if interval else ""
            gaps[f"{key}_ci"] = _gap(_half_width(interval)) if interval else ""
        rows.append({"backbone": report["model"], "size": target["dataset"].removeprefix("synthetic-"),
                     "request": label, "method": f"tru[{row['variant']}]", "seconds": f"{row['median']:.3f}",
                     "speedup": "", "forced": _forced(report["variant_config"][row["variant"]]),
                     "generator_affinity": _affinity(requests[0].get("data_generator"), unrecorded), **gaps})
    return rows


def summary_rows(report, unrecorded=BEFORE_RECORDS):
    """The rows of one report of any of the four benchmarks (``unrecorded``: the generator's
    affinity where the report does not record it)."""
    if "targets" in report and "variant_config" in report:
        return seconds_rows(report, unrecorded)
    if "unlearn" in report:
        return scale_rows(report, unrecorded)
    if "backbones" in report and "kinds" in report:
        return latency_rows(report, unrecorded)
    if "cells" in report and "dataset" in report:
        return requests_rows(report, unrecorded)
    raise ValueError("not a scale.py, latency.py, unlearning.py or tru_seconds.py report (no 'unlearn', "
                     "'backbones' + 'kinds', 'cells' + 'dataset' nor 'targets' + 'variant_config')")


def _recorded(report):
    if "targets" in report:
        return any(r.get("data_generator") for t in report["targets"] for r in t["requests"])
    if "unlearn" in report:
        return any((d or {}).get("generator") for d in (report.get("data") or {}).values())
    return bool(report.get("generator") or report.get("data_generator"))


def parse_affinities(specs):
    """``["STEM=BETA", ...]`` -> ``{stem: beta}`` (an error names the malformed one)."""
    out = {}
    for spec in specs:
        stem, _, beta = spec.partition("=")
        try:
            out[stem] = float(beta)
        except ValueError:
            raise SystemExit(f"--affinity {spec!r}: expected REPORT_STEM=BETA, e.g. scale_vbpr_beta3=3") from None
    return out


def csv_text(rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="scale*.json, latency*.json, unlearning.json and tru_seconds*.json files")
    parser.add_argument("--affinity", action="append", default=[], metavar="STEM=BETA",
                        help="the generator's affinity of a report (by file stem) that does not record it")
    parser.add_argument("--out", default=str(HERE / "results" / "scale_summary.csv"))
    args = parser.parse_args(argv)
    affinities = parse_affinities(args.affinity)
    unknown = set(affinities) - {Path(p).stem for p in args.reports}
    if unknown:
        raise SystemExit(f"--affinity names {sorted(unknown)}, which are not among the reports")
    rows = []
    for path in args.reports:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            if Path(path).stem in affinities and _recorded(report):
                raise SystemExit(f"{path}: records its generator; --affinity is for reports that do not")
            rows += summary_rows(report, affinities.get(Path(path).stem, BEFORE_RECORDS))
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"{path}: cannot read it as a scale.py, latency.py, unlearning.py or tru_seconds.py "
                             f"report ({error!r})")
    text = csv_text(rows)
    write_text(args.out, text, replace=True)
    print(text, end="")
    return rows


if __name__ == "__main__":
    main()
