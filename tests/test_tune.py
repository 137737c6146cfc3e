"""Sweeps: search-space files parse to Ray Tune domains and fail clearly on unknown keys and
distributions; Pareto front and selection; Ray's init arguments; a tiny sweep end to end through
the entry point (trials.csv, best.yaml that Config accepts, pareto.png, judged.json); a failing
trial keeps the finished trials' results; the benchmark script's smoke run. The Ray tests start
one local Ray instance for the module, or skip with the reason Ray could not start."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

from conftest import TINY, TINY_CONFIG
from recbole_tru.cluster import init_kwargs
from recbole_tru.config import PACKAGE_ROOT, Config
from recbole_tru.quick_start import run_recbole_tru
from recbole_tru.tune.report import pareto_front, select_best
from recbole_tru.tune.space import SearchSpaceError, load_search_space

BENCHMARKS = PACKAGE_ROOT / "benchmarks"


def write_space(folder, text, name="space.yaml"):
    path = Path(folder) / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- search-space files

def test_search_space_parses_every_distribution(make_config, tmp_path):
    path = write_space(tmp_path, """
tru_learning_rate: loguniform [1e-4, 1e-2]   # YAML reads 1e-4 as a string: it is a number here
tru_forget_weight: uniform [0.25, 2.0]
tru_temperature: quniform [0.25, 1.0, 0.25]
tru_epochs: randint [2, 8]
tru_repair_epochs: qrandint [0, 4, 2]
tru_check_steps: lograndint [1, 16]
tru_budget: choice [0.5, 1.0]
tru_stop: choice [guarded, epochs]
tru_alpha_min: grid [0.05, 0.1]
tru_stop_metric: ks
tune_num_samples: 3
""")
    space = load_search_space(str(path), make_config(unlearn="tru"), PACKAGE_ROOT)
    d = space.domains
    assert space.method == "tru"
    assert isinstance(d["tru_learning_rate"], Float) and d["tru_learning_rate"].lower == 1e-4
    assert "LogUniform" in type(d["tru_learning_rate"].get_sampler()).__name__
    assert isinstance(d["tru_temperature"], Float) and d["tru_temperature"].get_sampler().q == 0.25
    assert isinstance(d["tru_epochs"], Integer) and (d["tru_epochs"].lower, d["tru_epochs"].upper) == (2, 8)
    assert isinstance(d["tru_check_steps"], Integer)
    assert isinstance(d["tru_budget"], Categorical) and d["tru_budget"].categories == [0.5, 1.0]
    assert d["tru_stop"].categories == ["guarded", "epochs"]
    assert d["tru_alpha_min"] == tune.grid_search([0.05, 0.1])
    assert space.fixed == {"tru_stop_metric": "ks"}
    assert space.settings["tune_num_samples"] == 3               # the file's value
    assert space.settings["tune_gap_weight"] == 1.0              # properties/unlearn/tune.yaml
    assert space.specs["tru_learning_rate"] == ("loguniform", [1e-4, 1e-2])


def test_command_line_settings_win_over_the_file(make_config, tmp_path):
    path = write_space(tmp_path, "tru_epochs: choice [1, 2]\ntru_stop: epochs\ntune_num_samples: 3\n")
    space = load_search_space(str(path), make_config(unlearn="tru", tune_num_samples=5, tru_stop="guarded"),
                              PACKAGE_ROOT)
    assert space.settings["tune_num_samples"] == 5 and space.fixed == {}


def test_the_method_is_read_off_the_keys_when_unlearn_is_empty(make_config, tmp_path):
    path = write_space(tmp_path, "reverse_epochs: choice [1, 2]\n")
    assert load_search_space(str(path), make_config(), PACKAGE_ROOT).method == "reverse"


def test_shipped_search_spaces_parse(make_config):
    for method in ("tru", "reverse"):
        space = load_search_space(f"properties/tune/{method}.yaml", make_config(unlearn=method), PACKAGE_ROOT)
        assert space.method == method and len(space.domains) >= 4


@pytest.mark.parametrize("line, message", [
    ("tru_lerning_rate: loguniform [0.001, 0.01]", r"unknown key 'tru_lerning_rate' \(did you mean tru_learning_rate\?\)"),
    ("tru_learning_rate: logunifrom [0.001, 0.01]", r"key 'tru_learning_rate': unknown distribution 'logunifrom' \(did you mean loguniform\?\)"),
    ("tru_learning_rate: uniform [0.01]", r"key 'tru_learning_rate': uniform takes 2 numbers"),
    ("tru_learning_rate: loguniform [0, 0.01]", r"key 'tru_learning_rate': loguniform needs 0 < low"),
    ("tru_budget: choice []", r"key 'tru_budget': choice needs a non-empty list"),
    ("reverse_epochs: choice [1, 2]", r"key 'reverse_epochs' is not a key of 'tru'"),
    ("learning_rate: choice [0.001, 0.01]", r"key 'learning_rate' is not a key of 'tru'"),
    ("forget_share: choice [0.01, 0.05]", r"key 'forget_share' is not a key of 'tru'"),
    ("tune_num_samples: choice [1, 2]", r"key 'tune_num_samples' is a sweep setting"),
])
def test_bad_search_space_errors_name_the_file_and_the_key(make_config, tmp_path, line, message):
    path = write_space(tmp_path, f"tru_epochs: choice [1, 2]\n{line}\n")
    with pytest.raises(SearchSpaceError, match=message) as err:
        load_search_space(str(path), make_config(unlearn="tru"), PACKAGE_ROOT)
    assert str(path) in str(err.value)


def test_missing_file_and_empty_space_are_errors(make_config, tmp_path):
    with pytest.raises(SearchSpaceError, match="not found: nowhere.yaml"):
        load_search_space("nowhere.yaml", make_config(unlearn="tru"), PACKAGE_ROOT)
    path = write_space(tmp_path, "tru_epochs: 3\n")
    with pytest.raises(SearchSpaceError, match="no key has a distribution"):
        load_search_space(str(path), make_config(unlearn="tru"), PACKAGE_ROOT)
    with pytest.raises(SearchSpaceError, match="one unlearning method"):
        load_search_space(str(path), make_config(unlearn="tru,reverse"), PACKAGE_ROOT)


def test_calibration_seed_must_differ_from_the_judged_request(tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path, "tru_epochs: choice [1, 2]\n")
    with pytest.raises(SearchSpaceError, match="tune_calibration_seed .1. equals forget_seed"):
        run_recbole_tru(model="VBPR", dataset=TINY, read_cmd_line=False,
                        config_dict={**TINY_CONFIG, "data_path": str(tiny_root), "output_dir": str(tmp_path / "out"),
                                     "unlearn": "tru", "tune": str(path), "forget_seed": 1})
    assert not (tmp_path / "out").exists()                        # nothing trained, nothing written


# --------------------------------------------------------------------------- selection and Ray

def test_pareto_front_keeps_the_non_dominated_points():
    gaps = [0.10, 0.05, 0.05, 0.20, 0.01, 0.01]
    utility = [0.30, 0.25, 0.20, 0.31, 0.10, 0.10]
    # (0.05, .20) is dominated by (0.05, .25); the two (0.01, .10) points tie and both stay
    assert pareto_front(gaps, utility) == [0, 1, 3, 4, 5]


def test_best_is_a_finished_trial_when_there_is_one():
    rows = [{"trial": "a", "status": "stopped", "objective": "0.9"},
            {"trial": "b", "status": "finished", "objective": "0.2"},
            {"trial": "c", "status": "error", "objective": ""},
            {"trial": "d", "status": "finished", "objective": "0.3"}]
    assert select_best(rows)["trial"] == "d"
    assert select_best(rows[:1])["trial"] == "a"
    assert select_best(rows[2:3]) is None


def test_ray_init_starts_locally_or_attaches_to_a_cluster():
    local = init_kwargs(None, num_cpus=2)
    assert local["num_cpus"] == 2 and local["include_dashboard"] is False
    assert local["address"] == "local"          # a new instance, never a cluster `ray start` left behind
    assert str(PACKAGE_ROOT) in local["runtime_env"]["env_vars"]["PYTHONPATH"].split(os.pathsep)
    remote = init_kwargs("ray://head:10001", num_cpus=2)
    assert remote["address"] == "ray://head:10001" and "num_cpus" not in remote
    assert remote["runtime_env"]["py_modules"] == [str(PACKAGE_ROOT / "recbole_tru")]



def sweep_dict(tiny_root, tmp_path, space, **overrides):
    return {**TINY_CONFIG, "data_path": str(tiny_root), "output_dir": str(tmp_path / "out"),
            "checkpoint_dir": str(tmp_path / "saved"), "tune": str(space), **overrides}


def read_rows(folder):
    with open(Path(folder) / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- sweeps with Ray

def run_cli(args, cwd, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(PACKAGE_ROOT / "run_recbole_tru.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_tiny_sweep_end_to_end_from_the_command_line(tiny_root, tmp_path):
    """The documented command, on the tiny data set (its own local Ray, started and shut down)."""
    write_space(tmp_path, """
