"""The layers of the package (``.importlinter``) hold: no module imports a higher layer."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the [test] extra")


def lint(package_parent):
    """``lint-imports`` on the ``recbole_tru`` found in ``package_parent`` (a fresh process: this
    one has the package imported already). Returns ``(exit status, output)``."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / '.importlinter')!r}, no_cache=True))")
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    done = subprocess.run([sys.executable, "-c", code], cwd=package_parent, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def test_layers_contract_is_kept():
    status, output = lint(ROOT)
    assert status == 0, output


def test_contract_catches_an_upward_import(tmp_path):
    """The instrument works: the audit importing the unlearning layer breaks the contract."""
    shutil.copytree(ROOT / "recbole_tru", tmp_path / "recbole_tru", ignore=shutil.ignore_patterns("__pycache__"))
    shadow = tmp_path / "recbole_tru" / "audit" / "shadow.py"
    shadow.write_text(shadow.read_text() + "\nfrom recbole_tru.unlearn import pipeline  # noqa\n")
    status, output = lint(tmp_path)
    assert status == 1 and "recbole_tru.audit.shadow -> recbole_tru.unlearn.pipeline" in output, output
