"""Backbone tuning on validation (recbole_tru.tune.backbone, benchmarks/backbones.py) and the
per-model tuned property layer ``properties/dataset/<dataset>/<model>.yaml``."""
import importlib.util
import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY, TINY_CONFIG
from recbole_tru import config as config_module
from recbole_tru.config import Config
from recbole_tru.tune.backbone import domains, select, settings
from recbole_tru.tune.space import SearchSpaceError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("backbones_benchmark", BENCHMARKS / "backbones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_space_uses_the_sweep_notation_and_refuses_a_plain_value():
    found, specs = domains({"learning_rate": "loguniform [0.0003, 0.01]", "embedding_size": "choice [32, 64]"})
    assert specs == {"learning_rate": ("loguniform", [0.0003, 0.01]), "embedding_size": ("choice", [32, 64])}
    assert set(found) == {"learning_rate", "embedding_size"}
    with pytest.raises(ValueError, match="key 'reg_weight': expected '<distribution> \\[arguments\\]'"):
        domains({"reg_weight": "0.001"})
    with pytest.raises(SearchSpaceError, match="unknown distribution 'logunifrom'"):
        domains({"learning_rate": "logunifrom [0.001, 0.01]"})


def test_content_width_follows_the_id_width_only_where_the_model_has_it():
    vbpr_keys = ["embedding_size", "content_embedding_size", "reg_weight"]
    assert settings({"embedding_size": 32}, vbpr_keys) == {"embedding_size": 32, "content_embedding_size": 32}
    assert settings({"embedding_size": 32}, ["embedding_size", "latent_dim"]) == {"embedding_size": 32, "latent_dim": 32}
    assert settings({"embedding_size": 32}, ["embedding_size"]) == {"embedding_size": 32}
    # a width searched on its own is kept
    assert settings({"embedding_size": 32, "content_embedding_size": 16}, vbpr_keys)["content_embedding_size"] == 16


def test_selection_is_the_best_finished_trial():
    rows = [{"status": "finished", "best_valid": 0.20, "id": "a"},
            {"status": "stopped early (ASHA)", "best_valid": 0.30, "id": "b"},
            {"status": "error", "best_valid": None, "id": "c"},
            {"status": "finished", "best_valid": 0.25, "id": "d"}]
    assert select(rows)["id"] == "d"
    with pytest.raises(RuntimeError, match="No trial finished"):
        select(rows[1:3])


def test_tuned_property_file_sits_between_the_data_set_file_and_config_files(tmp_path, tiny_root, monkeypatch):
    copy = tmp_path / "properties"
    shutil.copytree(config_module.PROPERTIES, copy)
    (copy / "dataset" / TINY).mkdir(parents=True)
    (copy / "dataset" / TINY / "VBPR.yaml").write_text("learning_rate: 0.0042\nreg_weight: 0.003\n")
    monkeypatch.setattr(config_module, "PROPERTIES", copy)
    names = [p.relative_to(copy).as_posix() for p in config_module.plugin_property_files("VBPR", TINY)]
    assert names[:3] == ["overall.yaml", "model/VBPR.yaml", f"dataset/{TINY}/VBPR.yaml"]

    def make(model, **extra):
        return Config(model=model, dataset=TINY, read_cmd_line=False,
                      config_dict={**TINY_CONFIG, "data_path": str(tiny_root), **extra})

    vbpr = make("VBPR")
    assert vbpr["learning_rate"] == 0.0042 and vbpr["reg_weight"] == 0.003
    assert make("BPR")["learning_rate"] == 0.001                  # another model keeps the defaults
    assert make("VBPR", learning_rate=0.01)["learning_rate"] == 0.01   # config_dict still wins


def test_cold_ndcg_matches_a_hand_computed_value():
    """Items 1..6; training counts 2, 2, 1, 1, 0, 0, so the cold half is items 5, 6, 3.
    User 1 (trained on 3): its cold test item 5 ranks 2nd of {6, 5} -> 1 / log2(3).
    User 2: cold test items 3 and 6 rank 1st and 3rd of {3, 5, 6} -> (1 + 1/2) / (1 + 1/log2(3)).
    User 1's test item 4 is not cold and is left out."""
    benchmark = load_benchmark()

    def split(pairs):
        users, items = zip(*pairs)
        feat = {"user_id": torch.tensor(users), "item_id": torch.tensor(items)}
        return SimpleNamespace(dataset=SimpleNamespace(inter_feat=feat, uid_field="user_id", iid_field="item_id",
                                                       item_num=7, user_num=3))

    train = split([(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 4)])
    test = split([(1, 5), (1, 4), (2, 3), (2, 6)])
    table = torch.tensor([[0.0] * 7,
                          [0, 9, 9, 9, 9, 1, 2],          # user 1: 6 above 5
                          [0, 9, 9, 3, 9, 2, 1]])         # user 2: 3 > 5 > 6

    class Scores(torch.nn.Module):
        USER_ID, device = "user_id", torch.device("cpu")

        def full_sort_predict(self, interaction):
            return table[interaction["user_id"]].reshape(-1)

    ndcg, users = benchmark.cold_ndcg(Scores(), train, test)
    expected = (1 / math.log2(3) + 1.5 / (1 + 1 / math.log2(3))) / 2
    assert users == 2 and ndcg == pytest.approx(expected)


def test_benchmark_searches_selects_and_writes_the_tuned_defaults(tiny_root, tmp_path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)
    properties = tmp_path / "properties"
    extra = {**TINY_CONFIG, "data_path": str(tiny_root)}
    benchmark = load_benchmark()
    report = benchmark.main(["--models", "VBPR", "--dataset", TINY, "--samples", "2", "--epochs", "2",
                                    "--seeds", "1,2", "--config", json.dumps(extra), "--out", str(tmp_path / "r"),
                                    "--write-properties", "--properties", str(properties)])
    search = report["search"]["VBPR"]
    assert len(search["trials"]) == 2 and all(r["best_valid"] is not None for r in search["trials"])
    chosen = search["params"]
    assert set(chosen) == {"learning_rate", "embedding_size", "reg_weight"}
    # the tied width is applied, and the selected trial is the best finished one
    assert all(r["content_embedding_size"] == r["embedding_size"] for r in search["trials"])
    assert search["selected"]["best_valid"] == max(r["best_valid"] for r in search["trials"]
                                                   if r["status"] == "finished")
    # the default changes only where the pick beats the untuned settings on validation (mean over seeds)
    choice = report["choice"]["VBPR"]
    valid = {c["variant"]: c["valid_ndcg@20"]["mean"] for c in report["cells"]}
    assert choice["variant"] == ("tuned" if valid["tuned"] > valid["untuned"] else "untuned")
    target = properties / "dataset" / TINY / "VBPR.yaml"
    assert target.is_file() == (choice["variant"] == "tuned")
    # the file as it is written for a tuned choice (forced here whatever the tiny run chose)
    report["choice"] = {"VBPR": {"variant": "tuned"}}
    benchmark.write_properties(report, ["VBPR"], properties, "backbones")
    written = yaml.safe_load(target.read_text())
    assert written == pytest.approx({**chosen, "content_embedding_size": chosen["embedding_size"]})
    # in the house style of properties/: every key with a '# (type) ...' comment (tests/test_config.py)
    keys = [line for line in target.read_text().splitlines() if line and not line.startswith("#")]
    assert len(keys) == 4 and all(re.search(r"#\s*\((float|int)\)\s+\S", line) for line in keys), keys
    report["choice"] = {"VBPR": {"variant": "untuned"}}
    benchmark.write_properties(report, ["VBPR"], properties, "backbones")
    assert not target.exists()                                   # an untuned choice leaves no file
    cells = {c["variant"]: c for c in report["cells"]}
    assert set(cells) == {"untuned", "tuned"} and cells["tuned"]["params"] == chosen
    assert cells["untuned"]["ndcg@20"]["n"] == 2 and 0 <= cells["tuned"]["cold_ndcg@20"]["mean"] <= 1
    assert all(r["epochs"] <= 2 for r in report["runs"])
    out = tmp_path / "r"
    for name in ("backbones.md", "backbones.csv", "backbones.json", "backbones.png", "backbones_trials.csv"):
        assert (out / name).is_file(), name
    assert "| VBPR | tuned:" in (out / "backbones.md").read_text()
    assert np.isfinite([float(r["ndcg@20"]) for r in report["runs"]]).all()


# --------------------------------------------------------------------------- --tune without --unlearn

def test_shipped_backbone_space_parses_as_a_backbone_search():
    from recbole_tru.config import PACKAGE_ROOT
    from recbole_tru.tune.space import BACKBONE, load_search_space

    config = Config(model="VBPR", dataset="ml-100k-mm", config_dict={"state": "WARNING"}, read_cmd_line=False)
    space = load_search_space("properties/tune/backbone.yaml", config, PACKAGE_ROOT)
    assert space.method == BACKBONE
    assert set(space.domains) == {"learning_rate", "embedding_size", "reg_weight"}
    assert space.settings["tune_num_samples"] == 12 and space.settings["tune_reduction_factor"] == 3


@pytest.mark.parametrize("line, message", [
    ("eval_args: choice [a, b]", r"key 'eval_args' is a Evaluation setting"),
    ("seed: choice [1, 2]", r"key 'seed' is a General setting"),
    ("epochs: choice [10, 20]", r"key 'epochs' is a run setting"),
    ("model_seed: choice [1, 2]", r"key 'model_seed' is a run setting"),
    ("modalities: choice [a]", r"key 'modalities' is a Dataset setting"),
    ("reg_wieght: choice [0.0, 0.1]", r"unknown key 'reg_wieght' \(did you mean reg_weight\?\): VBPR has no such setting"),
])
def test_a_backbone_space_refuses_data_split_and_evaluation_keys(make_config, tmp_path, line, message):
    from recbole_tru.config import PACKAGE_ROOT
    from recbole_tru.tune.space import load_search_space

    path = tmp_path / "space.yaml"
    path.write_text(f"learning_rate: loguniform [0.001, 0.01]\n{line}\n")
    with pytest.raises(SearchSpaceError, match=message) as err:
        load_search_space(str(path), make_config(model="VBPR"), PACKAGE_ROOT)
    assert str(path) in str(err.value)


def test_backbone_search_from_the_command_line(tiny_root, tmp_path):
    """``--tune`` without ``--unlearn``: trials, best.yaml that --config_files accepts, the plot."""
    import csv
    import os
    import subprocess
    import sys

    from recbole_tru.config import PACKAGE_ROOT

    (tmp_path / "space.yaml").write_text("learning_rate: loguniform [0.001, 0.01]\nreg_weight: choice [0.0, 1e-05]\n"
                                         "tune_num_samples: 2\ntune_grace_period: 1\n")
    args = ["--model=VBPR", f"--dataset={TINY}", "--tune=space.yaml", f"--data_path={tiny_root}", "--output_dir=out",
            "--modalities={'text':'textfeat','meta':'metafeat'}", "--load_col={'inter':['user_id','item_id','timestamp']}",
            "--embedding_size=8", "--content_embedding_size=8", "--epochs=2", "--train_batch_size=256",
            "--use_gpu=False", "--seed=7", "--state=WARNING"]
    run = subprocess.run([sys.executable, str(PACKAGE_ROOT / "run_recbole_tru.py"), *args], cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    folders = list((tmp_path / "out").glob("sweep-backbone-VBPR-*"))
    assert len(folders) == 1 and f"sweep written to {folders[0]}" in run.stdout
    out = folders[0]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2 and all(r["status"] in ("finished", "stopped early (ASHA)") for r in rows)
    assert all(0.001 <= float(r["learning_rate"]) <= 0.01 and int(r["epochs_run"]) <= 2 for r in rows)
    finished = [r for r in rows if r["status"] == "finished"]
    best = max(finished, key=lambda r: float(r["best_valid"]))
    chosen = yaml.safe_load((out / "best.yaml").read_text())
    assert set(chosen) == {"learning_rate", "reg_weight"}        # no tied width: embedding_size is not searched
    config = Config(model="VBPR", dataset=TINY, config_file_list=[str(out / "best.yaml")], read_cmd_line=False,
                    config_dict={**TINY_CONFIG, "data_path": str(tiny_root)})
    assert config["learning_rate"] == pytest.approx(float(best["learning_rate"]))
    assert config["reg_weight"] == pytest.approx(float(best["reg_weight"]))
    assert (out / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "backbone search: 2 trials" in run.stdout
    # the first trial ran at the run's own settings (learning_rate 0.001, reg_weight 1e-05 of VBPR's defaults)
    first = next(r for r in rows if r["trial"] == "0")
    assert float(first["learning_rate"]) == pytest.approx(0.001) and float(first["reg_weight"]) == pytest.approx(1e-05)
