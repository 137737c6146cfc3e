"""A sweep on a real Ray cluster: the same TRU trials on a cluster of 1 node and of 2 nodes,
each node started on this machine with ``ray start`` (loopback only, one CPU per node, both
stopped afterwards: :func:`recbole_tru.cluster.local_cluster`), the sweep attached with
``ray_address`` exactly as on a cluster of machines.

The first sweep trains the original and the calibration request's retrained model in the
driver (cached in this run's folder, so the second sweep loads them); the trials (FIFO, same
searcher seed, so both sweeps run the same trials) are what the nodes share. Reports the search
time with 1 and 2 nodes and, from ``trials.csv``, on which node each trial ran.

Writes ``--out`` (default ``benchmarks/results``): ``cluster.md`` and ``cluster.json``.

    python benchmarks/cluster.py                      # ml-100k-mm, MMGCN, 8 trials
    python benchmarks/cluster.py --samples 2 --dataset tiny-mm --config '{"data_path": ...}'   # tests
"""
import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import sweep  # noqa: E402  (puts the repository root on the path)

from recbole_tru.cluster import local_cluster  # noqa: E402
from recbole_tru.files import write_texts  # noqa: E402
from recbole_tru.provenance import environment  # noqa: E402
from recbole_tru.tune.report import read_csv  # noqa: E402


def markdown(report):
    lines = [f"Command: `{report['command']}` ({report['model']} on {report['dataset']}, {report['samples']} TRU trials, "
             "FIFO, one CPU per trial and per node; every node a `ray start` on this machine).", "",
             "| nodes | search seconds | sweep seconds (the first sweep also trains the original and the calibration "
             "retrain, the next loads them) | trials per node | finished |",
             "| --- | --- | --- | --- | --- |"]
    for nodes, r in report["runs"].items():
        per_node = ", ".join(str(n) for n in sorted(r["trials_per_node"].values(), reverse=True))
        lines.append(f"| {nodes} | {r['search_seconds']:.1f} | {r['wall_seconds']:.1f} | {per_node} | "
                     f"{r['counts']['finished']} of {sum(r['counts'].values())} |")
    one, two = report["runs"].get("1"), report["runs"].get("2")
    if one and two:
        lines += ["", f"Search speed-up with 2 nodes: {one['search_seconds'] / two['search_seconds']:.2f}x."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MMGCN")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--samples", type=int, default=8, help="trials per sweep")
    parser.add_argument("--nodes", default="1,2", help="cluster sizes, comma list")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--config", default="{}", help="JSON dict of extra config (e.g. a tiny data set)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    runs = out / "cluster_runs" / time.strftime("%Y%m%d-%H%M%S")
    extra = json.loads(args.config)
    report = {"environment": environment(), "model": args.model, "dataset": args.dataset, "samples": args.samples,
              "command": " ".join(["python benchmarks/cluster.py"] + (argv if argv is not None else sys.argv[1:])),
              "runs": {}}
    for nodes in (int(n) for n in args.nodes.split(",")):
        print(f"== {nodes}-node cluster", flush=True)
        with local_cluster(nodes=nodes, cpus_per_node=1) as address:
            r = sweep(args.model, args.dataset, "tru", runs, extra, tune_num_samples=args.samples,
                      tune_max_concurrent=nodes, tune_scheduler="fifo", judge=False, ray_address=address)
        rows = read_csv(Path(r["output_dir"]) / "trials.csv")
        report["runs"][str(nodes)] = {
            **{k: r[k] for k in ("search_seconds", "wall_seconds", "counts", "output_dir")},
            "address": address, "trials_per_node": dict(Counter(row["node_id"] for row in rows if row["node_id"]))}
        print(f"   search {r['search_seconds']:.1f} s; trials per node {report['runs'][str(nodes)]['trials_per_node']}",
              flush=True)
    write_texts(out, "cluster", (("json", json.dumps(report, indent=1, default=float)), ("md", markdown(report))))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
