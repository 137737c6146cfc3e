"""Each ml-100k-mm benchmark script runs end to end at a tiny size, so it cannot rot (the scale
benchmark's smoke test is in test_scale_smoke.py, the sweep's in test_tune.py)."""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
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


def test_unlearning_benchmark_repeated_requests(tiny, tmp_path):
    """Two requests and two originals on the interaction cell, in this process: per-request
    records, aggregates over the main original's requests, paired comparisons, the ablation,
    the variance study, and the summary CSV in its documented shape."""
    module = load("unlearning")
    out = tmp_path / "r"
    report = module.main(["--models", "VBPR", "--regimes", "interaction", "--requests", "2", "--train-seeds", "2",
                          "--workers", "1", "--out", str(out), *tiny])
    (cell,) = report["cells"]
    assert [(r["original"], r["forget_seed"]) for r in cell["requests"]] == [
        (0, s) for s in module.FORGET_SEEDS[:2]] + [(1, s) for s in module.FORGET_SEEDS[:2]]
    main = cell["requests"][:2]
    assert set(main[0]["methods"]) == {"original", *module.METHODS}
    assert "sisa" not in cell["requests"][2]["methods"]          # the variance study skips SISA
    assert main[0]["forget"] != main[1]["forget"] or main[0]["methods"]["tru"] != main[1]["methods"]["tru"]
    # the aggregate is the mean of the per-request values
    gaps = [r["methods"]["tru"]["forget_gap"] for r in main]
    assert cell["aggregate"]["tru"]["forget_gap"]["n"] == 2
    assert abs(cell["aggregate"]["tru"]["forget_gap"]["mean"] - sum(gaps) / 2) < 1e-12
    assert cell["aggregate"]["retrain"]["forget_gap"]["mean"] == 0
    p = cell["paired"]["reverse"]["forget_gap"]
    assert p["n"] == 2 and p["wins"] + p["ties"] + p["losses"] == 2
    assert set(cell["ablation_paired"]) == set(load("unlearning_jobs").ABLATIONS) - {"tru"}
    assert cell["variance"]["originals"] == [0, 1]
    assert report["environment"]["packages"]["torch"] and report["environment"]["torch_threads"] == 1
    assert report["dataset"] == TINY and report["data_generator"] is None    # not a synthetic generator's folder
    with open(out / "unlearning_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["backbone", "regime", "method", "metric", "n", "mean", "ci_low", "ci_high"]
    methods = {r["method"] for r in rows}
    assert {"original", "tru", "reverse", "tru-gate", "tru-repair"} <= methods
    assert {"forget_gap", "retain_gap", "retain_ratio", "seconds", "speedup"} <= {r["metric"] for r in rows}
    for name in ("unlearning.json", "unlearning.md", "unlearning_tradeoff.png"):
        assert (out / name).is_file(), name
    assert "| VBPR | interaction | tru |" in (out / "unlearning.md").read_text()
    written = {name: (out / name).read_bytes() for name in ("unlearning.md", "unlearning_summary.csv")}
    rendered = module.main(["--render", "--out", str(out)])          # aggregates recomputed from the JSON
    assert rendered["cells"][0]["aggregate"]["tru"]["forget_gap"] == cell["aggregate"]["tru"]["forget_gap"]
    assert {name: (out / name).read_bytes() for name in written} == written
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]        # written whole, no leftovers


def test_unlearning_benchmark_can_judge_requests_the_readme_never_saw(tmp_path):
    """--first-request K: every cell's requests are FORGET_SEEDS[K:K+N] (5 -> 2029...), and a
    range past the seeds is refused, naming both options."""
    module = load("unlearning")
    args = module.parser().parse_args(["--models", "VBPR", "--regimes", "interaction,item", "--first-request", "5",
                                       "--requests", "2"])
    _, requests = module.build_jobs(args, tmp_path, {}, None)
    assert sorted({job["forget_seed"] for job in requests}) == [2029, 2030] == list(module.FORGET_SEEDS[5:7])
    assert len(requests) == 4
    with pytest.raises(SystemExit, match=r"--first-request \+ --requests must stay within"):
        module.main(["--first-request", "9", "--requests", "2", "--out", str(tmp_path)])


def test_calibration_benchmark(tiny, tmp_path):
    module = load("calibration")
    report = module.main(["--models", "VBPR", "--regimes", "user", "--out", str(tmp_path / "r"), *tiny])
    assert report["forget_seed"] == module.CALIBRATION_SEED
    assert (tmp_path / "r" / "calibration.md").is_file()


