"""Does a rerun of ``benchmarks/unlearning.py`` reproduce the first run?

Per cell, method and metric: the two means, their difference, whether the rerun's mean lies in
the first run's 95 % interval; per request: whether the quality figures are bit-identical.

    python benchmarks/compare_runs.py benchmarks/results/unlearning.json RERUN/unlearning.json
"""
import json
import sys

a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
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
