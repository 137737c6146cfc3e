"""How far apart are two retrainings of the same deletion? The noise floor under the request
stream's gaps (``stream.py``): at its judged points, models retrained from scratch on the chain's
cumulative deletion with other model seeds (``model_seed``: initialisation, batch order,
negative sampling), each judged with the same evaluation as the stream (test NDCG@20 on the
test pairs no request covers, forget Recall@20 on the cumulative forget set).

Needs the stream run's work folder (``stream.py --work DIR``: the chain's checkpoints) and its
``stream.json``. Every retrain reloads the chain's checkpoint at that point with
``recbole_tru.serving.load_checkpoint``, so the data it trains on is the one the chain's ledger
defines. Runs in this process with the machine's torch threads: time nothing else meanwhile.

    python benchmarks/stream_noise.py --work /work/stream_work3 --points 1,20 --seeds 11,12

Writes ``<out>/<name>.json`` and ``<name>.md`` (default ``benchmarks/results/stream_noise``).
"""
import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from recbole_tru.data.retained import with_overrides  # noqa: E402
from recbole_tru.files import write_texts  # noqa: E402
from recbole_tru.serving import load_checkpoint  # noqa: E402
from recbole_tru.training import quiet_logging  # noqa: E402
from recbole_tru.unlearn import pipeline  # noqa: E402
from recbole_tru.unlearn.evaluation import Judge  # noqa: E402



def chain_checkpoints(work, model):
    """The chain's unlearned checkpoints of ``model``, in request order (folders are time-named)."""
    folders = sorted((Path(work) / model / "chain").glob(f"request-{model}-*"), key=lambda p: p.name)
    return [f / "unlearned.pth" for f in folders]


def measure(work, stream, points, seeds):
    rows = []
    for record in stream["backbones"]:
        model_name, checkpoints = record["model"], chain_checkpoints(work, record["model"])
        if len(checkpoints) != len(record["requests"]):
            raise SystemExit(f"{work}/{model_name}/chain holds {len(checkpoints)} requests, stream.json "
                             f"{len(record['requests'])}: not this run's work folder")
        judged = {p["request"]: p for p in record["judged"]}
        for point in points:
            if point not in judged:
                raise SystemExit(f"request {point} was not judged in stream.json (judged: {sorted(judged)})")
            served = load_checkpoint(checkpoints[point - 1])
            stored = judged[point]
            row = {"model": model_name, "request": point,
                   "retrain": {"stream": {"ndcg": stored["test_ndcg@20"]["retrain"],
                                          "forget": stored["forget_recall@20"]["retrain"]}},
                   "chain": {"ndcg": stored["test_ndcg@20"]["chain"], "forget": stored["forget_recall@20"]["chain"]}}
            for seed in seeds:
                config = with_overrides(served.config, model_seed=seed, show_progress=False)
                tick = time.perf_counter()
                model, trainer, _ = pipeline.unlearn_method(config, "retrain", served.data, served.model)
                judge = Judge(config, served.data, model)
                row["retrain"][f"seed {seed}"] = {"ndcg": judge.reference["retain"]["ndcg@20"],
                                                  "forget": judge.reference["forget"]["recall@20"],
                                                  "seconds": time.perf_counter() - tick,
                                                  "epochs": trainer.summary["epochs"]}
                row["chain_here"] = judge.metrics(served.model)["retain"]["ndcg@20"]
            runs = list(row["retrain"].values())
            row["retrain_spread"] = {key: max(abs(a[key] - b[key]) for a, b in combinations(runs, 2))
                                     for key in ("ndcg", "forget")}
            row["chain_gaps"] = {key: [abs(row["chain"][key] - r[key]) for r in runs] for key in ("ndcg", "forget")}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(report):
    lines = [f"`{report['command']}` ({report['wall_seconds'] / 60:.1f} min): retrainings of the chain's cumulative "
             f"deletion with model seeds {report['seeds']} beside the stream's own (its default seed).", "",
             "| backbone | request | retrain test NDCG@20 per seed | largest retrain-to-retrain difference "
             "| chain's retain gap to each | retrain forget Recall@20 per seed | largest difference "
             "| chain's forget gap to each |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        runs = list(r["retrain"].values())
        ndcg = " / ".join(f"{x['ndcg']:.4f}" for x in runs)
        forget = " / ".join(f"{x['forget']:.4f}" for x in runs)
        ndcg_gaps = " / ".join(f"{g:.4f}" for g in r["chain_gaps"]["ndcg"])
        forget_gaps = " / ".join(f"{g:.4f}" for g in r["chain_gaps"]["forget"])
        lines.append(f"| {r['model']} | {r['request']} | {ndcg} | {r['retrain_spread']['ndcg']:.4f} | {ndcg_gaps} "
                     f"| {forget} | {r['retrain_spread']['forget']:.4f} | {forget_gaps} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="the stream run's --work folder")
    parser.add_argument("--stream", default=str(HERE / "results" / "stream.json"), help="that run's stream.json")
    parser.add_argument("--points", default="1,20", help="judged requests to retrain at")
    parser.add_argument("--seeds", default="11,12", help="model seeds of the extra retrainings")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="stream_noise")
    args = parser.parse_args(argv)
    stream = json.loads(Path(args.stream).read_text(encoding="utf-8"))
    points = [int(x) for x in args.points.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    quiet_logging()
    start = time.perf_counter()
    rows = measure(args.work, stream, points, seeds)
    report = {"command": " ".join(["python benchmarks/stream_noise.py"] + (argv if argv is not None else sys.argv[1:])),
              "stream_command": stream["command"], "seeds": seeds, "wall_seconds": time.perf_counter() - start,
              "rows": rows}
    write_texts(Path(args.out), args.name, (("json", json.dumps(report, indent=2)), ("md", markdown(report))))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
