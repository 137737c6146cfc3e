"""Several request streams, one figure: the drift of ``stream.py``'s chain as a mean over chains.

One chain of 20 requests per backbone is one draw (its gaps at request 1 and 20 are each against
one retraining). This script reads the reports of chains run with distinct ``--seed`` (other
requests: other users, pairs and items, in the same cycle of kinds) and gives, per backbone and
judged point, the mean of each gap to the cumulative retrain over the chains with its 95 %
Student-t interval (:func:`recbole_tru.stats.t_interval`), the unedited original's beside it, and
the drift test of the request-stream goal ("after 20 requests the gaps stay within 2x of those
after the first"), paired within each chain: ``d = gap(last) - 2 * gap(first)``, met on the mean
when ``mean(d) <= 0``, clearly met when its interval lies below 0, clearly missed above. The
unlearning latency is pooled over the chains' requests (median, p95).

A single retrain is a noisy judge (two retrainings of one deletion differ by up to 0.007 in test
NDCG@20 on ml-100k-mm). With ``--noise``, the reports of ``stream_noise.py`` on the chains (extra
retrainings with other model seeds at the first and last judged requests; matched to a chain by
its command) give each chain's forget and retain gap averaged over all its retrainings, and the
drift test is repeated on those averages.

    python benchmarks/stream.py --seed 1 --work /tmp/s1 --name stream_seed1
    python benchmarks/stream.py --seed 2 --work /tmp/s2 --name stream_seed2
    python benchmarks/stream_chains.py benchmarks/results/stream.json \\
        benchmarks/results/stream_seed1.json benchmarks/results/stream_seed2.json \\
        --noise benchmarks/results/stream_noise.json benchmarks/results/stream_noise_seed1.json \\
        benchmarks/results/stream_noise_seed2.json

Writes ``<out>/<name>.json``, ``.md`` and ``.png`` (default ``benchmarks/results/stream_chains``).
Reads JSON only: it trains and times nothing.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from recbole_tru.files import save_png, write_texts  # noqa: E402
from recbole_tru.stats import t_interval  # noqa: E402
from unlearning_report import pm  # noqa: E402

GAPS = ("forget_gap", "retain_gap", "mia_distance")
LABELS = {"forget_gap": "forget gap", "retain_gap": "retain gap", "mia_distance": "MIA distance"}


def load_chains(paths):
    """The stream reports at ``paths``; an error names the file that does not fit the others
    (another method, request count or judged points, or a repeated seed)."""
    reports = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: not a readable stream.py report ({err})")
        if "backbones" not in report or "seed" not in report:
            raise SystemExit(f"{path}: not a stream.py report (no 'backbones' / 'seed')")
        report["path"] = str(path)
        reports.append(report)
    first = reports[0]
    seeds = [r["seed"] for r in reports]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"chains must be distinct draws; seeds {seeds} repeat ({', '.join(map(str, paths))})")
    for report in reports[1:]:
        for key in ("method", "requests", "judge_every"):
            if report.get(key) != first.get(key):
                raise SystemExit(f"{report['path']}: {key} {report.get(key)!r} differs from "
                                 f"{first['path']}'s {first.get(key)!r}")
    return reports


def drift_test(firsts, lasts):
    """The paired test of "the last gap stays within 2x of the first" over chains."""
    d = t_interval([b - 2 * a for a, b in zip(firsts, lasts)])
    verdict = ("clearly met" if d["ci_high"] is not None and d["ci_high"] < 0 else
               "clearly missed" if d["ci_low"] is not None and d["ci_low"] > 0 else
               "met on the mean" if d["mean"] <= 0 else "missed on the mean")
    return {"first": t_interval(firsts), "last": t_interval(lasts), "last_minus_twice_first": d,
            "chains_within_2x": int(sum(b <= 2 * a for a, b in zip(firsts, lasts))), "verdict": verdict}


NOISE_GAPS = {"forget_gap": "forget", "retain_gap": "ndcg"}


def seed_averaged(summary, reports, noise_paths):
    """Each chain's forget and retain gap at its first and last judged request averaged over its
    retrainings (the stream's own and ``stream_noise.py``'s), and the drift test on those."""
    noises = {}
    for path in noise_paths:
        try:
            noise = json.loads(Path(path).read_text())
            noises[noise["stream_command"]] = (str(path), noise)
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise SystemExit(f"{path}: not a stream_noise.py report ({err!r})")
    for report in reports:
        if report["command"] not in noises:
            raise SystemExit(f"{report['path']}: no --noise report of this chain (its command: {report['command']})")
    for b in summary["backbones"]:
        per_chain = []
        for report in reports:
            path, noise = noises[report["command"]]
            record = next(x for x in report["backbones"] if x["model"] == b["model"])
            ends = (record["judged"][0]["request"], record["judged"][-1]["request"])
            rows = {r["request"]: r for r in noise["rows"] if r["model"] == b["model"]}
            if any(e not in rows for e in ends):
                raise SystemExit(f"{path}: {b['model']} needs retrainings at requests {ends} (--points)")
            per_chain.append({key: [float(np.mean(rows[e]["chain_gaps"][field])) for e in ends]
                              for key, field in NOISE_GAPS.items()}
                             | {"retrainings": len(rows[ends[0]]["chain_gaps"]["ndcg"])})
        b["seed_averaged"] = {
            "retrainings_per_point": [c["retrainings"] for c in per_chain],
            "drift": {key: drift_test([c[key][0] for c in per_chain], [c[key][1] for c in per_chain])
                      for key in NOISE_GAPS}}
    summary["noise_reports"] = [noises[r["command"]][0] for r in reports]


def combine(reports):
    """Per backbone: per judged point the t-interval of each gap over the chains (and of the
    original's), the paired drift test, the pooled latency."""
    models = [b["model"] for b in reports[0]["backbones"]]
    out = {"chains": [{"path": r["path"], "seed": r["seed"], "command": r["command"]} for r in reports],
           "method": reports[0]["method"], "requests": reports[0]["requests"], "backbones": []}
    for model in models:
        records = []
        for report in reports:
            found = [b for b in report["backbones"] if b["model"] == model]
            if not found:
                raise SystemExit(f"{report['path']}: no {model} chain")
            records.append(found[0])
        points = [p["request"] for p in records[0]["judged"]]
        for record, report in zip(records, reports):
            if [p["request"] for p in record["judged"]] != points:
                raise SystemExit(f"{report['path']}: {model}'s judged requests differ from {points}")
        judged = []
        for i, request in enumerate(points):
            row = {"request": request,
                   "deleted": t_interval([r["judged"][i]["deleted_interactions"] for r in records])}
            for key in GAPS:
                row[key] = t_interval([r["judged"][i][key] for r in records])
                row[f"original_{key}"] = t_interval([r["judged"][i]["original_gaps"][key] for r in records])
            judged.append(row)
        drift = {key: drift_test([r["judged"][0][key] for r in records], [r["judged"][-1][key] for r in records])
                 for key in GAPS}
        seconds = np.concatenate([[q["seconds"] for q in r["requests"]] for r in records])
        whole = np.concatenate([[q["request_seconds"] for q in r["requests"]] for r in records])
        out["backbones"].append({
            "model": model, "chains": len(records), "judged": judged, "drift": drift,
            "latency": {"requests": int(len(seconds)), "median_seconds": float(np.median(seconds)),
                        "p95_seconds": float(np.percentile(seconds, 95)),
                        "median_request_seconds": float(np.median(whole)),
                        "chain_medians": [float(np.median([q["seconds"] for q in r["requests"]])) for r in records]}})
    return out


def _drift_row(b, key, drift):
    d = drift["last_minus_twice_first"]
    interval = f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d["ci_low"] is not None \
        else f"{d['mean']:+.4f}"
    return (f"| {b['model']} | {LABELS[key]} | {pm(drift['first'])} | {pm(drift['last'])} "
            f"| {interval} | {drift['chains_within_2x']}/{b['chains']} | {drift['verdict']} |")


def markdown(summary):
    seeds = ", ".join(str(c["seed"]) for c in summary["chains"])
    lines = [f"{len(summary['chains'])} chains of {summary['requests']} requests per backbone (`stream.py --seed` "
             f"{seeds}), method `{summary['method']}`; each gap is against that chain's retrain on its cumulative "
             f"deletion; mean ± half-width of the 95 % t-interval over the chains.",
             "", "<!-- table-1 -->",
             "| backbone | gap | after request 1 | after the last | last − 2 × first [95 % CI] | chains within 2x | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for b in summary["backbones"]:
        for key in GAPS:
            lines.append(_drift_row(b, key, b["drift"][key]))
    lines += ["", "<!-- table-2 -->",
              "| backbone | request | deleted so far | forget gap | retain gap | MIA distance "
              "| unedited original: forget gap | retain gap | MIA distance |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in summary["backbones"]:
        for p in b["judged"]:
            lines.append(f"| {b['model']} | {p['request']} | {p['deleted']['mean']:.0f} | {pm(p['forget_gap'])} "
                         f"| {pm(p['retain_gap'])} | {pm(p['mia_distance'], 3)} | {pm(p['original_forget_gap'])} "
                         f"| {pm(p['original_retain_gap'])} | {pm(p['original_mia_distance'], 3)} |")
    lines += ["", "<!-- table-3 -->",
              "| backbone | requests | unlearning s: median | p95 | per-chain medians | whole request s: median |",
              "| --- | --- | --- | --- | --- | --- |"]
    for b in summary["backbones"]:
        lat = b["latency"]
        lines.append(f"| {b['model']} | {lat['requests']} | {lat['median_seconds']:.2f} | {lat['p95_seconds']:.2f} "
                     f"| {' / '.join(f'{m:.2f}' for m in lat['chain_medians'])} | {lat['median_request_seconds']:.1f} |")
    if any("seed_averaged" in b for b in summary["backbones"]):
        lines += ["", "Averaged over each chain's retrainings (the stream's own and `stream_noise.py`'s, "
                  "per chain " + " / ".join(str(n) for n in summary["backbones"][0]["seed_averaged"]
                                            ["retrainings_per_point"]) + "):", "", "<!-- table-4 -->",
                  "| backbone | gap | after request 1 | after the last | last − 2 × first [95 % CI] "
                  "| chains within 2x | verdict |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for b in summary["backbones"]:
            for key, drift in b["seed_averaged"]["drift"].items():
                lines.append(_drift_row(b, key, drift))
    return "\n".join(lines) + "\n"


def plot(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for b in summary["backbones"]:
        xs = [p["request"] for p in b["judged"]]
        for ax, key in zip(axes, GAPS):
            mean = np.array([p[key]["mean"] for p in b["judged"]])
            low = np.array([p[key]["ci_low"] if p[key]["ci_low"] is not None else np.nan for p in b["judged"]])
            high = np.array([p[key]["ci_high"] if p[key]["ci_high"] is not None else np.nan for p in b["judged"]])
            line, = ax.plot(xs, mean, marker="o", label=f"{b['model']} chain (mean of {b['chains']})")
            ax.fill_between(xs, np.maximum(low, 0), high, color=line.get_color(), alpha=0.2)
            ax.plot(xs, [2 * mean[0]] * len(xs), linestyle=":", color=line.get_color(),
                    label=f"{b['model']} 2x request 1")
            ax.set_title(f"{LABELS[key]} to the cumulative retrain")
            ax.set_xlabel("requests so far")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="stream.py JSON reports of chains with distinct --seed")
    parser.add_argument("--noise", nargs="*", default=[], help="stream_noise.py reports, one per chain")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="stream_chains")
    args = parser.parse_args(argv)
    if len(args.reports) < 2:
        parser.error("give at least two chains (a mean over one chain has no interval)")
    reports = load_chains(args.reports)
    summary = combine(reports)
    if args.noise:
        seed_averaged(summary, reports, args.noise)
    summary["command"] = "python benchmarks/stream_chains.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    write_texts(out, args.name, (("json", json.dumps(summary, indent=2)), ("md", markdown(summary))))
    plot(summary, out / f"{args.name}.png")
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
