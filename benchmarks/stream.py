"""Request-stream benchmark: many small deletion requests, one after another, as an operator gets
them (the setting ERASE judges: sequential tiny requests).

Per backbone: train an original (``run_recbole_tru.py --model=M``, a checkpoint), then send
``--requests`` small requests (a cycle of one user, one user-item pair, one item, and a mixed
request with one of each; drawn with ``--seed`` among what is still in the training data) through
the deletion-request workflow, each on the previous request's ``unlearned.pth``. Per request:
the unlearning seconds (the method alone, ``timings.unlearn``) and the whole request's seconds
(load, resolve, evaluate, unlearn, prove, write), with the workflow's audit off unless
``--audit`` (it trains a shadow model per request).

At the judged points (request 1 and every ``--judge-every``-th), a model is retrained from
scratch on the cumulative deletion (the workflow's ``retrain`` on the original checkpoint with the
chain's cumulative ``forget.inter``), and the chain's model is judged against it: forget gap
(|forget Recall@20 - retrain's|, the cumulative forget set as ground truth), retain gap (|test
NDCG@20 - retrain's|) and MIA distance (|AUC - retrain's| of the headline attack, telling the
cumulative forget set from held-out pairs; no shadow model, so the audit is the same for both
models and cheap). The unedited original is judged the same way at every point: the do-nothing
baseline the chain must beat. Both models are reloaded from their checkpoints with
``recbole_tru.serving.load_checkpoint`` for the audit, so the judged models are the ones an
operator would serve.

Writes to ``--out`` (default ``benchmarks/results``): ``stream.json`` (every request and judged
point, environment), ``stream.csv`` (``backbone,request,kind,seconds,forget_gap,retain_gap,
mia_distance``; gaps empty where no retrain judged that point), ``stream.md`` (the README's table)
and ``stream.png`` (gaps and latency vs the number of requests). Runs in this process with the
machine's torch threads: time nothing else meanwhile.

    python benchmarks/stream.py                               # VBPR and MMGCN, 20 requests
    python benchmarks/stream.py --models VBPR --requests 8 --judge-every 4
    python benchmarks/stream.py --render                      # rewrite .md/.csv/.png from the JSON
    python benchmarks/stream.py --config '{"unlearn_chain_targets": "all"}' --name stream_chain_all
"""
import argparse
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from recbole.trainer import Trainer

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from recbole_tru.audit import Audit  # noqa: E402
from recbole_tru.data.retained import with_overrides  # noqa: E402
from recbole_tru.files import save_png, write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.quick_start import run_recbole_tru  # noqa: E402
from recbole_tru.serving import load_checkpoint  # noqa: E402
from recbole_tru.training import quiet_logging  # noqa: E402

KINDS = ("user", "pair", "item", "mixed")
# the judge's audit: every attack that needs no shadow model, the README's headline
JUDGE_AUDIT = {"audit_shadow": False, "audit_attacks": ["rank", "score", "margin", "logistic", "delta"]}
FORGET_METRIC, RETAIN_METRIC = "recall@20", "ndcg@20"


# --------------------------------------------------------------------------- the requests

class RequestDrawer:
    """Draws small requests among what is still in the training split (raw tokens)."""

    def __init__(self, served, seed):
        train = served.train_data.dataset
        inter = train.inter_feat
        self.users = inter[train.uid_field].numpy().astype(np.int64)
        self.items = inter[train.iid_field].numpy().astype(np.int64)
        self.alive = np.ones(len(self.users), dtype=bool)
        self.user_token = train.field2id_token[train.uid_field]
        self.item_token = train.field2id_token[train.iid_field]
        self.rng = np.random.default_rng(seed)

    def _user(self):
        u = int(self.rng.choice(np.unique(self.users[self.alive])))
        self.alive &= self.users != u
        return [self.user_token[u], ""]

    def _item(self):
        i = int(self.rng.choice(np.unique(self.items[self.alive])))
        self.alive &= self.items != i
        return ["", self.item_token[i]]

    def _pair(self):
        row = int(self.rng.choice(np.flatnonzero(self.alive)))
        self.alive[row] = False
        return [self.user_token[self.users[row]], self.item_token[self.items[row]]]

    def draw(self, kind):
        if kind == "mixed":
            return [self._user(), self._pair(), self._item()]
        return [{"user": self._user, "pair": self._pair, "item": self._item}[kind]()]


