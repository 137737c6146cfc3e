"""The report of ``benchmarks/unlearning.py``, from its per-request records: aggregates (mean and
95 % t-interval over the requests), paired comparisons of TRU with every baseline and of the
ablation variants with TRU, the variance study, and the files -- ``unlearning.json``,
``unlearning_summary.csv``, ``unlearning.md`` and ``unlearning_tradeoff.png``."""
import csv
import json
from pathlib import Path

import numpy as np

from recbole_tru import stats
from recbole_tru.files import atomic_write, save_png, write_texts

from unlearning_jobs import ABLATIONS, CURVE_METHODS, FORGET_SEEDS

# metric -> lower is better?
METRICS = {"forget_gap": True, "retain_gap": True, "retain_ratio": None, "mia_distance": True,
           "mia_auc": None, "mia_user_distance": True, "topk_overlap": False, "seconds": True,
           "speedup": False, "retain_ndcg": None, "forget_recall": None, "mia_lr_distance": True,
           "delta_distance": True, "drop_distance": True, "mia_lr_tpr": None}
PAIRED_METRICS = ("forget_gap", "retain_gap", "mia_distance", "topk_overlap", "seconds", "mia_lr_distance",
                  "delta_distance", "drop_distance")
VARIANCE_METRICS = ("forget_gap", "retain_gap", "mia_distance", "retain_ndcg")
VARIANCE_METHODS = ("original", "retrain", "finetune", "reverse", "tru")


# ---------------------------------------------------------------------------------------------
# aggregation

def _values(records, method, metric, part="methods"):
    return [rec[part][method].get(metric) for rec in records if method in rec.get(part, {})]


def aggregate(records):
    """Per method (and ablation variant): ``{metric: t_interval}`` over the records' requests."""
    out = {}
    methods = list(dict.fromkeys(m for rec in records for m in rec["methods"]))
    for method in methods:
        out[method] = {metric: stats.t_interval(_values(records, method, metric)) for metric in METRICS}
        out[method] = {k: v for k, v in out[method].items() if v["n"]}
        attacks = sorted({a for rec in records for a in rec["methods"][method].get("attacks", {})})
        if attacks:
            out[method]["attacks"] = {a: stats.t_interval([rec["methods"][method].get("attacks", {}).get(a)
                                                           for rec in records]) for a in attacks}
    for name in ABLATIONS:
        if name != "tru" and any(name in rec.get("ablation", {}) for rec in records):
            out[name] = {metric: stats.t_interval(_values(records, name, metric, "ablation"))
                         for metric in ("forget_gap", "retain_gap", "retain_ratio", "topk_overlap", "seconds",
                                        "speedup")}
    return out


def compare(records):
    """TRU against every other method, request by request; ablation variants against full TRU
    (on the ablation's own TRU run, so both sides share the cell's data and reference)."""
    out = {}
    for method in dict.fromkeys(m for rec in records for m in rec["methods"]):
        if method in ("tru", "retrain"):
            continue
        out[method] = {metric: stats.paired(_values(records, "tru", metric), _values(records, method, metric),
                                            lower_is_better=METRICS[metric] is not False)
                       for metric in PAIRED_METRICS if METRICS[metric] is not None}
    ablation = {}
    for name in ABLATIONS:
        if name == "tru" or not any(name in rec.get("ablation", {}) for rec in records):
            continue
        # variant - TRU: a positive gap difference means the part helps (removing it widens the gap)
        ablation[name] = {metric: stats.paired(_values(records, name, metric, "ablation"),
                                               _values(records, "tru", metric, "ablation"),
                                               lower_is_better=METRICS[metric])
                          for metric in ("forget_gap", "retain_gap")}
    return out, ablation


