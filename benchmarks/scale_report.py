"""The report of ``benchmarks/scale.py``: ``scale<tag>.json``, the tables (``scale<tag>.md``) and the
plots (``scale<tag>_train.png``, ``scale<tag>_unlearn.png``), each written whole."""
import json
from pathlib import Path

from recbole_tru.files import save_png, write_text
from unlearning_report import fmt as _fmt


def fmt(x, digits=2):
    """:func:`unlearning_report.fmt` with this report's default of 2 digits (seconds)."""
    return _fmt(x, digits)


# (key in a forget row's "reference_points", its row label, its note): judged beside the methods
REFERENCE_POINTS = (("original", "(original)", "the model before the request, with its own graph; untimed"),
                    ("start", "(start)", "its parameters on the retained data, where every method starts; untimed"))


def markdown(report):
    commands = report.get("commands") or [(report["command"], report["seconds"]["total"])]
    lines = ["All data sets are SYNTHETIC, with the user/item/interaction counts of Amazon Baby, Sports "
             "and Clothing (`python -m recbole_tru.data.builders synthetic`).", "",
             f"Machine: {report['machine']}. Commands (wall time):", ""]
    lines += [f"* `{c}` ({t / 60:.1f} min)" for c, t in commands] + [""]
    if report["load"]:
        lines += ["### Feature files: text parse vs binary cache", "",
                  "| data set | file | MB (text) | text read s (median) | first cached read s (parse + write) | "
                  "cached read s (median) | speed-up | peak RSS MB text / cached |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["load"]:
            lines.append(f"| synthetic-{r['size']} | `{r['file']}` | {r['text']['bytes'] / 1e6:.0f} | "
                         f"{fmt(r['text']['seconds'])} | {fmt(r['build']['seconds'])} | {fmt(r['cached']['seconds'], 3)} | "
                         f"{r['text']['seconds'] / max(r['cached']['seconds'], 1e-9):.0f}x | "
                         f"{r['text']['peak_rss_mb']:.0f} / {r['cached']['peak_rss_mb']:.0f} |")
        lines.append("")
    if report["train"]:
        lines += ["### Training cost per epoch", "",
                  f"Median over {report['settings']['train_epochs']} training epochs (validation excluded); "
                  "one full-sort validation pass; peak RSS of the process (data set, model, training).", "",
                  "| data set | train interactions | model | s / epoch | validation pass s | peak RSS MB |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in report["train"]:
            lines.append(f"| synthetic-{r['size']} | {r['n_train']:,} | {r['model']} | {fmt(r['seconds_per_epoch'])} | "
                         f"{fmt(r['valid_seconds'])} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
    if report.get("step"):
        lines += ["### MMGCN step costs (restricted propagation)", "",
                  "A TRU-like step: 256 forget pairs + 256 retained pairs of the same users (negatives uniform), "
                  "dense layers frozen as in TRU; forward + backward, median seconds. `plan` = nodes computed per "
                  "layer (L-hop neighbourhood ... batch nodes) and its cost relative to the full propagation. "
                  "Check = full-sort scores of 1,000 users after a parameter change. Train step = one 2048 batch.", "",
                  "| data set | nodes | plan (nodes per layer) | plan cost | TRU step restricted s | TRU step full s | "
                  "check s | train step s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["step"]:
            lines.append(f"| synthetic-{r['size']} | {r['n_nodes']:,} | {' / '.join(f'{n:,}' for n in r['plan_nodes'])} | "
                         f"{fmt(r['plan_cost'])} | {fmt(r['tru_step_restricted'], 3)} | {fmt(r['tru_step_full'], 3)} | "
                         f"{fmt(r['check_1000_users'], 3)} | {fmt(r['train_step'], 3)} |")
        lines.append("")
    if report["unlearn"]:
        s = report["settings"]
        lines += ["### Unlearning time", "",
                  f"Original and retrained models: at most {s['epochs']} epochs, early stopping after "
                  f"{s['stopping_step']} validations without improvement (validation every epoch). "
                  f"`retrain` runs once per cell; `tru`, `reverse`, `finetune` {s['repeats']} times (median); "
                  "`sisa` once (its K shard models are trained untimed first). Interaction regime, random pairs.", "",
                  "| data set | model | |D_f| | method | seconds | x faster than retrain | test NDCG@20 | forget Recall@20 | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["unlearn"]:
            for f in r["forget"]:
                retrain = f["methods"].get("retrain", {}).get("seconds")
                for name, m in f["methods"].items():
                    speed = None if retrain is None or not m.get("seconds") or name == "retrain" else retrain / m["seconds"]
                    note = m.get("note") or (f"{m['epochs']} epochs" if name == "retrain" else m.get("stop_reason", ""))
                    lines.append(f"| synthetic-{r['size']} | {r['model']} | {f['n_forget']:,} | {name} | {fmt(m.get('seconds'))} | "
                                 f"{fmt(speed, 1)} | {fmt(m.get('test_ndcg@20'), 4)} | {fmt(m.get('forget_recall@20'), 4)} | {note or ''} |")
                for key, label, note in REFERENCE_POINTS:
                    m = (f.get("reference_points") or {}).get(key)
                    if m:
                        lines.append(f"| synthetic-{r['size']} | {r['model']} | {f['n_forget']:,} | {label} | | | "
                                     f"{fmt(m['test_ndcg@20'], 4)} | {fmt(m['forget_recall@20'], 4)} | {note} |")
            lines.append(f"| synthetic-{r['size']} | {r['model']} | | original training | {fmt(r['original']['seconds'])} | | | | "
                         f"{r['original']['epochs']} epochs (max {r.get('epochs')}, stopping step {r.get('stopping_step')}), "
                         f"peak RSS {r['peak_rss_mb']:.0f} MB |")
        lines += [""] + growth_lines(report) + phase_lines(report)
    return "\n".join(lines) + "\n"


def series(report):
    """(model, max epochs) of the unlearning cells: a curve joins cells of the same budget."""
    return sorted({(r["model"], r.get("epochs")) for r in report["unlearn"]}, key=str)


def series_label(model, epochs):
    return f"{model}, <= {epochs} epochs"


def fixed_rows(report, model, epochs=None):
    """[(size, n_train, {method: seconds})] of the fixed-size request, in size order."""
    out = []
    for r in report["unlearn"]:
        if r["model"] == model and r.get("epochs") == epochs and r["forget"]:
            f = r["forget"][0]
            out.append((r["size"], r["n_train"], {k: v.get("seconds") for k, v in f["methods"].items()}))
    return out


def growth_lines(report):
    lines = [f"Growth from the smallest to the largest data size at |D_f| = {report['settings']['fixed_forget']:,} "
             "(ratio of seconds):", "", "| model | data growth (train interactions) | method | growth |", "| --- | --- | --- | --- |"]
    for model, epochs in series(report):
        rows = fixed_rows(report, model, epochs)
        if len(rows) < 2:
            continue
        (s0, n0, m0), (s1, n1, m1) = rows[0], rows[-1]
        for name in m0:
            if m0.get(name) and m1.get(name):
                lines.append(f"| {series_label(model, epochs)} | {s0} -> {s1}: x{n1 / n0:.2f} | {name} | "
                             f"x{m1[name] / m0[name]:.2f} |")
    return lines + [""]


def phase_lines(report):
    lines = ["Where TRU's time goes (the median run; seconds): `reset` re-draws owned rows, `checks` rank "
             "the gated pairs and the reference (against all items, or the `tru_rank_sample` item sample), "
             "`targeted steps` are the gated reverse updates, `repair` the retain BPR epochs on the "
             "neighbourhood.", "",
             "| data set | model | |D_f| | total | reset | checks (n) | targeted steps (n) | repair | stop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["unlearn"]:
        for f in r["forget"]:
            for name, m in f["methods"].items():
                p = m.get("phases")
                if not p or not name.startswith("tru"):
                    continue
                lines.append(f"| synthetic-{r['size']} | {r['model']} | {f['n_forget']:,} {'' if name == 'tru' else name} | {fmt(m['seconds'])} | "
                             f"{fmt(p.get('reset'))} | {fmt(p.get('checks'))} ({m.get('checks')}) | "
                             f"{fmt(p.get('targeted_steps'))} ({m.get('steps')}) | {fmt(p.get('repair_epochs'))} | "
                             f"{m.get('stop_reason', '')} |")
    return lines + [""]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_train(report):
    """Seconds per training epoch and peak memory vs data size (``report["train"]``): the figure."""
    plt = _pyplot()
    models = list(dict.fromkeys(r["model"] for r in report["train"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model in models:
        rows = [r for r in report["train"] if r["model"] == model]
        x = [r["n_train"] for r in rows]
        axes[0].plot(x, [r["seconds_per_epoch"] for r in rows], "-o", label=model)
        axes[1].plot(x, [r["peak_rss_mb"] for r in rows], "-o", label=model)
    for ax, label in zip(axes, ("seconds per training epoch", "peak RSS (MB)")):
        ax.set_xlabel("training interactions (synthetic Baby / Sports / Clothing sizes)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Training cost on SYNTHETIC data at Amazon sizes")
    fig.tight_layout()
    return fig


def plot_unlearn(report):
    """Unlearning seconds vs data size and vs forget-set size (``report["unlearn"]``): the figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"retrain": "k", "tru": "tab:green", "reverse": "tab:red", "finetune": "tab:blue", "sisa": "tab:purple"}
    markers = {"VBPR": "o", "MMGCN": "s"}
    for model, epochs in series(report):
        rows = fixed_rows(report, model, epochs)
        dashed = "--" if epochs != report["settings"]["epochs"] else "-"
        names = list(dict.fromkeys(k for _, _, m in rows for k in m))
        for name in names:
            base = name.split("[")[0]
            if base not in styles:
                continue
            # by training interactions: Clothing has more items and users but fewer
            # training interactions than Sports
            pts = sorted((n, m[name]) for _, n, m in rows if m.get(name))
            if pts:                          # variants (tru[...]) dotted, in their method's colour
                axes[0].plot(*zip(*pts), (":" if name != base else dashed) + markers.get(model, "o"),
                             color=styles[base], label=f"{name} ({series_label(model, epochs)})",
                             alpha=1.0 if base in ("tru", "retrain") else 0.45)
        for size, n, m in rows:
            if m.get("retrain"):
                axes[0].annotate(size, (n, m["retrain"]), textcoords="offset points", xytext=(0, 6),
                                 fontsize=7, ha="center")
        sweep = [r for r in report["unlearn"] if r["model"] == model and r.get("epochs") == epochs
                 and r["size"] == report["settings"]["sweep_size"]]
        for r in sweep:
            for name in styles:
                pts = sorted((f["n_forget"], f["methods"][name]["seconds"]) for f in r["forget"]
                             if f["methods"].get(name, {}).get("seconds"))
                if pts:
                    axes[1].plot(*zip(*pts), ("-" if name != "retrain" else ":") + markers.get(model, "o"),
                                 color=styles[name], label=f"{name} ({series_label(model, epochs)})",
                                 alpha=1.0 if name in ("tru", "retrain") else 0.45)
    axes[0].set_xlabel("training interactions (synthetic Baby / Sports / Clothing sizes)")
    axes[0].set_title(f"vs data size, |D_f| = {report['settings']['fixed_forget']:,}")
    axes[1].set_xlabel("|D_f| (forgotten interactions)")
    axes[1].set_title(f"vs forget-set size, synthetic-{report['settings']['sweep_size']}")
    for ax in axes:
        ax.set_ylabel("unlearning seconds")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[1].set_xscale("log")
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle("Unlearning time on SYNTHETIC data (retrain: same stopping rule as the original)")
    fig.tight_layout()
    return fig


def write_report(report, out, tag="", data=True):
    """``scale<tag>.json`` (unless not ``data``), ``scale<tag>.md`` and the plots of the parts the
    report has, into ``out``, each replacing the file of an earlier run whole."""
    out, stem = Path(out), f"scale{tag}"
    text = markdown(report)
    if data:
        write_text(out / f"{stem}.json", json.dumps(report, indent=1, default=float), replace=True)
    write_text(out / f"{stem}.md", text, replace=True)
    for part, plot in (("train", plot_train), ("unlearn", plot_unlearn)):
        if report[part]:
            fig = plot(report)
            save_png(fig, out / f"{stem}_{part}.png")
            _pyplot().close(fig)
    print(text)