def test_calibration_benchmark_over_several_requests(tiny, tmp_path):
    """--seeds runs every variant on each calibration request; the summary's mean and paired
    difference are those of the per-request figures; a judged request's seed is refused."""
    module = load("calibration")
    report = module.main(["--models", "VBPR", "--regimes", "interaction", "--out", str(tmp_path / "r"), "--seeds", "1,2",
                          "--tag", "_s", "--variants", "default;gate off", *tiny])
    assert [c["forget_seed"] for c in report["cells"]] == [1, 2]
    gate_off = ["gate off", module.DEFAULT]
    assert [c["run_order"] for c in report["cells"]] == [gate_off[::-1], gate_off]     # each variant first once
    assert all(list(c["variants"]) == [module.DEFAULT, "gate off"] for c in report["cells"])
    gaps = {name: [c["variants"][name]["gap_to_retrain"]["forget"]["recall@20"] for c in report["cells"]]
            for name in (module.DEFAULT, "gate off")}
    rows = {r["variant"]: r for r in report["summary"]}
    assert rows[module.DEFAULT]["forget_gap"]["mean"]["mean"] == pytest.approx(np.mean(gaps[module.DEFAULT]))
    assert "vs_default" not in rows[module.DEFAULT]["forget_gap"]
    diff = rows["gate off"]["forget_gap"]["vs_default"]
    assert diff["n"] == 2
    assert diff["diff"]["mean"] == pytest.approx(np.mean(np.subtract(gaps["gate off"], gaps[module.DEFAULT])))
    text = (tmp_path / "r" / "calibration_s.md").read_text()
    assert "| request |" in text and "- default [95 % CI]" in text
    assert (tmp_path / "r" / "calibration_s.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="judged requests' seeds"):
        module.main(["--seeds", "1,2024", "--out", str(tmp_path / "r"), *tiny])


def test_audit_delta_benchmark(tiny, tmp_path):
    """Per request: the fitted delta attack's weight on the score change, both attacks' AUCs; the
    summary's distances are those of the per-request AUCs; a judged request's seed is refused."""
    module = load("audit_delta")
    report = module.main(["--models", "VBPR", "--regimes", "interaction", "--seeds", "1,2", "--methods", "tru",
                          "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), *tiny])
    requests = report["cells"][0]["requests"]
    assert [r["seed"] for r in requests] == [1, 2]
    for r in requests:
        for name in ("retrain", "tru"):
            assert 0 <= r[name]["drop_auc"] <= 1 and 0 <= r[name]["delta_auc"] <= 1
            assert np.isfinite(r[name]["delta_weight"])
    row = next(x for x in report["summary"] if x["method"] == "tru")
    assert row["drop_distance"]["mean"] == pytest.approx(
        np.mean([abs(r["tru"]["drop_auc"] - r["retrain"]["drop_auc"]) for r in requests]))
    assert row["weight_negative"] == sum(r["tru"]["delta_weight"] < 0 for r in requests)
    versus = row["drop_vs_delta"]
    assert versus["wins"] == sum(abs(r["tru"]["drop_auc"] - r["retrain"]["drop_auc"])
                                 < abs(r["tru"]["delta_auc"] - r["retrain"]["delta_auc"]) for r in requests)
    md = (tmp_path / "r" / "audit_delta.md").read_text()
    assert "| VBPR | interaction | tru |" in md and f"| {versus['wins']}/2 |" in md
    # --render rewrites the same .md from the JSON, measuring nothing
    module.main(["--render", str(tmp_path / "r" / "audit_delta.json"), "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "audit_delta.md").read_text() == md
    with pytest.raises(SystemExit):
        module.main(["--seeds", "2024", "--out", str(tmp_path / "r"), *tiny])


def test_rank_quantiles_benchmark(tiny, tmp_path):
    """Per request and model: the forget and test rank quantiles in order (10 % <= ... <= 90 %) and
    the rank AUC in [0, 1]; the summary's means are the requests'; a judged request is refused."""
    module = load("rank_quantiles")
    report = module.main(["--models", "VBPR", "--regimes", "interaction", "--seeds", "1,2", "--variants", "default",
                          "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), *tiny])
    requests = report["cells"][0]["requests"]
    assert [r["seed"] for r in requests] == [1, 2]
    for r in requests:
        assert set(r["models"]) == {"original", "retrain", module.DEFAULT}
        for m in r["models"].values():
            assert np.all(np.diff(m["forget"]) >= 0) and np.all(np.diff(m["test"]) >= 0) and 0 <= m["auc"] <= 1
    row = next(x for x in report["summary"] if x["method"] == "retrain")
    assert row["forget"][2]["mean"] == pytest.approx(np.mean([r["models"]["retrain"]["forget"][2] for r in requests]))
    assert "| VBPR | interaction | retrain |" in (tmp_path / "r" / "rank_quantiles.md").read_text()
    assert (tmp_path / "r" / "rank_quantiles.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        module.main(["--seeds", "2024", "--out", str(tmp_path / "r"), *tiny])


def test_calibration_benchmark_reads_config_files(tiny, tmp_path):
    """--config_files reaches every cell's config (a data set's own YAML, as for synthetic data):
    a file with a bad TRU value is refused, naming the key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("tru_stop_metric: nonsense\n")
    module = load("calibration")
    with pytest.raises(ValueError, match="tru_stop_metric"):
        module.main(["--models", "VBPR", "--regimes", "user", "--out", str(tmp_path / "r"), "--config_files",
                     str(bad), *tiny])


def test_calibration_benchmark_with_audit(tiny, tmp_path):
    """--audit adds the membership figures: the retrained reference is at distance 0 from itself,
    every variant's distance is |its AUC - retrain's|."""
    module = load("calibration")
    report = module.main(["--models", "VBPR", "--regimes", "interaction", "--out", str(tmp_path / "r"), "--audit",
                          "--tag", "_a", "--variants", "default;rank-AUC stop (δ .02)", *tiny])
    cell = report["cells"][0]
    assert list(cell["variants"]) == [module.DEFAULT, "rank-AUC stop (δ .02)"]
    ref = cell["reference"]["mia_auc"]
    for row in cell["variants"].values():
        assert row["mia_distance"] == pytest.approx(abs(row["mia_auc"] - ref))
    assert "MIA distance" in (tmp_path / "r" / "calibration_a.md").read_text()
    with pytest.raises(SystemExit, match="unknown variant"):
        module.main(["--variants", "no such variant", "--out", str(tmp_path / "r"), *tiny])


def test_reproducibility_benchmark(tiny, tmp_path):
    """Each setting trains in its own process; the same setting twice gives the same bits."""
    module = load("reproducibility")
    config = json.loads(tiny[3])
    report = module.main(["--models", "VBPR", "--dataset", TINY, "--epochs", "1", "--out", str(tmp_path / "r"),
                          "--config", json.dumps({**config, "data_path": config["data_path"]})])
    rows = report["rows"]["VBPR"]
    assert set(rows) == set(module.SETTINGS)
    assert rows["2 threads"]["sha256"] == rows["2 threads, again"]["sha256"]
    assert rows["1 thread"]["torch_threads"] == 1 and rows["2 threads"]["torch_threads"] == 2
    assert (tmp_path / "r" / "reproducibility.md").is_file()


def test_stream_benchmark(tiny, tmp_path):
    """Four chained requests (one of each kind) on the tiny data set, judged at 1 and 2 and 4:
    every request deletes more, every proof passes, the CSV has the documented columns with gaps
    only at the judged points."""
    module = load("stream")
    out = tmp_path / "r"
    report = module.main(["--models", "VBPR", "--requests", "4", "--judge-every", "2", "--out", str(out), *tiny])
    (record,) = report["backbones"]
    rows = record["requests"]
    assert [r["kind"] for r in rows] == list(module.KINDS)
    assert all(r["proof_passed"] for r in rows)
    totals = [r["deleted_total"] for r in rows]
    assert all(b > a for a, b in zip(totals, totals[1:]))                 # cumulative deletion grows
    assert rows[1]["names"]["pairs"] == 1 and rows[0]["names"]["users"] == 1 and rows[2]["names"]["items"] == 1
    assert rows[3]["names"] == {**rows[3]["names"], "users": 1, "items": 1, "pairs": 1}
    assert [p["request"] for p in record["judged"]] == [1, 2, 4]
    for p in record["judged"]:
        assert p["deleted_interactions"] == totals[p["request"] - 1]
        assert p["forget_gap"] == abs(p["forget_recall@20"]["chain"] - p["forget_recall@20"]["retrain"])
        assert 0 <= p["mia_auc"]["chain"] <= 1 and 0 <= p["mia_auc"]["retrain"] <= 1
    with open(out / "stream.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["backbone", "request", "kind", "seconds", "forget_gap", "retain_gap", "mia_distance"]
    assert [bool(t["forget_gap"]) for t in table] == [True, True, False, True]
    assert (out / "stream.png").stat().st_size > 0 and "| VBPR |" in (out / "stream.md").read_text()
    again = module.main(["--render", "--out", str(out)])
    assert again["backbones"][0]["summary"] == record["summary"]


def test_stream_noise_retrains_at_the_judged_points(tiny, tmp_path):
    """On a kept stream work folder: the retrain at a judged point with another model seed is
    judged with the stream's evaluation (the chain's test NDCG@20 evaluated here equals the
    stream's), and the spread is the largest difference between the retrainings."""
    out = tmp_path / "r"
    load("stream").main(["--models", "VBPR", "--requests", "2", "--judge-every", "2", "--out", str(out),
                         "--work", str(tmp_path / "w"), *tiny])
    report = load("stream_noise").main(["--work", str(tmp_path / "w"), "--stream", str(out / "stream.json"),
                                        "--points", "2", "--seeds", "5", "--out", str(out)])
    (row,) = report["rows"]
    assert row["request"] == 2 and set(row["retrain"]) == {"stream", "seed 5"}
    assert row["chain_here"] == pytest.approx(row["chain"]["ndcg"], abs=1e-6)
    a, b = row["retrain"]["stream"], row["retrain"]["seed 5"]
    assert row["retrain_spread"]["ndcg"] == pytest.approx(abs(a["ndcg"] - b["ndcg"]))
    assert row["chain_gaps"]["forget"] == [abs(row["chain"]["forget"] - r["forget"]) for r in (a, b)]
    assert "| VBPR | 2 |" in (out / "stream_noise.md").read_text()
    with pytest.raises(SystemExit, match="not judged"):
        load("stream_noise").main(["--work", str(tmp_path / "w"), "--stream", str(out / "stream.json"),
                                   "--points", "3", "--out", str(out)])


def test_latency_benchmark_independent_single_requests(tiny, tmp_path):
    """Two one-user and two one-item requests, each on the original checkpoint: a user request
    deletes exactly that user's training pairs (no chain: every request starts from the same
    model, so none deletes anything an earlier one did), every proof passes, the CSV has the
    documented columns and the medians are the rows' medians."""
    module = load("latency")
    out = tmp_path / "r"
    report = module.main(["--models", "VBPR", "--requests", "2", "--out", str(out), *tiny])
    (record,) = report["backbones"]
    rows = record["requests"]
    assert [(r["kind"], r["request"]) for r in rows] == [("user", 1), ("user", 2), ("item", 1), ("item", 2)]
    assert all(r["proof_passed"] and r["n_deleted"] >= 1 and r["seconds"] >= 0 for r in rows)
    assert all(r["request_seconds"] >= r["seconds"] for r in rows)
    for kind in ("user", "item"):
        seconds = sorted(r["seconds"] for r in rows if r["kind"] == kind)
        assert record["summary"][kind]["median_seconds"] == pytest.approx(sum(seconds) / 2)
        assert record["summary"][kind]["proofs_passed"] == 2
    with open(out / "latency.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["backbone", "dataset", "kind", "request", "seconds", "request_seconds", "n_deleted",
                              "stop_reason", "evaluate"]
    assert [int(t["n_deleted"]) for t in table] == [r["n_deleted"] for r in rows]
    assert (out / "latency.png").stat().st_size > 0 and "| VBPR |" in (out / "latency.md").read_text()
    assert module.main(["--render", "--out", str(out)])["backbones"][0]["summary"] == record["summary"]
    with pytest.raises(SystemExit, match="--kinds"):
        module.main(["--kinds", "users", *tiny])


def test_latency_benchmark_sends_each_request_once_per_evaluate_mode(tiny, tmp_path):
    """--evaluate both,none: the same request twice on the same original, side by side; the mode
    without evaluation deletes the same pairs, has no quality figures, and its whole-request
    median is the median of its own rows."""
    module = load("latency")
    out = tmp_path / "r"
    report = module.main(["--models", "VBPR", "--requests", "1", "--kinds", "user", "--evaluate", "both,none",
                          "--out", str(out), *tiny])
    (record,) = report["backbones"]
    both, none = record["requests"]
    assert (both["evaluate"], none["evaluate"]) == ("both", "none") and both["n_deleted"] == none["n_deleted"]
    assert both["forget_recall@20"]["input"] is not None
    assert none["forget_recall@20"] == {"input": None, "output": None} and none["test_ndcg@20"]["output"] is None
    summary = record["summary"]["user"]
    assert summary["median_request_seconds_by_evaluate"] == {"both": both["request_seconds"],
                                                             "none": none["request_seconds"]}
    assert summary["median_seconds"] == both["seconds"] and summary["proofs_passed"] == 2
    assert "whole request s, evaluate none: median" in (out / "latency.md").read_text()
    with pytest.raises(SystemExit, match="--evaluate"):
        module.main(["--evaluate", "both,never", *tiny])


def test_merge_runs_adds_figures_only_where_the_runs_agree():
    module = load("merge_runs")

    def run(**tru):
        record = {"forget_gap": 0.01, "retain_gap": 0.02, "mia_auc": 0.6, "attacks": {"logistic": 0.6}, **tru}
        return {"cells": [{"model": "VBPR", "regime": "interaction", "requests": [
            {"original": 0, "forget_seed": 1, "methods": {"tru": dict(record)}},
            {"original": 0, "forget_seed": 2, "methods": {"tru": dict(record)}}]}]}

    base = run()
    add = run(mia_lr_distance=0.03, attacks={"logistic": 0.6, "lira": 0.55})
    add["cells"][0]["requests"][0]["methods"]["influence"] = {"forget_gap": 0.5}
    del add["cells"][0]["requests"][1]                      # only one request in the second run
    assert module.merge(base, add, methods=["influence"], metrics=["mia_lr_distance"], attacks=["lira"]) == 1
    first, second = base["cells"][0]["requests"]
    assert first["methods"]["tru"]["mia_lr_distance"] == 0.03 and first["methods"]["tru"]["attacks"]["lira"] == 0.55
    assert first["methods"]["influence"] == {"forget_gap": 0.5}
    assert "mia_lr_distance" not in second["methods"]["tru"] and "influence" not in second["methods"]
    differs = run(forget_gap=0.011)
    with pytest.raises(ValueError, match=r"tru forget_gap: 0.01 in the base run, 0.011 in the added run"):
        module.merge(run(), differs, metrics=["mia_lr_distance"])


def test_compare_runs_pairs_a_changed_method_request_by_request(tmp_path):
    """``compare_runs.py --paired``: new − old per request (same original and forget seed only),
    its mean and t-interval, and the requests where the new run is better, by hand."""
    module = load("compare_runs")

    def run(gaps, ratios):
        return {"cells": [{"model": "VBPR", "regime": "interaction", "requests": [
            {"original": 0, "forget_seed": seed, "methods": {"tru": {"retain_gap": g, "retain_ratio": r}}}
            for seed, g, r in zip((1, 2, 3), gaps, ratios)]}]}

    old, new = run([0.02, 0.03, 0.01], [0.90, 0.95, 1.0]), run([0.01, 0.02, 0.02], [0.95, 0.95, 0.9])
    new["cells"][0]["requests"].append({"original": 0, "forget_seed": 9, "methods": {"tru": {"retain_gap": 5.0}}})
    rows = {row[2]: row for row in module.paired(old, new, "tru")}
    _, _, _, n, before, after, ci, better = rows["retain_gap"]
    assert n == 3 and before == pytest.approx(0.02) and after == pytest.approx(0.05 / 3)
    assert ci["mean"] == pytest.approx(-0.01 / 3) and better == 2          # diffs -0.01, -0.01, +0.01
    assert rows["retain_ratio"][7] == 1                                     # larger is better: +0.05, 0, -0.1
    paths = [tmp_path / f"{name}.json" for name in ("old", "new")]
    for path, report in zip(paths, (old, new)):
        path.write_text(json.dumps(report))
    module.main([str(paths[0]), str(paths[1]), "--paired", "tru", "--out", str(tmp_path / "diff.md")])
    text = (tmp_path / "diff.md").read_text()
    assert "| VBPR | interaction | retain_gap | 3 | 0.0200 | 0.0167 | -0.0033 [" in text and "| 2/3 | no |" in text


def test_merge_runs_replaces_a_changed_method_where_the_reference_agrees():
    module = load("merge_runs")

    def run(tru_gap, retrain_seconds=80.0):
        return {"cells": [{"model": "VBPR", "regime": "item", "requests": [
            {"original": 0, "forget_seed": 1, "ablation": {"tru": {"forget_gap": tru_gap}},
             "trajectories": {"tru": [tru_gap]},
             "methods": {"retrain": {"forget_gap": 0.0, "mia_auc": 0.5, "seconds": retrain_seconds},
                         "tru": {"forget_gap": tru_gap, "mia_auc": 0.6}}}]}]}

    base = run(0.009)
    assert module.merge(base, run(0.002), replace=["tru"]) == 1
    request = base["cells"][0]["requests"][0]
    assert request["methods"]["tru"] == {"forget_gap": 0.002, "mia_auc": 0.6}
    assert request["ablation"] == {"tru": {"forget_gap": 0.002}} and request["trajectories"]["tru"] == [0.002]
    # the retrained reference must still be the same model in both runs
    other = run(0.002)
    other["cells"][0]["requests"][0]["methods"]["retrain"]["mia_auc"] = 0.51
    with pytest.raises(ValueError, match="retrain mia_auc"):
        module.merge(run(0.009), other, replace=["tru"])


def test_merge_runs_replaces_a_backbones_cells_whole():
    """After a backbone's defaults changed, its cells come whole from the second run (no figure
    of the old cells is comparable, none is checked); the other backbone's cells and the order
    stay; a regime the second run lacks is an error, not a silently mixed table."""
    module = load("merge_runs")

    def run(gap, models=("VBPR", "MMGCN"), regimes=("interaction", "item")):
        return {"cells": [{"model": m, "regime": r, "requests": [
                    {"original": 0, "forget_seed": 1, "methods": {"retrain": {"forget_gap": 0.0, "mia_auc": gap}}}]}
                          for m in models for r in regimes],
                "originals": [{"model": m, "regime": r, "original": 0, "summary": {"seconds": gap}}
                              for m in models for r in regimes]}

    base, add = run(0.5), run(0.7, models=("VBPR",))
    assert module.replace_backbones(base, add, ["VBPR"]) == 2
    assert [(c["model"], c["regime"]) for c in base["cells"]] == [("VBPR", "interaction"), ("VBPR", "item"),
                                                                   ("MMGCN", "interaction"), ("MMGCN", "item")]
    gaps = {(c["model"], c["regime"]): c["requests"][0]["methods"]["retrain"]["mia_auc"] for c in base["cells"]}
    assert gaps == {("VBPR", "interaction"): 0.7, ("VBPR", "item"): 0.7,
                    ("MMGCN", "interaction"): 0.5, ("MMGCN", "item"): 0.5}
    assert sorted((o["model"], o["summary"]["seconds"]) for o in base["originals"]) == [
        ("MMGCN", 0.5), ("MMGCN", 0.5), ("VBPR", 0.7), ("VBPR", 0.7)]
    with pytest.raises(ValueError, match="no VBPR item cell"):
        module.replace_backbones(run(0.5), run(0.7, models=("VBPR",), regimes=("interaction",)), ["VBPR"])


def test_memorisation_benchmark_at_tiny_size(tmp_path):
    """One variant with a generator knob, in its own process: the data set is generated with the
    knob, the original and the retrained model are measured on the same forget set, and the
    table's gap is their difference."""
    module = load("memorisation")
    report = module.main(["--size", "120,60,1200,8,8", "--variants", '[{"model": "VBPR", "gen": {"noise": 1.0}}]',
                          "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")])
    (row,) = report["rows"]
    assert row["data"] == "memo-noise1.0" and (tmp_path / "d" / "memo-noise1.0" / "memo-noise1.0.inter").is_file()
    assert row["n_forget"] > 0
    assert 0 <= row["retrain_forget_recall@20"] <= 1 and row["best_epoch"] <= row["epochs"]
    gap = row["original_forget_recall@20"] - row["retrain_forget_recall@20"]
    assert f"| {gap:+.4f} |" in (tmp_path / "r" / "memorisation.md").read_text()


def _chain_report(seed, firsts, lasts, seconds):
    """A stream.py report with one VBPR chain judged at requests 1 and 2 (gaps given)."""
    def point(request, gaps):
        return {"request": request, "deleted_interactions": 10 * request,
                **dict(zip(("forget_gap", "retain_gap", "mia_distance"), gaps)),
                "original_gaps": {"forget_gap": 0.3, "retain_gap": 0.01, "mia_distance": 0.4}}
    return {"command": f"stream.py --seed {seed}", "seed": seed, "method": "tru", "requests": 2, "judge_every": 2,
            "backbones": [{"model": "VBPR", "judged": [point(1, firsts), point(2, lasts)],
                           "requests": [{"seconds": s, "request_seconds": s + 2} for s in seconds]}]}


def test_stream_chains_mean_over_chains_and_the_2x_drift_test(tmp_path):
    """Three chains: each gap's mean over the chains, the paired drift test last - 2 x first
    (hand-computed), and the pooled latency; chains with one seed twice are refused."""
    paths = []
    for seed, firsts, lasts, seconds in ((0, (0.010, 0.002, 0.10), (0.010, 0.002, 0.30), (0.1, 0.3)),
                                         (1, (0.020, 0.004, 0.10), (0.010, 0.002, 0.30), (0.2, 0.4)),
                                         (2, (0.030, 0.006, 0.10), (0.020, 0.002, 0.30), (0.5, 0.6))):
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps(_chain_report(seed, firsts, lasts, seconds)))
        paths.append(str(path))
    summary = load("stream_chains").main([*paths, "--out", str(tmp_path / "r")])
    (b,) = summary["backbones"]
    assert b["judged"][0]["forget_gap"]["mean"] == pytest.approx(0.02)
    assert b["judged"][1]["deleted"]["mean"] == 20
    forget = b["drift"]["forget_gap"]
    # last - 2 first per chain: -0.010, -0.030, -0.040 -> mean -0.08/3; sd 0.01528; t(2) = 4.303
    assert forget["last_minus_twice_first"]["mean"] == pytest.approx(-0.08 / 3)
    assert forget["last_minus_twice_first"]["ci_high"] == pytest.approx(-0.08 / 3 + 4.3027 * 0.0152753 / 3 ** 0.5,
                                                                        abs=1e-5)
    assert forget["chains_within_2x"] == 3 and forget["verdict"] == "met on the mean"   # interval crosses 0
    assert b["drift"]["mia_distance"]["verdict"] == "clearly missed"                       # 0.30 > 0.20 in every chain
    assert b["drift"]["mia_distance"]["chains_within_2x"] == 0
    assert b["latency"]["median_seconds"] == pytest.approx(0.35) and b["latency"]["requests"] == 6
    assert b["latency"]["chain_medians"] == pytest.approx([0.2, 0.3, 0.55])
    assert "| VBPR | forget gap |" in (tmp_path / "r" / "stream_chains.md").read_text()
    assert (tmp_path / "r" / "stream_chains.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="seeds"):
        load("stream_chains").main([paths[0], paths[0], "--out", str(tmp_path / "r")])


def test_stream_chains_gaps_averaged_over_each_chains_retrainings(tmp_path):
    """--noise: each chain's gap at its first and last judged request is the mean of its gaps to
    all its retrainings (stream_noise.py's chain_gaps), matched to the chain by its command; a
    chain without its noise report is refused."""
    paths, noises = [], []
    for seed in (0, 1):
        report = _chain_report(seed, (0.01, 0.002, 0.1), (0.01, 0.002, 0.1), (0.1,))
        paths.append(tmp_path / f"s{seed}.json")
        paths[-1].write_text(json.dumps(report))
        rows = [{"model": "VBPR", "request": r, "chain_gaps": {"forget": [0.01, 0.03 + seed * 0.01, 0.02],
                                                                "ndcg": [0.004, 0.002, 0.0 + r * 0.003]}}
                for r in (1, 2)]
        noises.append(tmp_path / f"n{seed}.json")
        noises[-1].write_text(json.dumps({"stream_command": report["command"], "rows": rows}))
    module = load("stream_chains")
    summary = module.main([*map(str, paths), "--noise", *map(str, noises), "--out", str(tmp_path / "r")])
    (b,) = summary["backbones"]
    forget = b["seed_averaged"]["drift"]["forget_gap"]
    assert forget["first"]["mean"] == pytest.approx((0.06 / 3 + 0.07 / 3) / 2)       # chain means 0.02, 0.0233
    assert forget["verdict"] == "clearly met"                    # last = first in both chains: d = -first < 0
    retain = b["seed_averaged"]["drift"]["retain_gap"]
    assert retain["first"]["mean"] == pytest.approx(0.009 / 3) and retain["last"]["mean"] == pytest.approx(0.012 / 3)
    assert b["seed_averaged"]["retrainings_per_point"] == [3, 3]
    assert "<!-- table-4 -->" in (tmp_path / "r" / "stream_chains.md").read_text()
    with pytest.raises(SystemExit, match="no --noise report"):
        module.main([*map(str, paths), "--noise", str(noises[0]), "--out", str(tmp_path / "r")])


def test_stop_target_benchmark(tiny, tmp_path):
    """stop_target.py reads the stop's quantity on the retrained model and on TRU's state before
    and after the repair; the repair's lift is the judge's difference between the two states, and
    a regime other than interaction is refused."""
    module = load("stop_target")
    report = module.main(["--models", "VBPR", "--out", str(tmp_path / "r"), "--tag", "_t", *tiny])
    (row,) = report["rows"]
    assert row["forget_seed"] == module.CALIBRATION_SEED and row["pairs"] > 0
    assert 0 < row["users_with_both"] <= row["users"]
    for key in ("retrain_signed", "stop_signed", "final_signed"):
        assert -1 <= row[key] <= 1
    assert row["repair_lift"] == pytest.approx(row["final_judge"] - row["stop_judge"])
    assert "| VBPR | 1 |" in (tmp_path / "r" / "stop_target_t.md").read_text()
    assert row["retrain_mia"] is None
    audited = module.main(["--models", "VBPR", "--out", str(tmp_path / "r"), "--tag", "_a", "--audit", *tiny])["rows"][0]
    assert all(0 <= audited[k] <= 1 for k in ("retrain_mia", "stop_mia", "final_mia", "retrain_mia_rank", "final_mia_rank"))
    assert audited["final_judge"] == row["final_judge"]          # the audit does not change the run
    assert "| VBPR | 1 | rank only |" in (tmp_path / "r" / "stop_target_a.md").read_text()
    with pytest.raises(SystemExit, match="interaction"):
        module.main(["--regimes", "item", "--out", str(tmp_path / "r"), *tiny])


def test_tru_seconds_benchmark(tiny, tmp_path):
    """TRU alone on cached models, variants side by side: a variant that changes only how the
    gradients are stored changes no gap; the summary's median is the median of the requests'
    medians; growth is the second target's median over the first's."""
    module = load("tru_seconds")
    config = json.loads(tiny[tiny.index("--config") + 1])
    runs = tmp_path / "runs"
    runs.mkdir()
    argv = ["--target", TINY, str(runs), "0.05", "--target", TINY, str(runs), "0.05", "--seeds", "1,2", "--reps", "2",
            "--config", json.dumps(config), "--out", str(tmp_path / "r"),
            "--variants", json.dumps({"sparse rows": {}, "dense gradients": {"tru_sparse_grad": False}})]
    report = module.main(argv)
    for target in report["targets"]:
        for request in target["requests"]:
            sparse, dense = request["variants"]["sparse rows"], request["variants"]["dense gradients"]
            assert len(sparse["seconds"]) == 2 and sparse["median"] == pytest.approx(np.median(sparse["seconds"]))
            assert sparse["forget_gap"] == pytest.approx(dense["forget_gap"], abs=1e-4)
            assert sparse["retain_gap"] == pytest.approx(dense["retain_gap"], abs=1e-4)
    row = report["summary"][0]
    assert row["median"] == pytest.approx(np.median([r["variants"]["sparse rows"]["median"]
                                                     for r in report["targets"][0]["requests"]]))
    assert report["growth"]["sparse rows"][f"{TINY} #2"] == pytest.approx(report["summary"][2]["median"] / row["median"])
    assert "| dense gradients |" in (tmp_path / "r" / "tru_seconds.md").read_text()
    assert (tmp_path / "r" / "tru_seconds.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        module.main(["--target", TINY, str(tmp_path / "absent"), "0.05", "--out", str(tmp_path / "r")])


def test_tru_seconds_without_retrain(tiny, tmp_path):
    """``--prepare-only`` caches the models and times nothing; ``--no-retrain`` neither loads nor
    trains a retrained model (none in the cache afterwards), times TRU and reports no gaps."""
    module = load("tru_seconds")
    config = json.dumps(json.loads(tiny[tiny.index("--config") + 1]))
    common = ["--seeds", "1", "--config", config, "--out", str(tmp_path / "r")]
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    assert module.main(["--target", TINY, str(prepared), "0.05", "--prepare-only", *common]) is None
    cached = sorted(p.name for p in (prepared / "cache").glob("*.pth"))
    assert any("-original-" in n for n in cached) and any("-retrain-" in n for n in cached)
    assert not (tmp_path / "r").exists()                         # nothing timed, nothing written
    bare = tmp_path / "bare"
    bare.mkdir()
    report = module.main(["--target", TINY, str(bare), "0.05", "--no-retrain", "--reps", "1", "--tag", "_n", *common])
    assert not any("-retrain-" in p.name for p in (bare / "cache").glob("*.pth"))
    assert any("-original-" in p.name for p in (bare / "cache").glob("*.pth"))
    run = report["targets"][0]["requests"][0]["variants"]["default"]
    assert run["forget_gap"] is None and run["retain_gap"] is None and len(run["seconds"]) == 1
    assert run["stop"] == report["summary"][0]["stops"][0]
    assert report["summary"][0]["forget_gap"] is None
    assert report["targets"][0]["requests"][0]["interactions"] > 0 and report["retrained"] is False
    assert "n/a (no retrained model)" in (tmp_path / "r" / "tru_seconds_n.md").read_text()
    with pytest.raises(SystemExit):
        module.main(["--target", TINY, str(bare), "0.05", "--reps", "0", *common])


def test_solve_levels_benchmark(tiny, tmp_path):
    """Forget pairs against the same users' validation pairs: hit rates are shares (monotone in
    k), the deleted items' pairs and the rest split the forget pairs (pair-weighted), the variant
    ran, the reference rows' names are refused as variants."""
    module = load("solve_levels")
    dataset, config = tiny[1], tiny[3]
    argv = ["--dataset", dataset, "--config", config, "--runs", str(tmp_path / "runs"), "--seeds", "1",
            "--ks", "5,20", "--out", str(tmp_path / "r"), "--variants", json.dumps({"solve": {"tru_solve": "rows"}})]
    report = module.main(argv)
    request = report["requests"][0]
    assert set(request["models"]) == {"original", "retrain", "solve"}
    for m in request["models"].values():
        for group in ("forget", "valid"):
            assert 0 <= m[group]["5"] <= m[group]["20"] <= 1
        n_deleted, n = request["deleted_item_pairs"], request["pairs"]
        if m["partial"] and m["deleted_items"]:
            mixed = (m["partial"]["20"] * (n - n_deleted) + m["deleted_items"]["20"] * n_deleted) / n
            assert m["forget"]["20"] == pytest.approx(mixed)
    assert "solved" in request["models"]["solve"]["stop"]          # the variant ran the solve
    if not request["deleted_item_pairs"]:
        assert request["models"]["solve"]["partial"] == request["models"]["solve"]["forget"]
    assert "| 1 | solve |" in (tmp_path / "r" / "solve_levels.md").read_text()
    assert (tmp_path / "r" / "solve_levels.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        module.main([*argv[:-1], json.dumps({"retrain": {}})])
