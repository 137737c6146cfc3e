"""Which settings change a trained model's bits: torch threads and the CPU kernels torch picks.

Trains each model for a few epochs (no early stopping) once per setting, each in its own
process, one after another, and compares the trained parameters (SHA-256 of the state dict) and
the validation NDCG@20. Same digest = bit-identical model. A figure that differs between two
machines with the same install (``constraints.txt``) comes from a setting that changes bits here.

    python benchmarks/reproducibility.py                         # VBPR and MMGCN, 3 epochs
    python benchmarks/reproducibility.py --models MMGCN --epochs 5

Settings: 2 threads (the main job's default on 2 cores), 2 threads again (run-to-run), 1 thread
(the unlearning benchmark's workers), 2 threads with ``ATEN_CPU_CAPABILITY=default`` (torch's
non-vectorised kernels, standing in for a CPU with other vector units than this one), and two
1-thread processes at once (the benchmark's arrangement). The training seconds of the first and
the last settings compare the two ways to use 2 cores: one job of 2 threads, or two jobs of 1.
Writes ``reproducibility.json`` and ``reproducibility.md`` to ``--out``.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "2 threads": {"threads": 2, "env": {}},
    "2 threads, again": {"threads": 2, "env": {}},
    "1 thread": {"threads": 1, "env": {}},
    "2 threads, ATEN_CPU_CAPABILITY=default": {"threads": 2, "env": {"ATEN_CPU_CAPABILITY": "default"}},
    "1 thread, two processes at once": {"threads": 1, "env": {}, "processes": 2},
}


def one(task):
    """Train one model in this process; print its digest and validation score."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(task["threads"])
    from recbole_tru.config import Config
    from recbole_tru.provenance import environment
    from recbole_tru.training import fit, load_data, quiet_logging

    quiet_logging()
    config = Config(model=task["model"], dataset=task["dataset"],
                    config_dict={"epochs": task["epochs"], "stopping_step": 1000, "state": "WARNING",
                                 "show_progress": False, **task["config"]}, read_cmd_line=False)
    _, train, valid, _ = load_data(config)
    model, _, summary = fit(config, train, valid)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    env = environment()
    print("RESULT " + json.dumps({"sha256": digest.hexdigest()[:16], "valid_ndcg@20": summary["best_valid_score"],
                                  "seconds": summary["seconds"], "torch_threads": env["torch_threads"],
                                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}), flush=True)


def run(model, setting, args):
    """Train in ``setting.get("processes", 1)`` processes at once; the first one's result, with
    every process's seconds (``seconds_all``) and whether all digests agree."""
    task = {"model": model, "dataset": args.dataset, "epochs": args.epochs, "threads": setting["threads"],
            "config": json.loads(args.config)}
    env = {**os.environ, **setting["env"]}
    procs = [subprocess.Popen([sys.executable, __file__, "--one", json.dumps(task)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(setting.get("processes", 1))]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise RuntimeError(f"{model} / {setting}: exit {proc.returncode}\n{err[-2000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return {**results[0], "seconds_all": [r["seconds"] for r in results],
            "processes_agree": len({r["sha256"] for r in results}) == 1}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="VBPR,MMGCN")
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--config", default="{}", help="JSON dict of extra config")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return one(json.loads(args.one))
    sys.path.insert(0, str(ROOT))
    from recbole_tru.files import write_texts
    from recbole_tru.provenance import environment

    rows = {model: {name: run(model, setting, args) for name, setting in SETTINGS.items()}
            for model in args.models.split(",")}
    report = {"command": "python benchmarks/reproducibility.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": environment(), "epochs": args.epochs, "rows": rows}
    lines = [f"{args.epochs} training epochs per model, settings one after another; same digest = bit-identical "
             "parameters; seconds = training time (every process's when several ran at once).", "",
             "| model | setting | parameters SHA-256 | valid NDCG@20 | same bits as '2 threads'? | torch CPU kernels | "
             "training seconds |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, by_setting in rows.items():
        base = by_setting["2 threads"]["sha256"]
        for name, r in by_setting.items():
            same = "yes" if r["sha256"] == base and r["processes_agree"] else "no"
            lines.append(f"| {model} | {name} | `{r['sha256']}` | {r['valid_ndcg@20']:.6f} | {same} | "
                         f"{r['cpu_capability']} | {', '.join(f'{x:.1f}' for x in r['seconds_all'])} |")
    lines += ["", "Throughput on 2 cores, models trained per hour (two 1-thread processes at once vs one 2-thread "
              "process):", ""]
    for model, by_setting in rows.items():
        one_job = by_setting["2 threads"]["seconds"]
        two_jobs = max(by_setting["1 thread, two processes at once"]["seconds_all"])
        report.setdefault("throughput", {})[model] = {"one_job_2_threads_s": one_job, "two_jobs_1_thread_s": two_jobs,
                                                       "ratio": 2 * one_job / two_jobs}
        lines.append(f"* {model}: one 2-thread job {one_job:.1f} s, two 1-thread jobs at once {two_jobs:.1f} s "
                     f"(the slower) -> {2 * one_job / two_jobs:.2f}x the work per unit of time")
    out = Path(args.out)
    write_texts(out, "reproducibility", [("json", json.dumps(report, indent=1)), ("md", "\n".join(lines) + "\n")])
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