def variance(records):
    """Original-model vs request variance per method and metric (records of >= 2 training seeds)."""
    seeds = sorted({rec["original"] for rec in records})   # originals 0..K-1
    requests = sorted({rec["forget_seed"] for rec in records})
    if len(seeds) < 2 or len(requests) < 2:
        return None
    by_key = {(rec["original"], rec["forget_seed"]): rec for rec in records}
    out = {}
    for method in VARIANCE_METHODS:
        for metric in VARIANCE_METRICS:
            table = [[by_key.get((s, r), {}).get("methods", {}).get(method, {}).get(metric) for r in requests]
                     for s in seeds]
            if any(v is None for row in table for v in row):
                continue
            comp = stats.variance_components(table)
            out.setdefault(method, {})[metric] = {**comp, "mean": float(np.mean(table))}
    return {"originals": seeds, "forget_seeds": requests, "components": out}


def summarise(report):
    """Aggregates, paired comparisons and variance per cell (from the per-request records)."""
    for cell in report["cells"]:
        main = [rec for rec in cell["requests"] if rec["original"] == 0]
        cell["aggregate"] = aggregate(main)
        cell["paired"], cell["ablation_paired"] = compare(main)
        cell["variance"] = variance(cell["requests"])
    return report


def summary_rows(report):
    for cell in report["cells"]:
        for method, metrics in cell["aggregate"].items():
            for metric, ci in metrics.items():
                if metric == "attacks":
                    continue
                yield {"backbone": cell["model"], "regime": cell["regime"], "method": method, "metric": metric,
                       "n": ci["n"], "mean": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}


def write_summary_csv(report, path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["backbone", "regime", "method", "metric", "n", "mean", "ci_low",
                                               "ci_high"])
        writer.writeheader()
        for row in summary_rows(report):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# ---------------------------------------------------------------------------------------------
# tables and plot

def publish(out, name, report, markdown, plot=None):
    """A benchmark's report written whole: ``<out>/<name>.json`` and ``.md`` (``markdown(report)``),
    the figure ``<name>.png`` when ``plot(report, path)`` is given; the markdown printed; the
    report returned."""
    write_texts(out, name, [("json", json.dumps(report, indent=1) + "\n"), ("md", markdown(report))])
    if plot is not None:
        plot(report, Path(out) / f"{name}.png")
    print(markdown(report))
    return report


def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def half_width(ci):
    """Half the width of a t_interval (0 when it is undefined, n = 1)."""
    return 0.0 if ci["ci_high"] is None else (ci["ci_high"] - ci["ci_low"]) / 2


