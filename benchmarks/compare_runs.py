"""Compare two runs of ``benchmarks/unlearning.py`` on the same originals and forget seeds.

Default: does the rerun reproduce the first run? Per cell, method and metric: the two means,
their difference, whether the rerun's mean lies in the first run's 95 % interval; per request:
whether the quality figures are bit-identical.

``--paired METHOD``: one method measured again after it changed (new defaults, say): per cell and
metric, the paired difference NEW − OLD over the requests both runs have, with its 95 %
t-interval and the number of requests where NEW is better (smaller gap, distance or time; larger
NDCG ratio), as a markdown table (``--out`` writes it whole).

    python benchmarks/compare_runs.py benchmarks/results/unlearning.json RERUN/unlearning.json
    python benchmarks/compare_runs.py OLD/unlearning.json NEW/unlearning.json [NEW2/unlearning.json] --paired tru --out diff.md
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from recbole_tru import stats  # noqa: E402
from recbole_tru.files import write_text  # noqa: E402
from unlearning_report import fmt  # noqa: E402

# per-request figures of a method, and whether larger is better
PAIRED_METRICS = (("forget_gap", False), ("retain_gap", False), ("retain_ratio", True), ("mia_distance", False),
                  ("mia_lr_distance", False), ("delta_distance", False), ("drop_distance", False),
                  ("seconds", False))


def reproduction(a, b):
    """Print whether run ``b`` reproduces run ``a`` (the default mode)."""
    cells_a = {(c['model'], c['regime']): c for c in a['cells']}
    rows, identical, total = [], 0, 0
    for cb in b['cells']:
        ca = cells_a[(cb['model'], cb['regime'])]
        for method, metrics in cb['aggregate'].items():
            for metric, ci in metrics.items():
                if metric == 'attacks' or method not in ca['aggregate'] or metric not in ca['aggregate'][method]:
                    continue
                m = ca['aggregate'][method][metric]
                if m['mean'] is None or ci['mean'] is None:
                    continue
                d = abs(ci['mean'] - m['mean'])
                inside = m['ci_low'] is None or (m['ci_low'] - 1e-12 <= ci['mean'] <= m['ci_high'] + 1e-12)
                rows.append((cb['model'], cb['regime'], method, metric, m['mean'], ci['mean'], d, inside))
        # per-request bit identity of quality figures
        for ra, rb in zip(ca['requests'], cb['requests']):
            assert ra['forget_seed'] == rb['forget_seed']
            for method in rb['methods']:
                if method not in ra['methods']:       # a method only the rerun has
                    continue
                for metric in ('forget_gap', 'retain_gap', 'mia_auc', 'topk_overlap'):
                    if metric in rb['methods'][method]:
                        total += 1
                        identical += rb['methods'][method][metric] == ra['methods'][method].get(metric)
    quality = [r for r in rows if r[3] not in ('seconds', 'speedup')]
    timing = [r for r in rows if r[3] in ('seconds', 'speedup')]
    print(f"quality means compared: {len(quality)}, outside the first run's CI: {sum(not r[7] for r in quality)}, "
          f"largest |difference|: {max(r[6] for r in quality):.6f}")
    print(f"per-request quality values bit-identical: {identical}/{total}")
    print(f"timing means compared: {len(timing)}, outside CI: {sum(not r[7] for r in timing)}")
    for r in sorted(timing, key=lambda r: -r[6])[:6]:
        print("  ", r)
    for r in sorted(quality, key=lambda r: -r[6])[:5]:
        print("  ", r)


def paired(old, new, method):
    """Rows ``(model, regime, metric, n, old mean, new mean, t_interval of new − old, new better)``
    over the requests (same original and forget seed) both runs measured ``method`` on."""
    requests = {(c['model'], c['regime'], r['original'], r['forget_seed']): r['methods'].get(method)
                for c in old['cells'] for r in c['requests']}
    rows = []
    for cell in new['cells']:
        pairs = []
        for r in cell['requests']:
            before, after = requests.get((cell['model'], cell['regime'], r['original'], r['forget_seed'])), r['methods'].get(method)
            if before is not None and after is not None:
                pairs.append((before, after))
        for metric, larger_is_better in PAIRED_METRICS:
            values = [(b[metric], a[metric]) for b, a in pairs if b.get(metric) is not None and a.get(metric) is not None]
            if not values:
                continue
            old, new = zip(*values)
            p = stats.paired(new, old, lower_is_better=not larger_is_better)     # diff = new − old
            rows.append((cell['model'], cell['regime'], metric, p["n"], sum(old) / len(old), sum(new) / len(new),
                         p["diff"], p["wins"]))
    return rows


def paired_markdown(rows, method):
    lines = [f"`{method}`, new run − old run, paired over the same requests: mean difference [95 % t-interval]; "
             "*clear* when the interval excludes 0; new better = requests with a smaller gap, distance or time "
             "(a larger NDCG ratio).", "",
             "| backbone | regime | metric | requests | old mean | new mean | new − old [95 % CI] | new better | clear |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, regime, metric, n, before, after, ci, better in rows:
        low, high = ci['ci_low'], ci['ci_high']
        clear = low is not None and (low > 0 or high < 0)
        interval = f"{ci['mean']:+.4f} [{low:+.4f}, {high:+.4f}]" if low is not None else f"{ci['mean']:+.4f}"
        lines.append(f"| {model} | {regime} | {metric} | {n} | {fmt(before)} | {fmt(after)} | {interval} | "
                     f"{better}/{n} | {'yes' if clear else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="the first (old) run's unlearning.json")
    parser.add_argument("second", nargs="+", help="the rerun's (new) unlearning.json; with --paired, one or more "
                        "(e.g. one run per backbone)")
    parser.add_argument("--paired", default=None, metavar="METHOD", help="paired new − old table of one method")
    parser.add_argument("--out", default=None, help="with --paired: write the table to this markdown file")
    args = parser.parse_args(argv)
    a, *b = (json.loads(Path(p).read_text()) for p in (args.first, *args.second))
    if args.paired is None:
        if len(b) != 1:
            parser.error("without --paired, compare exactly two runs")
        reproduction(a, b[0])
        return
    text = paired_markdown([row for new in b for row in paired(a, new, args.paired)], args.paired)
    if args.out:
        write_text(args.out, text, replace=True)
    print(text)


if __name__ == "__main__":
    main()
