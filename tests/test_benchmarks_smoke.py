"""Each ml-100k-mm benchmark script runs end to end at a tiny size, so it cannot rot (the scale
benchmark's smoke test is in test_scale_smoke.py, the sweep's in test_tune.py)."""
import importlib.util
import json
from pathlib import Path

import pytest

from conftest import TINY, TINY_CONFIG

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny(tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {**TINY_CONFIG, "data_path": str(tiny_root), "epochs": 1, "stopping_step": 1,
              "finetune_epochs": 1, "gradascent_epochs": 1, "reverse_epochs": 1, "tru_epochs": 1,
              "tru_repair_epochs": 1, "sisa_shards": 2, "audit_enabled": False}
    return ["--dataset", TINY, "--config", json.dumps(config)]


def test_training_benchmark(tiny, tmp_path):
    report = load("training").main(["--models", "BPR,VBPR (text only)", "--out", str(tmp_path / "r"), *tiny])
    assert list(report["rows"]) == ["BPR", "VBPR (text only)"]
    for row in report["rows"].values():
        assert row["epochs"] == 1 and 0 <= row["ndcg@20"] <= 1 and row["peak_rss_mb"] > 0
    assert "| VBPR (text only) |" in (tmp_path / "r" / "training.md").read_text()


def test_unlearning_benchmark_with_ablation(tiny, tmp_path):
    module = load("unlearning")
    report = module.main(["--models", "VBPR", "--regimes", "interaction", "--out", str(tmp_path / "r"), *tiny])
    (cell,) = report["cells"]
    assert set(cell["results"]["methods"]) >= set(module.METHODS)
    assert set(report["ablations"]["VBPR"]["variants"]) == set(module.ABLATIONS)
    for name in ("unlearning.json", "unlearning.md", "unlearning_tradeoff.png"):
        assert (tmp_path / "r" / name).is_file(), name
    assert "| VBPR | interaction | tru |" in (tmp_path / "r" / "unlearning.md").read_text()


def test_calibration_benchmark(tiny, tmp_path):
    module = load("calibration")
    report = module.main(["--models", "VBPR", "--regimes", "user", "--out", str(tmp_path / "r"), *tiny])
    assert report["forget_seed"] == module.CALIBRATION_SEED
    assert (tmp_path / "r" / "calibration.md").is_file()
