"""One-epoch smoke tests through the entry point: every model trains, validates and tests on
the tiny data set; the command line works and rejects unknown models."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, TINY_CONFIG
from recbole_tru.quick_start import run_recbole_tru

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run_recbole_tru.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tiny_dict(tiny_root, tmp_path, **overrides):
    return {**TINY_CONFIG, "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path / "saved"),
            "output_dir": str(tmp_path / "outputs"), "epochs": 1, **overrides}


@pytest.mark.parametrize("model", ["VBPR", "MMGCN", "BPR", "LightGCN"])
def test_one_epoch_in_process(model, tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run_recbole_tru(model=model, dataset=TINY, config_dict=tiny_dict(tiny_root, tmp_path),
                          read_cmd_line=False)
    summary, test = out["summary"], out["test_result"]
    assert summary["epochs"] == 1 and summary["best_epoch"] == 0
    assert set(test) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    for key, value in test.items():
        assert 0.0 <= value <= 1.0, key
    assert test["recall@10"] <= test["recall@20"]                # more cut-off, no fewer hits
    assert summary["best_valid_score"] == pytest.approx(summary["best_valid_result"]["ndcg@20"])
    assert not list((tmp_path / "saved").glob("*.pth"))           # the fit's checkpoint is private


def run_cli(args, cwd, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_trains_and_reports_test_metrics(tiny_root, tmp_path):
    args = ["--model=VBPR", f"--dataset={TINY}", f"--data_path={tiny_root}", "--epochs=1",
            "--modalities={'text':'textfeat','meta':'metafeat'}",
            "--load_col={'inter':['user_id','item_id','timestamp']}",
            "--embedding_size=8", "--content_embedding_size=8", "--train_batch_size=256",
            "--show_progress=False", "--use_gpu=False", "--state=INFO", "--seed=7"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = ANSI.sub("", result.stdout + result.stderr)
    line = re.search(r"test result\s*:\s*(\{.*\})", log)
    assert line, log[-3000:]
    assert "np.float64(" not in log                              # result lines print plain numbers
    metrics = {k: float(v) for k, v in re.findall(r"'([a-z]+@\d+)': ([0-9.e-]+)", line.group(1))}
    assert set(metrics) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    # the command line reached the config: one epoch, the tiny embedding sizes
    assert "epoch 0 training" in log and "epoch 1 training" not in log
    assert re.search(r"user_embedding\): Embedding\(41, 8\)", log)
    assert list((tmp_path / "log").rglob("*.log"))               # RecBole's log in the cwd


def test_cli_unknown_model_exits_non_zero_listing_models(tmp_path):
    result = run_cli(["--model=VPBR"], tmp_path)
    assert result.returncode != 0
    assert "Unknown model 'VPBR'" in result.stderr
    assert "Did you mean VBPR" in result.stderr
    known = result.stderr.split("Known models:")[1]
    assert all(re.search(rf"\b{m}\b", known) for m in ("VBPR", "MMGCN", "BPR", "LightGCN"))
    assert "lightgbm" not in result.stderr.lower()
