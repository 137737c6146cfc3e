"""A real Ray cluster: two nodes started on this machine with ``ray start`` (loopback only),
a sweep and SISA attached with ``ray_address``; the results say on which node each trial and
each shard ran, and both nodes did work. Under CI a cluster that cannot start fails the test."""
import csv
import os
import subprocess
import sys

import pytest

from conftest import TINY, TINY_CONFIG, in_ci
from recbole_tru.cluster import cluster_nodes, local_cluster, parallel_map, probe
from recbole_tru.config import PACKAGE_ROOT


# what local_cluster raises when a cluster cannot start on this machine
CANNOT_START = (OSError, RuntimeError, TimeoutError)


def start_or_skip(**kwargs):
    """Enter ``local_cluster(**kwargs)``; returns ``(context, address)``. A cluster that cannot
    start skips the test on a developer's machine and fails it under CI."""
    context = local_cluster(**kwargs)
    try:
        return context, context.__enter__()
    except CANNOT_START as err:
        if in_ci():
            raise
        pytest.skip(f"a local Ray cluster cannot start here ({type(err).__name__}: {err})")


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each."""
    context, address = start_or_skip(nodes=2, cpus_per_node=1)
    yield address
    context.__exit__(None, None, None)
    assert cluster_nodes(address) == []                    # both nodes stopped


def test_a_stopped_cluster_leaves_no_trace_for_a_local_run(tmp_path):
    """`ray start --head` records its address where a plain ray.init() would find it (and hang
    on the stopped head): the helper restores that record, and a local run starts its own Ray."""
    import tempfile
    from pathlib import Path

    marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = marker.read_bytes() if marker.exists() else None
    context, address = start_or_skip(nodes=1)
    try:
        assert cluster_nodes(address)
    finally:
        context.__exit__(None, None, None)
    assert (marker.read_bytes() if marker.exists() else None) == before
    # a local run (its own process, as a user's) starts a Ray of its own instead of waiting for the head
    code = "from recbole_tru.cluster import parallel_map, probe; print(len(parallel_map(probe, None, [0.0], num_cpus=1)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(PACKAGE_ROOT))
    assert run.returncode == 0 and run.stdout.strip().endswith("1"), run.stderr[-2000:]


def test_a_process_that_ran_a_local_ray_drives_the_cluster(tmp_path):
    """A local ray.init() turns Ray's token authentication on for its whole process, and it
    stays on after ray.shutdown(): the cluster's nodes take that mode, so the same process then
    drives them (with nodes left without a token, its tasks failed with OwnerDiedError). In a
    process of its own: the mode is process-wide state. A cluster that cannot start exits 3
    (start_or_skip's rule: skip on a developer's machine, fail under CI)."""
    code = ("import os, sys, ray\n"
            "from recbole_tru.cluster import init_kwargs, local_cluster, parallel_map, probe, cluster_nodes\n"
            "ray.init(**init_kwargs(num_cpus=1)); ray.shutdown()\n"
            "print('mode', os.environ.get('RAY_AUTH_MODE'))\n"
            "context = local_cluster(nodes=2, cpus_per_node=1)\n"
            "try:\n"
            "    address = context.__enter__()\n"
            f"except ({', '.join(e.__name__ for e in CANNOT_START)}) as err:\n"
            "    print(type(err).__name__, err, file=sys.stderr); sys.exit(3)\n"
            "try:\n"
            "    ran = parallel_map(probe, None, [1.0] * 4, address=address)\n"
            "    print('nodes', len({r for r in ran if r}), len(cluster_nodes(address)))\n"
            "finally:\n"
            "    context.__exit__(None, None, None)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=str(PACKAGE_ROOT), env=env)
    if run.returncode == 3 and not in_ci():
        pytest.skip(f"a local Ray cluster cannot start here ({run.stderr.strip()[-500:]})")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert "mode token" in lines                      # the premise: the local Ray left token mode on
    assert lines[-1] == "nodes 2 2"


def node_ids(values):
    return {v for v in values if v}


def test_tasks_spread_over_both_nodes(cluster):
    assert len(cluster_nodes(cluster)) == 2
    ran_on = parallel_map(probe, None, [1.0] * 4, address=cluster)
    assert len(node_ids(ran_on)) == 2


def run_cli(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(PACKAGE_ROOT / "run_recbole_tru.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


TINY_ARGS = ["--model=VBPR", f"--dataset={TINY}", "--modalities={'text':'textfeat','meta':'metafeat'}",
             "--load_col={'inter':['user_id','item_id','timestamp']}", "--embedding_size=8", "--epochs=2",
             "--train_batch_size=256", "--use_gpu=False", "--seed=7", "--state=WARNING"]


def test_a_sweep_on_the_cluster_runs_trials_on_both_nodes(cluster, tiny_root, tmp_path):
    (tmp_path / "space.yaml").write_text("tru_learning_rate: loguniform [0.001, 0.01]\ntru_repair_epochs: 1\n"
                                         "tune_num_samples: 4\ntune_grace_period: 1\n")
    run = run_cli([*TINY_ARGS, "--unlearn=tru", "--tune=space.yaml", f"--data_path={tiny_root}", "--output_dir=out",
                   f"--ray_address={cluster}"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    (folder,) = (tmp_path / "out").glob("sweep-tru-VBPR-*")
    with open(folder / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] in ("finished", "stopped") for r in rows)
    assert all(r["node_id"] for r in rows)                    # every trial, finished or stopped early, says where
    assert node_ids(r["node_id"] for r in rows) <= set(cluster_nodes(cluster))
    assert len(node_ids(r["node_id"] for r in rows)) == 2


def test_sisa_on_the_cluster_trains_shards_on_both_nodes(cluster, tiny_root, tmp_path, monkeypatch):
    from recbole_tru.quick_start import run_recbole_tru

    monkeypatch.chdir(tmp_path)
    params = {**TINY_CONFIG, "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path / "saved"),
              "output_dir": str(tmp_path / "out"), "forget_regime": "interaction", "unlearn": "sisa",
              "sisa_parallel": True, "ray_address": cluster, "audit_enabled": False}
    results = run_recbole_tru(model="VBPR", dataset=TINY, config_dict=params, read_cmd_line=False)
    log = results["methods"]["sisa"]["details"]["log"]
    shards = [entry for entry in log if entry.get("phase") in ("original", "retrain")]
    assert len([e for e in shards if e["phase"] == "original"]) == 4
    assert node_ids(e["node_id"] for e in shards) <= set(cluster_nodes(cluster))
    assert len(node_ids(e["node_id"] for e in shards)) == 2