tru_learning_rate: loguniform [0.001, 0.01]
tru_epochs: choice [1, 2]
tru_repair_epochs: 1
tune_num_samples: 2
tune_grace_period: 1
""")
    args = ["--model=MMGCN", f"--dataset={TINY}", "--unlearn=tru", "--tune=space.yaml", "--tune_num_samples=3",
            f"--data_path={tiny_root}", "--output_dir=out", "--modalities={'text':'textfeat','meta':'metafeat'}",
            "--load_col={'inter':['user_id','item_id','timestamp']}", "--embedding_size=8", "--latent_dim=8",
            "--epochs=2", "--train_batch_size=256", "--use_gpu=False", "--seed=7", "--state=WARNING"]
    run = run_cli(args, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    folders = list((tmp_path / "out").glob("sweep-tru-MMGCN-*"))
    assert len(folders) == 1 and f"sweep written to {folders[0]}" in run.stdout
    out = folders[0]
    rows = read_rows(out)
    assert len(rows) == 3 and all(r["status"] in ("finished", "stopped") for r in rows)   # the command line wins
    for r in rows:
        assert 0.001 <= float(r["tru_learning_rate"]) <= 0.01 and r["tru_epochs"] in ("1", "2")
        assert float(r["objective"]) == pytest.approx(float(r["valid_ndcg@20"]) - float(r["forget_gap"]), abs=1e-9)
        # per-epoch reports, then the final one; ASHA (grace period 1) may stop a trailing trial
        # after its first report
        assert int(r["reports"]) >= (2 if r["status"] == "finished" else 1), r
    best = select_best(rows)
    # best.yaml: only the sweep's keys, accepted by Config as --config_files
    assert set(yaml.safe_load((out / "best.yaml").read_text())) == {"tru_learning_rate", "tru_epochs", "tru_repair_epochs"}
    config = Config(model="MMGCN", dataset=TINY, config_file_list=[str(out / "best.yaml")], read_cmd_line=False,
                    config_dict={**TINY_CONFIG, "data_path": str(tiny_root)})
    assert config["tru_learning_rate"] == pytest.approx(float(best["tru_learning_rate"]))
    assert config["tru_epochs"] == int(best["tru_epochs"]) and config["tru_repair_epochs"] == 1
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    judged = json.loads((out / "judged.json").read_text())
    assert judged["forget_seed"] == 2024 and judged["calibration_seed"] == 1
    assert set(judged["methods"]) == {"default", "best"}
    assert judged["settings"]["best"]["tru_epochs"] == int(best["tru_epochs"])
    for variant in judged["methods"].values():
        assert {"retain", "forget", "gap_to_retrain", "topk_overlap_with_retrain", "seconds"} <= set(variant)
    # the original and the calibration retrain were trained once, in the driver
    assert (out / "original.pth").is_file() and (out / "calibration_retrain.pth").is_file()
    assert "best settings (objective" in run.stdout


def test_a_failing_trial_keeps_the_finished_trials(tiny_root, tmp_path, monkeypatch, ray_local):
    """tru_budget must be in (0, 1]: the 1.5 trial raises inside the trainer."""
    monkeypatch.chdir(tmp_path)
    space = write_space(tmp_path, """