def write_request(path, rows):
    path.write_text("user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- one backbone

def judge(model_name, base, files, original_path, chain_report, work):
    """Retrain on the chain's cumulative deletion and judge the chain's model against it."""
    cumulative = Path(chain_report["output_dir"]) / "forget.inter"
    tick = time.perf_counter()
    retrain = run_recbole_tru(model=model_name, config_file_list=files, config_dict={
        **base, "checkpoint": str(original_path), "forget_file": str(cumulative), "unlearn": "retrain",
        "audit_enabled": False, "output_dir": str(work / "retrain")}, read_cmd_line=False)
    retrain_seconds = time.perf_counter() - tick
    assert retrain["deleted"]["interactions"] == chain_report["deleted"]["interactions"]
    chain = load_checkpoint(chain_report["output"]["checkpoint"])
    retrained = load_checkpoint(retrain["output"]["checkpoint"])
    original = load_checkpoint(original_path)
    config = with_overrides(chain.config, **JUDGE_AUDIT, audit_enabled=True)
    audit = Audit(config, chain.data, original.model)
    models = (("chain", chain.model), ("retrain", retrained.model), ("original", original.model))
    auc = {name: audit.run(m)["mia_auc"] for name, m in models}
    # the unedited original on the same (cumulative) data: the do-nothing baseline
    host = Trainer(config, original.model)
    original_eval = {part: {k: float(v) for k, v in host.evaluate(chain.data.eval_loader(loader),
                                                                  load_best_model=False).items()}
                     for part, loader in (("forget", "forget"), ("retain", "test"))}
    forget = {"chain": chain_report["forgetting"]["output"][FORGET_METRIC],
              "retrain": retrain["forgetting"]["output"][FORGET_METRIC],
              "original": original_eval["forget"][FORGET_METRIC]}
    retain = {"chain": chain_report["utility"]["output"][RETAIN_METRIC],
              "retrain": retrain["utility"]["output"][RETAIN_METRIC],
              "original": original_eval["retain"][RETAIN_METRIC]}
    return {"forget_gap": abs(forget["chain"] - forget["retrain"]), "retain_gap": abs(retain["chain"] - retain["retrain"]),
            "mia_distance": abs(auc["chain"] - auc["retrain"]),
            "original_gaps": {"forget_gap": abs(forget["original"] - forget["retrain"]),
                              "retain_gap": abs(retain["original"] - retain["retrain"]),
                              "mia_distance": abs(auc["original"] - auc["retrain"])},
            "forget_recall@20": forget, "test_ndcg@20": retain, "mia_auc": auc, "retrain_seconds": retrain_seconds,
            "retrain_unlearn_seconds": retrain["timings"]["unlearn"],
            "deleted_interactions": chain_report["deleted"]["interactions"]}


def run_backbone(model_name, args, extra, work):
    base = {"dataset": args.dataset, "output_dir": str(work / "chain"), "checkpoint_dir": str(work / "saved"),
            "show_progress": False, "state": "WARNING", **extra}
    files = args.config_files.split() if args.config_files else None
    print(f"== {model_name}: training the original", flush=True)
    tick = time.perf_counter()
    trained = run_recbole_tru(model=model_name, config_file_list=files, config_dict={**base, "output_dir": str(work)},
                              read_cmd_line=False)
    original_path = Path(trained["checkpoint"])
    record = {"model": model_name, "original": {"seconds": time.perf_counter() - tick, **trained["summary"],
                                                 "test_result": trained["test_result"]},
              "requests": [], "judged": []}
    drawer = RequestDrawer(load_checkpoint(original_path), args.seed)
    judged_at = {1} | set(range(args.judge_every, args.requests + 1, args.judge_every))
    current = original_path
    for r in range(1, args.requests + 1):
        kind = KINDS[(r - 1) % len(KINDS)]
        path = write_request(work / f"request-{r:02d}.inter", drawer.draw(kind))
        tick = time.perf_counter()
        report = run_recbole_tru(model=model_name, config_file_list=files, config_dict={
            **base, "checkpoint": str(current), "forget_file": str(path), "unlearn": args.method,
            "audit_enabled": args.audit}, read_cmd_line=False)
        wall = time.perf_counter() - tick
        current = Path(report["output"]["checkpoint"])
        row = {"request": r, "kind": kind, "seconds": report["timings"]["unlearn"], "request_seconds": wall,
               "names": report["request"]["names"], "deleted_now": report["request"]["names"]["interactions"],
               "deleted_total": report["deleted"]["interactions"], "stop_reason": report["method"]["stop_reason"],
               "proof_passed": report["proof_of_deletion"]["passed"]}
        print(f"   request {r:2d} ({kind:5s}): {row['seconds']:.2f} s unlearning, {wall:.1f} s in all, "
              f"{row['deleted_total']} interactions deleted so far", flush=True)
        if r in judged_at:
            point = {"request": r, **judge(model_name, base, files, original_path, report, work)}
            record["judged"].append(point)
            print(f"   judged at {r}: forget gap {point['forget_gap']:.4f}, retain gap {point['retain_gap']:.4f}, "
                  f"MIA distance {point['mia_distance']:.3f} (retrain {point['retrain_seconds']:.0f} s)", flush=True)
        record["requests"].append(row)
    return record


# --------------------------------------------------------------------------- the report

def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarise(report):
    for record in report["backbones"]:
        seconds = [r["seconds"] for r in record["requests"]]
        whole = [r["request_seconds"] for r in record["requests"]]
        judged = record["judged"]
        first, last = judged[0], judged[-1]
        record["summary"] = {
            "requests": len(seconds), "median_seconds": statistics.median(seconds), "p95_seconds": percentile(seconds, 95),
            "median_request_seconds": statistics.median(whole), "p95_request_seconds": percentile(whole, 95),
            "median_retrain_seconds": statistics.median(p["retrain_seconds"] for p in judged),
            "first": {k: first[k] for k in ("request", "forget_gap", "retain_gap", "mia_distance")},
            "last": {k: last[k] for k in ("request", "forget_gap", "retain_gap", "mia_distance")},
        }
    return report


def csv_text(report):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["backbone", "request", "kind", "seconds", "forget_gap", "retain_gap", "mia_distance"])
    for record in report["backbones"]:
        points = {p["request"]: p for p in record["judged"]}
        for r in record["requests"]:
            p = points.get(r["request"])
            gaps = [f"{p[k]:.6f}" for k in ("forget_gap", "retain_gap", "mia_distance")] if p else ["", "", ""]
            writer.writerow([record["model"], r["request"], r["kind"], f"{r['seconds']:.4f}", *gaps])
    return buffer.getvalue()


