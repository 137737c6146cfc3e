"""One CSV of the scale figures: ``benchmarks/results/scale_summary.csv`` from the scale benchmark's
``scale*.json`` (``scale.py``) and the one-request latency's ``latency*.json`` (``latency.py``).

Columns ``backbone,size,request,method,seconds,speedup,forced,generator_affinity``:

* ``request``: ``5%`` (a share of the training interactions, the sweep's share-sized request),
  ``1000`` (any fixed count: the count itself), ``one-user``, ``one-item``;
* ``seconds``: the median of the method's runs (retrain: its single run);
* ``speedup``: retrain's seconds / the method's, both from the same run of the same process;
  empty where that run has no retrain (the latency benchmark trains none);
* ``forced``: 1 where TRU's guarded stop was overridden (a variant with ``tru_stop_delta: 0``),
  else 0;
* ``generator_affinity``: the synthetic generator's affinity β of the data the row was measured
  on (3.0 since 2026-12-06, when MMGCN began to memorise on it; reports written before the
  generator was recorded were all on 1.5).

    python benchmarks/scale_summary.py benchmarks/results/scale_vbpr_final.json \\
        benchmarks/results/scale_mmgcn_final.json benchmarks/results/latency_clothing.json
"""
import argparse
import csv
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from recbole_tru.files import write_text  # noqa: E402

COLUMNS = ("backbone", "size", "request", "method", "seconds", "speedup", "forced", "generator_affinity")
BEFORE_RECORDS = 1.5          # the generator's affinity in every report that does not record it


def _request(spec):
    """The ``request`` label of a scale forget spec (an int count or a float share)."""
    if isinstance(spec, float) and spec < 1:
        return f"{spec * 100:g}%"
    return str(int(spec))


def _forced(entry):
    return int((entry.get("config") or {}).get("tru_stop_delta", None) == 0)


def _affinity(generator):
    return float((generator or {}).get("affinity", BEFORE_RECORDS))


def scale_rows(report):
    rows = []
    for cell in report["unlearn"]:
        affinity = _affinity((report.get("data") or {}).get(cell["size"], {}).get("generator"))
        for forget in cell["forget"]:
            methods = forget["methods"]
            retrain = (methods.get("retrain") or {}).get("seconds")
            for name, entry in methods.items():
                if entry.get("seconds") is None:
                    continue
                speedup = "" if retrain is None or name == "retrain" else f"{retrain / entry['seconds']:.1f}"
                rows.append({"backbone": cell["model"], "size": cell["size"], "request": _request(forget["forget"]),
                             "method": name, "seconds": f"{entry['seconds']:.3f}", "speedup": speedup,
                             "forced": _forced(entry), "generator_affinity": affinity})
    return rows


def latency_rows(report):
    rows = []
    for record in report["backbones"]:
        size = record["dataset"].removeprefix("synthetic-")
        forced = int((report.get("config") or {}).get("tru_stop_delta", None) == 0)
        for kind, summary in record["summary"].items():
            rows.append({"backbone": record["model"], "size": size, "request": f"one-{kind}",
                         "method": report["method"], "seconds": f"{summary['median_seconds']:.3f}", "speedup": "",
                         "forced": forced, "generator_affinity": _affinity(report.get("generator"))})
    return rows


def summary_rows(reports):
    rows = []
    for report in reports:
        if "unlearn" in report:
            rows += scale_rows(report)
        elif "backbones" in report and "kinds" in report:
            rows += latency_rows(report)
        else:
            raise ValueError("not a scale.py or latency.py report (no 'unlearn' nor 'backbones' + 'kinds')")
    return rows


def csv_text(rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="scale*.json and latency*.json files")
    parser.add_argument("--out", default=str(HERE / "results" / "scale_summary.csv"))
    args = parser.parse_args(argv)
    rows = []
    for path in args.reports:
        try:
            rows += summary_rows([json.loads(Path(path).read_text(encoding="utf-8"))])
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"{path}: cannot read it as a scale.py or latency.py report ({error!r})")
    text = csv_text(rows)
    write_text(args.out, text, replace=True)
    print(text, end="")
    return rows


if __name__ == "__main__":
    main()
