"""Ray for recbole-tru: a local instance or an existing cluster, and parallel tasks.

``ray_address`` (config key) empty: a local Ray instance is started with ``num_cpus`` CPUs and
no dashboard, and shut down afterwards. ``ray_address`` set (``auto``, ``host:6379`` or
``ray://host:10001``): the run attaches to that cluster and leaves it running. If Ray is already
initialised in this process (a notebook, a test), that session is used as it is.

Workers do not inherit the driver's ``sys.path`` or monkeypatches. Every Ray function of the
plugin lives in a ``recbole_tru`` module, so a worker imports ``recbole_tru`` (which applies
:mod:`recbole_tru.compat`) before it runs; the package reaches the workers through the job's
``runtime_env``: ``PYTHONPATH`` on this machine, ``py_modules`` (an upload) on a cluster.
Paths handed to workers are absolute; on a cluster they must be on storage every node sees.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

import recbole_tru

PACKAGE_DIR = Path(recbole_tru.__file__).resolve().parent


def runtime_env(address):
    """How workers find the ``recbole_tru`` package."""
    if address:
        return {"py_modules": [str(PACKAGE_DIR)]}
    paths = [str(PACKAGE_DIR.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def init_kwargs(address=None, num_cpus=None):
    """``ray.init`` arguments: attach to ``address``, or start a local instance."""
    kwargs = {"runtime_env": runtime_env(address), "log_to_driver": False}
    if address:
        return {"address": address, **kwargs}
    # address "local": always a new instance, never a cluster that `ray start` left on this machine
    # (Ray's default attaches to the last one started, even after it stopped)
    return {"address": "local", "num_cpus": num_cpus, "include_dashboard": False, **kwargs}


@contextlib.contextmanager
def ray_session(address=None, num_cpus=None):
    """Ray for the duration of the block; shuts down only what it started."""
    if ray.is_initialized():
        yield
        return
    ray.init(**init_kwargs(address, num_cpus))
    try:
        yield
    finally:
        ray.shutdown()


def node_id():
    """The Ray node this code runs on (hex id), or None outside Ray: results that ran as Ray
    tasks or trials record it, so a run on a cluster shows where its work went."""
    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def probe(shared, seconds):
    """A task that holds its CPU for ``seconds`` and says on which node it ran (tests, checks)."""
    time.sleep(seconds)
    return node_id()


def parallel_map(fn, shared, items, address=None, num_cpus=None):
    """``[fn(shared, item) for item in items]`` as Ray tasks of one CPU each (``shared`` is put
    in the object store once). ``fn`` must be a module-level function of ``recbole_tru``."""
    with ray_session(address, num_cpus):
        task = ray.remote(num_cpus=1)(fn)
        shared_ref = ray.put(shared)
        return ray.get([task.remote(shared_ref, item) for item in items])


def _ray_command():
    """The ``ray`` command of this Python environment."""
    found = Path(sys.executable).with_name("ray")
    if found.exists():
        return [str(found)]
    on_path = shutil.which("ray")
    if on_path is None:
        raise FileNotFoundError(f"no 'ray' command beside {sys.executable} or on PATH (pip install 'ray[tune]')")
    return [on_path]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_nodes(address):
    """Node ids of the alive nodes of the cluster at ``address`` (``ray status``'s Active list)."""
    run = subprocess.run([*_ray_command(), "status", f"--address={address}"], capture_output=True, text=True,
                         timeout=60, env=_cluster_env())
    if run.returncode != 0:
        return []
    active = run.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return [word[len("node_"):] for word in active.split() if word.startswith("node_")]   # hex ids, as Ray's API


def _cluster_env():
    # The nodes take this process's authentication mode, so that it can drive them: "token" once
    # this process started a local Ray (ray.init() turns token authentication on for the whole
    # process, and it stays on after ray.shutdown(): a driver in token mode cannot serve the
    # objects it owns to nodes without it, OwnerDiedError), else off (a driver reads its auth
    # settings when it imports Ray, so a token made here would not reach one already running).
    # Ray's processes listen on every interface (only the advertised address is the loopback
    # one): without a token, use this cluster on a machine whose ports are closed to untrusted
    # networks (a CI runner, a workstation behind a firewall)
    mode = "token" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "disabled"
    return {**os.environ, "RAY_AUTH_MODE": mode, "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def local_cluster(nodes=2, cpus_per_node=1, timeout=180):
    """A Ray cluster of ``nodes`` nodes on this machine, addressed by the loopback address:
    ``ray start --head`` and ``nodes - 1`` times ``ray start --address=...``, each with
    ``--block`` (so terminating the command stops that node and only it), token authentication
    off (see :func:`_cluster_env`: for machines closed to untrusted networks). Yields the address
    to pass as ``ray_address``; every node is stopped afterwards, also on error. What a real cluster needs
    beyond this (shared storage, the same environment on every machine): docs/operations.md."""
    if nodes < 1:
        raise ValueError(f"a cluster needs at least one node, got nodes={nodes}")
    address = f"127.0.0.1:{free_port()}"
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={int(cpus_per_node)}", "--num-gpus=0", "--block",
              "--disable-usage-stats"]
    procs = []
    marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"    # what `ray start --head` records
    before = marker.read_bytes() if marker.exists() else None
    try:
        head = [*_ray_command(), "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false", *common]
        procs.append(_start(head))
        _wait_for(address, 1, procs, timeout)
        for _ in range(nodes - 1):
            procs.append(_start([*_ray_command(), "start", f"--address={address}", *common]))
        _wait_for(address, nodes, procs, timeout)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.log.close()
        if before is None:                  # a plain ray.init() elsewhere must not find the stopped head
            marker.unlink(missing_ok=True)
        else:
            marker.write_bytes(before)


def _start(command):
    log = tempfile.TemporaryFile()          # the node's own output, read back only if it fails
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_cluster_env())
    proc.log = log
    return proc


def _wait_for(address, count, procs, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failed = [p for p in procs if p.poll() is not None]
        if failed:
            failed[0].log.seek(0)
            err = failed[0].log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"a Ray node of the local cluster at {address} exited ({failed[0].returncode}): {err}")
        if len(cluster_nodes(address)) >= count:
            return
        time.sleep(1.0)
    raise TimeoutError(f"the local Ray cluster at {address} did not reach {count} node(s) in {timeout} s")
