"""What a figure was measured on: package versions, threads, CPU and BLAS.

Every ``results.json`` (unlearning runs, the benchmarks) carries :func:`environment`, so a figure
that does not reproduce can be traced to a different install or machine.
"""
import os
import platform
import re
import sys
from importlib import metadata

PACKAGES = ("torch", "numpy", "scipy", "pandas", "recbole", "ray", "scikit-learn")
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas():
    """The BLAS libraries loaded in this process (threadpoolctl: API, version, threads, kernel)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def _torch_blas(torch):
    """The BLAS torch was built with (``BLAS_INFO`` of ``torch.__config__.show()``)."""
    match = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return match.group(1) if match else None


def environment():
    """A JSON-ready record of the interpreter, packages, threads, CPU and BLAS."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": {name: _version(name) for name in PACKAGES},
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_blas": _torch_blas(torch),
        "blas": blas(),
        "env": {k: os.environ[k] for k in BLAS_VARIABLES if k in os.environ},
    }
