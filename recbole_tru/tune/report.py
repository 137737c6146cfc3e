"""What a sweep writes: the trials table, the best settings as RecBole YAML, the Pareto plot.

* ``trials.csv`` -- one row per trial: its searched values, status (``finished``: ran to its
  end; ``stopped``: stopped early by the scheduler, metrics of its last report; ``error``:
  raised, with the error), and the calibration metrics of :mod:`recbole_tru.tune.objective`.
* ``best.yaml`` -- the best finished trial's settings (searched and fixed ``<method>_*`` keys
  only), a file ``--config_files`` accepts.
* ``pareto.png`` -- every trial's retain utility (validation NDCG@20) against its forget gap,
  the Pareto front (no other trial has a smaller gap AND a higher utility) marked.
"""
import csv
import math
from pathlib import Path

import yaml

from recbole_tru.files import atomic_write, save_png, write_text

METRICS = ("objective", "valid_ndcg@20", "valid_recall@20", "forget_recall@20", "forget_gap", "unlearn_seconds")
NODE = "node_id"        # the Ray node that ran the trial (trials.csv): on a cluster, where the work went


def plain(value):
    """numpy scalars -> Python scalars (for CSV and YAML)."""
    return value.item() if hasattr(value, "item") else value


def error_line(error):
    """The line of a (possibly wrapped, multi-line) trial error that names the exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (named[-1] if named else (lines[-1] if lines else type(error).__name__))[:500]


def trial_rows(results, keys):
    """Rows of ``trials.csv`` from an iterable of Ray Tune ``Result`` objects."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        status = "error" if result.error else ("finished" if metrics.get("finished") == 1 else "stopped")
        row = {"trial": metrics.get("trial_id") or Path(result.path).name, "status": status,
               "reports": metrics.get("training_iteration", 0)}
        row.update({k: plain(result.config.get(k)) for k in keys})
        row.update({k: plain(metrics.get(k)) for k in METRICS})
        row[NODE] = metrics.get(NODE) or ""
        row["error"] = error_line(result.error) if result.error else ""
        rows.append(row)
    return sorted(rows, key=lambda r: str(r["trial"]))


def write_csv(path, rows, fieldnames):
    """Write (or replace) ``path`` atomically."""
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write, replace=True)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def scored(rows):
    return [r for r in rows if r["status"] != "error" and r.get("objective") not in (None, "")]


def select_best(rows):
    """The finished trial with the highest objective (a trial stopped early is chosen only if
    none finished: its settings did not run to their end)."""
    candidates = [r for r in scored(rows) if r["status"] == "finished"] or scored(rows)
    return max(candidates, key=lambda r: float(r["objective"])) if candidates else None


def pareto_front(gaps, utilities):
    """Indices of the points no other point dominates (gap <= and utility >=, one strictly)."""
    front = []
    for i, (g, u) in enumerate(zip(gaps, utilities)):
        if not any(g2 <= g and u2 >= u and (g2 < g or u2 > u) for g2, u2 in zip(gaps, utilities)):
            front.append(i)
    return front


def write_best_yaml(path, settings, header):
    """RecBole YAML of ``settings`` (``key: value`` lines) under ``header`` comment lines."""
    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump({k: plain(v) for k, v in settings.items()}, default_flow_style=False, sort_keys=False)
    return write_text(path, text)


def plot_pareto(path, series, title, references=()):
    """``series``: ``[(label, rows)]`` (rows of ``trials.csv``); each series' trials, Pareto
    front and best trial. ``references``: ``[(label, gap, utility, marker)]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    colors = ("tab:green", "tab:red", "tab:blue", "tab:purple")
    for (label, rows), color in zip(series, colors):
        points = [(float(r["forget_gap"]), float(r["valid_ndcg@20"]), r) for r in scored(rows)]
        done = [p for p in points if p[2]["status"] == "finished"]
        stopped = [p for p in points if p[2]["status"] == "stopped"]
        if done:
            ax.scatter([p[0] for p in done], [p[1] for p in done], s=28, color=color, alpha=0.8,
                       label=f"{label}: finished trials ({len(done)})")
        if stopped:
            ax.scatter([p[0] for p in stopped], [p[1] for p in stopped], s=28, marker="x", color=color, alpha=0.5,
                       label=f"{label}: stopped early ({len(stopped)})")
        if done:
            front = sorted((done[i] for i in pareto_front([p[0] for p in done], [p[1] for p in done])),
                           key=lambda p: p[0])
            ax.plot([p[0] for p in front], [p[1] for p in front], "-", color=color, lw=1.5,
                    drawstyle="steps-post", label=f"{label}: Pareto front")
            ax.scatter([p[0] for p in front], [p[1] for p in front], s=90, facecolors="none", edgecolors=color)
        best = select_best(rows)
        if best is not None:
            ax.scatter([float(best["forget_gap"])], [float(best["valid_ndcg@20"])], s=220, marker="*", color=color,
                       edgecolors="k", zorder=5, label=f"{label}: best objective")
    for label, gap, utility, marker in references:
        if gap is not None and not math.isnan(gap):
            ax.scatter([gap], [utility], s=90, marker=marker, color="k", zorder=4, label=label)
    ax.set_xlabel("forget gap |Recall@20 - retrained Recall@20| (calibration request)")
    ax.set_ylabel("retain utility: validation NDCG@20")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    try:
        return save_png(fig, path)
    finally:
        plt.close(fig)
