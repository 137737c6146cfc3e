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
    return {"num_cpus": num_cpus, "include_dashboard": False, **kwargs}


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


def parallel_map(fn, shared, items, address=None, num_cpus=None):
    """``[fn(shared, item) for item in items]`` as Ray tasks of one CPU each (``shared`` is put
    in the object store once). ``fn`` must be a module-level function of ``recbole_tru``."""
    with ray_session(address, num_cpus):
        task = ray.remote(num_cpus=1)(fn)
        shared_ref = ray.put(shared)
        return ray.get([task.remote(shared_ref, item) for item in items])