def pm(ci, digits=4):
    """``mean ± half-width`` of a t_interval (the mean alone when n = 1)."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    if ci.get("ci_high") is None:
        return fmt(ci["mean"], digits)
    return f"{ci['mean']:.{digits}f} ± {half_width(ci):.{digits}f}"


def diff_ci(p, digits=4):
    d = p["diff"]
    if d["mean"] is None:
        return "n/a"
    if d["ci_low"] is None:
        return f"{d['mean']:+.{digits}f}"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def wins(p):
    return f"{p['wins']}/{p['n']}" + (f" ({p['ties']} tied)" if p["ties"] else "")


def headline(report):
    """The README's table: TRU, reverse and finetune per cell (mean ± CI) and TRU's wins."""
    n = report["requests"]
    lines = [f"Mean ± 95 % t-interval half-width over {n} requests per cell; wins = requests (of {n}) where TRU's "
             "gap is strictly smaller (forget / retain / MIA distance).", "",
             "| backbone | regime | forget gap: TRU | reverse | finetune | retain gap: TRU | reverse | finetune | "
             "TRU wins vs reverse | TRU wins vs finetune | TRU x faster than retrain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        a, p = cell["aggregate"], cell["paired"]

        def w(base):
            if base not in p:
                return "n/a"
            return " / ".join(str(p[base][m]["wins"]) if m in p[base] and p[base][m]["n"] else "-"
                              for m in ("forget_gap", "retain_gap", "mia_distance"))

        g = lambda m, metric: pm(a.get(m, {}).get(metric))  # noqa: E731
        lines.append(f"| {cell['model']} | {cell['regime']} | {g('tru', 'forget_gap')} | {g('reverse', 'forget_gap')} | "
                     f"{g('finetune', 'forget_gap')} | {g('tru', 'retain_gap')} | {g('reverse', 'retain_gap')} | "
                     f"{g('finetune', 'retain_gap')} | {w('reverse')} | {w('finetune')} | "
                     f"{pm(a.get('tru', {}).get('speedup'), 1)} |")
    return lines


def markdown(report):
    n = report["requests"]
    seeds = ", ".join(map(str, report.get("forget_seeds") or FORGET_SEEDS[:n]))
    lines = headline(report) + ["", f"Every method, mean ± 95 % t-interval half-width over {n} requests per cell "
                                f"(forget seeds {seeds}), one original per backbone.", "",
             "| backbone | regime | method | forget gap | retain gap | test NDCG@20 / retrain's | MIA distance | "
             "top-20 overlap | seconds | x faster than retrain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        for method, a in cell["aggregate"].items():
            if method.startswith("tru-"):
                continue
            lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {pm(a.get('forget_gap'))} | "
                         f"{pm(a.get('retain_gap'))} | {pm(a.get('retain_ratio'), 3)} | {pm(a.get('mia_distance'), 3)} | "
                         f"{pm(a.get('topk_overlap'), 3)} | {pm(a.get('seconds'), 2) if method != 'original' else 'n/a'} | "
                         f"{pm(a.get('speedup'), 1) if method not in ('original', 'retrain') else 'n/a'} |")
    lines += ["", "TRU against each baseline, request by request: TRU's wins out of the requests (smaller gap or "
              "MIA distance), the mean paired difference TRU − baseline with its 95 % t-interval, and the exact "
              "two-sided sign test (with 5 requests its smallest possible p is 0.0625).", "",
              "| backbone | regime | baseline | forget gap: wins, diff [CI], sign p | retain gap: wins, diff [CI], sign p | "
              "MIA distance: wins, diff [CI], sign p |", "| --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        for base, p in cell["paired"].items():
            parts = [f"{wins(p[m])}, {diff_ci(p[m])}, p={p[m]['sign_p']:.3f}" if m in p and p[m]["n"] else "n/a"
                     for m in ("forget_gap", "retain_gap", "mia_distance")]
            lines.append(f"| {cell['model']} | {cell['regime']} | {base} | " + " | ".join(parts) + " |")
    lines += [""] + audit_markdown(report)
    for cell in report["cells"]:
        if not cell.get("ablation_paired"):
            continue
        a = cell["aggregate"]
        lines += ["", f"Ablation, {cell['model']}, {cell['regime']} regime: TRU without one part, on the same "
                  f"{n} requests. Δ = variant − full TRU (paired, 95 % t-interval); a positive Δ means the part "
                  "narrows that gap (it helps).", "",
                  "| variant | forget gap | retain gap | Δ forget gap [CI] | Δ retain gap [CI] | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        main = [rec for rec in cell["requests"] if rec["original"] == 0]
        tru = {m: stats.t_interval(_values(main, "tru", m, "ablation")) for m in ("forget_gap", "retain_gap")}
        lines.append(f"| {ABLATIONS['tru'][0]} | {pm(tru['forget_gap'])} | {pm(tru['retain_gap'])} | | | |")
        for name, p in cell["ablation_paired"].items():
            lines.append(f"| {ABLATIONS[name][0]} | {pm(a[name]['forget_gap'])} | {pm(a[name]['retain_gap'])} | "
                         f"{diff_ci(p['forget_gap'])} | {diff_ci(p['retain_gap'])} | {pm(a[name]['seconds'], 2)} |")
    lines += variance_markdown(report)
    lines += likelihood_markdown(report)
    return "\n".join(lines) + "\n"


def likelihood_markdown(report):
    """The likelihood-ratio attack (``lira``, where the run had ``audit_lr``) and the two attacks
    that hold the original model (``delta``, fitted; ``drop``, unfitted): AUC, distance to
    retrain's, TPR at 1 % FPR, and TRU against each baseline."""
    if not any("mia_lr_distance" in a for cell in report["cells"] for a in cell["aggregate"].values()):
        return []
    metrics = ("mia_lr_distance", "delta_distance", "drop_distance")
    lines = ["", "Likelihood-ratio attack with reference models (`lira`), the fitted score-change attack (`delta`) "
             "and the unfitted score-fall attack (`drop`): AUC of the forget pairs vs held-out pairs and its distance "
             "to retrain's (per request), the true-positive rate at 1 % false positives, mean ± 95 % CI; TRU vs the "
             "method: wins, paired difference TRU − method [95 % CI] of the distance.", "",
             "| backbone | regime | method | lira AUC | lira distance | lira TPR at 1 % FPR | delta distance "
             "| drop distance | TRU vs method: lira distance | TRU vs method: delta distance "
             "| TRU vs method: drop distance |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in report["cells"]:
        for method, a in cell["aggregate"].items():
            if "lira" not in a.get("attacks", {}) or method.startswith("tru-"):
                continue
            p = cell["paired"].get(method, {})
            vs = [f"{wins(p[m])}, {diff_ci(p[m])}" if p.get(m, {}).get("n") else "" for m in metrics]
            own = ["" if method == "retrain" else pm(a.get(m), 3) for m in metrics]
            lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {pm(a.get('attacks', {}).get('lira'), 3)} | "
                         f"{own[0]} | {pm(a.get('mia_lr_tpr'), 3)} | {own[1]} | {own[2]} | {' | '.join(vs)} |")
    return lines


