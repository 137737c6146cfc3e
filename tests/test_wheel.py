"""The package as a user installs it: ``pip install .`` (a wheel, not editable) into a fresh
virtual environment; then, from another directory, the console script runs the main job
(``run_recbole_tru --model=MMGCN --unlearn=tru``, on a short schedule) on the embedded data set.
The installed package must find its own ``properties/`` and ``dataset/ml-100k-mm`` (shipped
inside it, see setup.py), and write its outputs into the working directory, as RecBole does.

Nothing is downloaded: the new environment reuses this one's packages (a ``.pth`` file naming
this environment's site-packages) and the build uses this environment's setuptools
(``--no-build-isolation``, ``--no-index``). The build runs on a copy of what setup.py builds
from, so it never writes ``build/`` or ``*.egg-info`` into the repository.
"""
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# what the wheel is built from (setup.py's inputs); OPTIONAL ones are copied when they exist
SOURCES = ["setup.py", "README.md", "recbole_tru", "properties", "dataset"]
OPTIONAL = ["pyproject.toml", "setup.cfg", "MANIFEST.in"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the main job on a short schedule (about 20 s on 2 cores): one epoch for the original and the
# retrained model, one for TRU, no repair, no membership audit
FAST = ["--epochs=1", "--tru_epochs=1", "--tru_repair_epochs=0", "--audit_enabled=False",
        "--embedding_size=8", "--latent_dim=8", "--show_progress=False", "--use_gpu=False"]


def offline_build_missing():
    """Why a wheel cannot be built here without the network, or None."""
    for module in ("pip", "setuptools", "venv"):
        if importlib.util.find_spec(module) is None:
            return f"'{module}' is not installed in this environment"
    version = importlib.metadata.version("setuptools")       # (importing it here would clash with distutils)
    major, minor = (int(x) for x in re.findall(r"\d+", version)[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {version} needs the 'wheel' package to build a wheel"
    return None


def run(args, cwd, timeout):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)          # only the new environment's recbole_tru may be found
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with the project installed from a wheel: its bin folder."""
    reason = offline_build_missing()
    if reason:
        pytest.skip(f"cannot build the wheel offline: {reason}")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES + [n for n in OPTIONAL if (REPO / n).exists()]:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    venv = tmp / "venv"
    done = run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, 120)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    site_dir = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp, 60).stdout.strip())
    parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_dir / "_recbole_tru_test_parent.pth").write_text("\n".join(parents) + "\n", encoding="utf-8")
    # pip comes from this environment (through the .pth) and installs into the new one;
    # --ignore-installed: this environment's own recbole_tru is neither looked at nor touched
    done = run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
                "--ignore-installed", src], tmp, 300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv / "bin"


def test_the_installed_package_is_imported_with_its_data(installed, tmp_path):
    code = ("import json, recbole_tru, recbole_tru.config as c; "
            "print(json.dumps({'file': recbole_tru.__file__, 'root': str(c.PACKAGE_ROOT), "
            "'properties': str(c.PROPERTIES), 'datasets': str(c.DATASETS)}))")
    done = run([installed / "python", "-c", code], tmp_path, 120)
    assert done.returncode == 0, done.stderr
    where = json.loads(done.stdout.strip().splitlines()[-1])
    venv = installed.parent.resolve()
    package = Path(where["file"]).resolve().parent
    assert package.is_relative_to(venv), where                    # not the repository's copy
    assert Path(where["root"]) == package                          # properties/ and dataset/ inside it
    assert (Path(where["properties"]) / "overall.yaml").is_file()
    # every property file ships, the per-model tuned ones (properties/dataset/<dataset>/<model>.yaml) included
    assert sorted(p.relative_to(where["properties"]).as_posix() for p in Path(where["properties"]).rglob("*.yaml")) == \
        sorted(p.relative_to(REPO / "properties").as_posix() for p in (REPO / "properties").rglob("*.yaml"))
    shipped = sorted(p.name for p in (Path(where["datasets"]) / "ml-100k-mm").iterdir())
    assert shipped == sorted(p.name for p in (REPO / "dataset" / "ml-100k-mm").iterdir())


def test_console_script_runs_the_main_job_from_another_directory(installed, tmp_path):
    script = installed / "run_recbole_tru"
    assert script.is_file()
    done = run([script, "--model=MMGCN", "--unlearn=tru", *FAST], tmp_path, 600)
    out = ANSI.sub("", done.stdout)
    log = ANSI.sub("", done.stderr)
    assert done.returncode == 0, (out + log)[-4000:]
    # the results table, with plain numbers
    assert "MMGCN on ml-100k-mm" in out
    assert re.search(r"^tru\s+0\.\d{4}\s+0\.\d{4}", out, re.M), out
    assert "np.float64(" not in out + log
    # the embedded data set of the INSTALLED package was read
    package = installed.parent.resolve() / "lib"
    data_path = re.search(r"data_path = (\S+)", log).group(1)
    assert Path(data_path).resolve().is_relative_to(package) and data_path.endswith("ml-100k-mm"), data_path
    # outputs in the working directory, as RecBole's
    runs = list((tmp_path / "outputs").glob("MMGCN-ml-100k-mm-interaction-*"))
    assert len(runs) == 1, sorted(p.name for p in tmp_path.rglob("*"))[:50]
    results = json.loads((runs[0] / "results.json").read_text(encoding="utf-8"))
    assert set(results["methods"]) == {"tru"}
    assert 0.0 <= results["methods"]["tru"]["retain"]["ndcg@20"] <= 1.0
    assert (runs[0] / "results.csv").is_file() and (runs[0] / "forget.inter").is_file()
    assert list((tmp_path / "log").rglob("*.log"))
    assert not list(package.rglob("outputs")) and not list(package.rglob("*.cache.npz"))