def markdown(report):
    lines = [f"`{report['command']}`: {report['requests']} requests per backbone ({', '.join(KINDS)}, in turn), "
             f"method `{report['method']}`, each on the previous request's checkpoint; a retrain on the cumulative "
             f"deletion judges requests {', '.join(str(p['request']) for p in report['backbones'][0]['judged'])}. "
             f"{report['wall_seconds'] / 60:.1f} min in all." + (f" Note: {report['note']}." if report.get("note") else ""),
             "",
             "<!-- table-1 -->",
             "| backbone | unlearning s: median | p95 | whole request s: median | p95 | retrain s: median "
             "| forget gap: first → last | retain gap: first → last | MIA distance: first → last "
             "| unedited original at last: forget / retain / MIA | deleted after last |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in report["backbones"]:
        s, o = record["summary"], record["judged"][-1]["original_gaps"]
        lines.append(
            f"| {record['model']} | {s['median_seconds']:.2f} | {s['p95_seconds']:.2f} | {s['median_request_seconds']:.1f} "
            f"| {s['p95_request_seconds']:.1f} | {s['median_retrain_seconds']:.0f} "
            f"| {s['first']['forget_gap']:.4f} → {s['last']['forget_gap']:.4f} "
            f"| {s['first']['retain_gap']:.4f} → {s['last']['retain_gap']:.4f} "
            f"| {s['first']['mia_distance']:.3f} → {s['last']['mia_distance']:.3f} "
            f"| {o['forget_gap']:.4f} / {o['retain_gap']:.4f} / {o['mia_distance']:.3f} "
            f"| {record['judged'][-1]['deleted_interactions']} |")
    lines += ["", "<!-- table-2 -->",
              "| backbone | request | deleted so far | forget Recall@20: chain | retrain | original "
              "| test NDCG@20: chain | retrain | original | MIA AUC: chain | retrain | original |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in report["backbones"]:
        for p in record["judged"]:
            lines.append(f"| {record['model']} | {p['request']} | {p['deleted_interactions']} "
                         f"| {p['forget_recall@20']['chain']:.4f} | {p['forget_recall@20']['retrain']:.4f} "
                         f"| {p['forget_recall@20']['original']:.4f} "
                         f"| {p['test_ndcg@20']['chain']:.4f} | {p['test_ndcg@20']['retrain']:.4f} "
                         f"| {p['test_ndcg@20']['original']:.4f} "
                         f"| {p['mia_auc']['chain']:.3f} | {p['mia_auc']['retrain']:.3f} | {p['mia_auc']['original']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = (("forget_gap", "forget gap to retrain"), ("retain_gap", "retain gap to retrain"),
              ("mia_distance", "MIA distance to retrain"))
    for record in report["backbones"]:
        xs = [p["request"] for p in record["judged"]]
        for ax, (key, title) in zip(axes, panels):
            line, = ax.plot(xs, [p[key] for p in record["judged"]], marker="o", label=f"{record['model']} (chain)")
            ax.plot(xs, [p["original_gaps"][key] for p in record["judged"]], linestyle="--", color=line.get_color(),
                    label=f"{record['model']} unedited original")
            ax.set_title(title)
            ax.set_xlabel("requests so far")
        axes[3].plot([r["request"] for r in record["requests"]], [r["seconds"] for r in record["requests"]],
                     marker=".", label=record["model"])
    axes[3].set_title("unlearning seconds per request")
    axes[3].set_xlabel("request")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def write_outputs(report, out, name="stream"):
    write_texts(out, name, (("json", json.dumps(report, indent=2)), ("csv", csv_text(report)),
                            ("md", markdown(report))))
    plot(report, out / f"{name}.png")


def request_parser(description, name, requests):
    """The options the request benchmarks share (this one and ``latency.py``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="VBPR,MMGCN")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files, as run_recbole_tru.py")
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (e.g. for a smoke run)")
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--method", default="tru", help="the workflow's method (tru, influence, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request draws")
    parser.add_argument("--work", default=None, help="folder for checkpoints and requests (default: a temporary one)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default=name, help="file name of the outputs (<out>/<name>.json, ...)")
    parser.add_argument("--render", action="store_true", help="rewrite the outputs from <out>/<name>.json")
    return parser


def publish(report, out, name, summarise, write, markdown):
    """Summarise ``report``, write its outputs, print its markdown; returns it."""
    report = summarise(report)
    write(report, out, name)
    print(markdown(report))
    return report


def rendered(args, summarise, write):
    """With ``--render``: the report re-summarised from ``<out>/<name>.json`` and its outputs
    rewritten; else None."""
    if not args.render:
        return None
    out = Path(args.out)
    report = summarise(json.loads((out / f"{args.name}.json").read_text()))
    write(report, out, args.name)
    return report


def main(argv=None):
    parser = request_parser(__doc__, "stream", 20)
    parser.add_argument("--judge-every", type=int, default=5, help="retrain and judge every k-th request (and the 1st)")
    parser.add_argument("--audit", action="store_true", help="the workflow's own audit on every request (slower)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = rendered(args, summarise, write_outputs)
    if report is not None:
        return report
    if args.requests < 1 or args.judge_every < 1:
        raise SystemExit("--requests and --judge-every must be >= 1")
    quiet_logging()
    extra = json.loads(args.config)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recbole_tru_stream_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        backbones = [run_backbone(m, args, extra, work / m) for m in args.models.split(",")]
    report = {"command": " ".join(["python benchmarks/stream.py"] + (argv if argv is not None else sys.argv[1:])),
              "environment": environment(), "wall_seconds": time.perf_counter() - start, "requests": args.requests,
              "judge_every": args.judge_every, "method": args.method, "seed": args.seed, "audit": args.audit,
              "judge_audit": JUDGE_AUDIT, "backbones": backbones}
    return publish(report, out, args.name, summarise, write_outputs, markdown)


if __name__ == "__main__":
    main()