ATTACKS = ("logistic", "rank", "score", "margin", "delta", "drop", "shadow")


def audit_markdown(report):
    """Membership-inference AUC (forget pairs vs unseen pairs), mean ± CI of every model and
    attack, and the headline (logistic) AUC's distance to the retrained model's."""
    lines = ["Membership inference, AUC of forget pairs vs never-trained pairs, mean ± 95 % CI over the requests "
             "(`mia_auc` = logistic attack on all output features; distance = |AUC − retrain's| per request):", "",
             "| backbone | regime | model | mia_auc | distance to retrain | " + " | ".join(ATTACKS[1:]) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in ATTACKS[1:]) + " |"]
    for cell in report["cells"]:
        for method, a in cell["aggregate"].items():
            if "mia_auc" not in a:
                continue
            attacks = a.get("attacks", {})
            lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {pm(a['mia_auc'], 3)} | "
                         f"{'' if method == 'retrain' else pm(a.get('mia_distance'), 3)} | "
                         + " | ".join(pm(attacks.get(x), 3) for x in ATTACKS[1:]) + " |")
    return lines


def variance_markdown(report):
    cells = [c for c in report["cells"] if c.get("variance")]
    if not cells:
        return []
    lines = ["", "Where the spread comes from: two-way random-effects ANOVA over training seeds (the original "
             "model) x requests, one run per pair; shares of the variance due to the original model, the "
             "request, and their interaction/noise.", "",
             "| backbone | regime | method | metric | mean | sd | original model | request | residual |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for cell in cells:
        v = cell["variance"]
        for method, metrics in v["components"].items():
            for metric, c in metrics.items():
                sd = (c["var_seed"] + c["var_request"] + c["var_residual"]) ** 0.5
                share = lambda x: "n/a" if x is None else f"{100 * x:.0f} %"  # noqa: E731
                lines.append(f"| {cell['model']} | {cell['regime']} | {method} | {metric} | {fmt(c['mean'])} | "
                             f"{fmt(sd)} | {share(c['share_seed'])} | {share(c['share_request'])} | "
                             f"{share(c['share_residual'])} |")
        lines.append(f"| | | | ({len(v['originals'])} training seeds x {len(v['forget_seeds'])} requests) | | | | | |")
    return lines


def mean_curve(curves):
    """Mean and 95 % half-widths per epoch over requests (the epochs every request reached),
    then the final state's."""
    epochs = [p for p in curves[0] if p["epoch"] != "final"]
    points = []
    for k in range(len(epochs)):
        at = [c[k] for c in curves if k < len(c) and c[k]["epoch"] != "final"]
        if len(at) < len(curves):
            break
        points.append(at)
    points.append([next(p for p in c if p["epoch"] == "final") for c in curves if any(p["epoch"] == "final" for p in c)])
    out = []
    for at in points:
        x = stats.t_interval([p["forget_recall"] for p in at])
        y = stats.t_interval([p["retain_ndcg"] for p in at])
        out.append((x["mean"], y["mean"], half_width(x), half_width(y)))
    return out


def plot(report):
    """The trade-off figure of every cell (mean curves with 95 % bands): the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    cols = min(len(cells), 3)
    rows = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False)
    colors = {"tru": "tab:green", "reverse": "tab:red", "finetune": "tab:blue"}
    for ax, cell in zip(axes.flat, cells):
        recs = [r for r in cell["requests"] if r["original"] == 0]
        for name in CURVE_METHODS:
            curves = [r["trajectories"][name] for r in recs if r["trajectories"].get(name)]
            if not curves:
                continue
            pts = np.array(mean_curve(curves))
            ax.plot(pts[:, 0], pts[:, 1], "-o", ms=3, color=colors[name], label=f"{name} (mean per epoch, then final)")
            order = np.argsort(pts[:, 0])
            ax.fill_between(pts[order, 0], pts[order, 1] - pts[order, 3], pts[order, 1] + pts[order, 3],
                            color=colors[name], alpha=0.18, lw=0)
            ax.errorbar(pts[-1, 0], pts[-1, 1], xerr=pts[-1, 2], yerr=pts[-1, 3], fmt="s", ms=7, color=colors[name],
                        capsize=3)
        for label, key, style in (("original", None, dict(fmt="kx", ms=9)),
                                  ("retrain", "retrain", dict(fmt="*", color="gold", mec="k", ms=16))):
            if key:
                xs, ys = [r["retrain"]["forget_recall"] for r in recs], [r["retrain"]["retain_ndcg"] for r in recs]
            else:
                xs = [r["methods"]["original"]["forget_recall"] for r in recs]
                ys = [r["methods"]["original"]["retain_ndcg"] for r in recs]
            x, y = stats.t_interval(xs), stats.t_interval(ys)
            ax.errorbar(x["mean"], y["mean"], xerr=half_width(x), yerr=half_width(y), capsize=3, label=label, **style)
        ax.set_title(f"{cell['model']}, {cell['regime']} regime ({len(recs)} requests)")
        ax.set_xlabel("forget Recall@20 (retrain's value is the target)")
        ax.set_ylabel("test NDCG@20")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Retain utility vs forgetting per unlearning epoch: mean over requests, 95 % band (square = final state)")
    fig.tight_layout()
    return fig


def write_outputs(report, out):
    """The JSON, the summary CSV, the tables and the plot, each written whole (replacing the last run's)."""
    def put(name, write):
        atomic_write(Path(out) / name, write, replace=True)

    write_texts(out, "unlearning", [("json", json.dumps(report, indent=1, default=float)), ("md", markdown(report))])
    put("unlearning_summary.csv", lambda p: write_summary_csv(report, p))
    fig = plot(report)
    save_png(fig, Path(out) / "unlearning_tradeoff.png")
    import matplotlib.pyplot as plt      # plot() chose the Agg backend

    plt.close(fig)