tru_budget: grid [0.5, 1.5]
tru_epochs: 1
tru_repair_epochs: 1
tune_num_samples: 1
tune_scheduler: fifo
""")
    result = run_recbole_tru(model="VBPR", dataset=TINY, read_cmd_line=False,
                             config_dict=sweep_dict(tiny_root, tmp_path, space, unlearn="tru"))
    rows = {float(r["tru_budget"]): r for r in read_rows(result["output_dir"])}
    assert set(rows) == {0.5, 1.5}
    assert rows[1.5]["status"] == "error" and "tru_budget" in rows[1.5]["error"] and rows[1.5]["objective"] == ""
    assert rows[0.5]["status"] == "finished" and float(rows[0.5]["valid_ndcg@20"]) > 0
    assert result["best_settings"]["tru_budget"] == 0.5
    assert (Path(result["output_dir"]) / "judged.json").is_file()


def test_benchmark_smoke_run(tiny_root, tmp_path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sweep as benchmark
    finally:
        sys.path.remove(str(BENCHMARKS))
    extra = {**TINY_CONFIG, "data_path": str(tiny_root), "checkpoint_dir": str(tmp_path / "saved")}
    report = benchmark.main(["--smoke", "--model", "VBPR", "--dataset", TINY, "--out", str(tmp_path / "results"),
                             "--config", json.dumps(extra)])
    results = tmp_path / "results"
    text = (results / "sweep.md").read_text()
    assert "| tru |" in text and "| reverse |" in text and "Speed-up of the search with 2 workers" in text
    for name in ("sweep.json", "sweep_pareto.png", "sweep_pareto_tru.png", "sweep_pareto_reverse.png"):
        assert (results / name).is_file(), name
    assert report["scaling"]["1"]["peak_rss_mb"] > 0 and report["scaling"]["2"]["counts"]["finished"] == 2
    # tune_max_concurrent=1: one trial at a time, so one worker (actors are reused) ran both
    assert trial_pids(report["scaling"]["1"]["output_dir"]) == 1


def trial_pids(folder):
    """How many worker processes ran the trials (from Ray Tune's per-trial result files)."""
    pids = set()
    for path in Path(folder).glob("ray/trials/*/result.json"):
        pids.update(json.loads(line)["pid"] for line in path.read_text().splitlines() if line.strip())
    return len(pids)
