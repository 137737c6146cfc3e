"""The scale benchmark runs end to end at a tiny synthetic size (so it cannot rot), and the
fast paths it relies on give the same results as the plain ones."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_tru.data.retained import user_item_csr
from recbole_tru.model.ranking import history_entries, pair_ranks, sample_items, user_scores
from recbole_tru.training import build_model, load_data

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"embedding_size": 8, "content_embedding_size": 8, "latent_dim": 8, "sisa_parallel": False,
         "sisa_shards": 2, "train_batch_size": 512}


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scale():
    return load_benchmark("scale")


def test_scale_benchmark_end_to_end_at_tiny_size(scale, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    report = scale.main(["--sizes", "tiny", "--bench", "load,train,step,unlearn", "--data", str(tmp_path / "data"), "--out", str(out), "--inline",
                         "--models", "VBPR,MMGCN", "--train-models", "VBPR,LightGCN", "--methods", "tru,reverse",
                         "--epochs", "2", "--repeats", "2", "--load-repeats", "1", "--train-epochs", "2",
                         "--fixed-forget", "40", "--forget-sweep", "20,40", "--sweep-size", "tiny",
                         "--variants", json.dumps({"tru[no repair]": {"tru_repair_epochs": 0}}),
                         "--config", json.dumps(SMALL)])
    for name in ("scale.json", "scale.md", "scale_train.png", "scale_unlearn.png"):
        assert (out / name).is_file(), name
    assert report["data"]["tiny"]["generated_seconds"] is not None
    assert {r["file"] for r in report["load"]} == {"synthetic-tiny.imagelikefeat", "synthetic-tiny.textlikefeat"}
    assert all(r["cached"]["seconds"] > 0 for r in report["load"])
    assert [(r["model"], len(r["epoch_seconds"])) for r in report["train"]] == [("VBPR", 2), ("LightGCN", 2)]
    (step,) = report["step"]
    assert step["tru_step_full"] > 0 and step["plan_nodes"][-1] <= step["n_nodes"]
    for row in report["unlearn"]:
        fixed, sweep = row["forget"]
        assert fixed["n_forget"] == 40 and sweep["n_forget"] == 20
        assert fixed["methods"]["retrain"]["epochs"] <= 2
        assert len(fixed["methods"]["tru"]["runs"]) == 2 and fixed["methods"]["tru"]["seconds"] > 0
        assert "test_ndcg@20" in fixed["methods"]["tru"] and "retrain" not in sweep["methods"]
        variant = fixed["methods"]["tru[no repair]"]
        assert variant["config"] == {"tru_repair_epochs": 0} and "repair_epochs" not in variant["phases"]
        assert "tru[no repair]" not in sweep["methods"]
        # judged beside the methods where there is a retrain: the original and the start state
        points = fixed["reference_points"]
        assert set(points) == {"original", "start"} and "reference_points" not in sweep
        if row["model"] == "VBPR":            # no graph: the start state scores as the original
            assert points["start"] == points["original"]
    text = (out / "scale.md").read_text()
    assert "SYNTHETIC" in text and "| synthetic-tiny | VBPR | 40 | tru |" in text
    assert "| synthetic-tiny | MMGCN | 40 | (start) | | |" in text
    merged = scale.main(["--merge", str(out / "scale.json"), str(out / "scale.json"), "--out", str(tmp_path / "m")])
    assert len(merged["unlearn"]) == 2 * len(report["unlearn"]) and len(merged["commands"]) == 2
    assert (tmp_path / "m" / "scale_unlearn.png").is_file()
    scale.main(["--render", str(out / "scale.json"), "--out", str(tmp_path / "r")])    # tables and plots only
    assert (tmp_path / "r" / "scale.md").read_bytes() == (out / "scale.md").read_bytes()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["scale.md", "scale_train.png", "scale_unlearn.png"]
    # TRU's parts, as TRUTrainer.phase_seconds recorded them (no wrapping of its methods)
    for row in report["unlearn"]:
        phases = row["forget"][0]["methods"]["tru"]["phases"]
        assert phases and set(phases) <= {"reset", "checks", "targeted_steps", "repair_epochs"}
        assert all(seconds >= 0 for seconds in phases.values())


def test_a_measurement_subprocess_reports_its_progress(scale, tmp_path, capsys):
    """A measurement in its own process is not silent: its stages and epochs are echoed as they
    come, labelled with the task; its result still comes back; a failure names the task."""
    scale.ensure_data("tiny", tmp_path / "data")
    task = {"kind": "train", "size": "tiny", "model": "VBPR", "data": str(tmp_path / "data"), "epochs": 2,
            "config": SMALL}
    result = scale.run_one(task, tmp_path)
    echoed = capsys.readouterr().out
    assert "[train tiny VBPR," in echoed and "data loaded in" in echoed
    assert "training epoch 1/2" in echoed and "training epoch 2/2" in echoed
    assert len(result["epoch_seconds"]) == 2 and (tmp_path / "train-tiny-VBPR.stderr").is_file()
    with pytest.raises(RuntimeError, match="train tiny VBPR failed"):
        scale.run_one({**task, "data": str(tmp_path / "missing")}, tmp_path)


def test_phase_seconds_are_read_off_the_trainer():
    from types import SimpleNamespace

    measure = load_benchmark("scale_measure")
    trainer = SimpleNamespace(phase_seconds={"reset": 0.5, "checks": 1.0, "targeted_steps": 2.0, "repair": 3.0})
    assert measure.phase_seconds(trainer) == {"reset": 0.5, "checks": 1.0, "targeted_steps": 2.0, "repair_epochs": 3.0}
    assert measure.phase_seconds(SimpleNamespace()) == {}                 # a method that records none


def test_measurements_run_in_their_own_process(scale, tmp_path):
    from recbole_tru.data.builders.synthetic import build_synthetic

    written = build_synthetic("tiny", tmp_path, log=lambda *a: None)
    result = scale.run_one({"kind": "load", "path": str(written["textlike"]), "mode": "cached", "repeats": 2}, tmp_path)
    assert len(result["all_seconds"]) == 2 and result["peak_rss_mb"] > 0
    with pytest.raises(RuntimeError, match="load"):
        scale.run_one({"kind": "load", "path": str(tmp_path / "missing"), "mode": "text", "repeats": 1}, tmp_path)


def test_exact_forget_sizes():
    measure = load_benchmark("scale_measure")

    class Cfg(dict):
        pass

    for n_train in (1287, 128_633, 222_941):
        config = Cfg()
        assert measure._forget_config(config, n_train, 1000) == 1000
        assert round(config["forget_share"] * n_train) == 1000


# ------------------------------------------------------------------------------ fast paths

@pytest.mark.parametrize("combination", ["concat", "add"])
def test_mmgcn_restricted_propagation_equals_the_full_one(make_config, combination):
    config = make_config("MMGCN", combination=combination, n_layers=2)
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset)
    model.RESTRICT_COST, model.RESTRICT_TARGETS = 10.0, 1.0      # always restrict
    users, items = model.forward()
    full = torch.cat([users, items])
    nodes = np.array([3, 5, model.n_users + 4])
    index, out = model.forward_nodes(nodes)
    assert len(index) == 3
    torch.testing.assert_close(out, full[index], rtol=1e-5, atol=1e-6)

    batch = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])

    def scores_and_grads(share):
        model.RESTRICT_COST = share
        pos, neg = model.pair_scores(*batch)
        loss = -torch.nn.functional.logsigmoid(pos - neg).sum()
        return pos.detach(), torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    pos_r, grads_r = scores_and_grads(1.0)
    pos_f, grads_f = scores_and_grads(0.0)                      # never restrict: the full graph
    torch.testing.assert_close(pos_r, pos_f, rtol=1e-5, atol=1e-6)
    for g_r, g_f in zip(grads_r, grads_f):
        assert (g_r is None) == (g_f is None)
        if g_r is not None:
            torch.testing.assert_close(g_r, g_f, rtol=1e-4, atol=1e-6)


def test_mmgcn_restriction_is_skipped_for_large_neighbourhoods(make_config):
    config = make_config("MMGCN")
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset)
    everyone = np.arange(1, model.n_users)
    assert model.forward_nodes(everyone) is None                # the whole graph: full propagation


def test_frozen_projection_is_computed_once_and_refreshed_on_change(make_config):
    config = make_config("MMGCN")
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset)
    branch = model.branch["text"]
    features = model.feature("text")
    branch.project.requires_grad_(False)
    calls = []
    branch.project.register_forward_hook(lambda *a: calls.append(1))
    first = branch.item_inputs(features)
    assert torch.equal(branch.item_inputs(features), first) and len(calls) == 1
    with torch.no_grad():
        branch.project.weight.mul_(2.0)                         # any in-place change
    branch.item_inputs(features)
    assert len(calls) == 2
    branch.project.requires_grad_(True)
    out = branch.item_inputs(features)
    assert out.requires_grad and len(calls) == 3                # trainable: never memoised


def test_vectorised_history_mask_matches_the_loop():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 400), rng.integers(1, 50, 400)
    indptr, indices = user_item_csr(users, items, 31)
    query = np.array([5, 0, 30, 5, 17])
    rows, cols = history_entries((indptr, indices), query)
    expected = [(r, c) for r, u in enumerate(query) for c in indices[indptr[u]:indptr[u + 1]]]
    assert list(zip(rows.tolist(), cols.tolist())) == [(r, int(c)) for r, c in expected]
    assert history_entries((indptr, indices), np.array([], dtype=np.int64))[0].size == 0


def _ranked_setup(make_config, name):
    """(untrained model, history of all but the first 10 training pairs, their users, items)."""
    config = make_config(name)
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset)
    ds = train.dataset
    u, i = ds.inter_feat["user_id"].numpy(), ds.inter_feat["item_id"].numpy()
    return model, user_item_csr(u[10:], i[10:], ds.user_num), u[:10], i[:10]


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_pair_ranks_match_a_direct_count(make_config, name):
    model, history, users, items = _ranked_setup(make_config, name)    # pairs not in the history
    ranks = pair_ranks(model, users, items, history, chunk=3)
    scores = user_scores(model, np.unique(users), history)
    row = np.searchsorted(np.unique(users), users)
    direct = [1 + int((scores[r] > scores[r, it]).sum()) for r, it in zip(row, items)]
    assert ranks.tolist() == direct


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_score_items_are_the_full_sort_columns(make_config, name):
    from recbole.data.interaction import Interaction

    model, _, users, _ = _ranked_setup(make_config, name)
    model.eval()
    users, items = torch.as_tensor(np.unique(users)), torch.tensor([5, 1, 33, 5, 59])
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        torch.testing.assert_close(model.score_items(users, items), full[:, items], rtol=1e-5, atol=1e-5)
        if name == "VBPR":                                      # the sample's content is memoised ...
            model.score_items(users, items)
            first = model._sample_content_cache
            model.user_embedding.weight[users[0]] += 1.0
            model.score_items(users, items)
            assert model._sample_content_cache is first
            model.projection["text"].weight[0, 0] += 0.5        # ... until the content side changes
            full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
            torch.testing.assert_close(model.score_items(users, items), full[:, items], rtol=1e-5, atol=1e-5)
            assert model._sample_content_cache is not first


def test_sample_items_is_a_sorted_distinct_draw_or_none():
    rng = np.random.default_rng(0)
    draw = sample_items(100, 30, rng)
    assert len(draw) == 30 and np.all(np.diff(draw) > 0) and draw.min() >= 1 and draw.max() <= 99
    assert sample_items(100, 0, rng) is None and sample_items(100, 99, rng) is None


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_sampled_ranks_are_exact_when_the_sample_is_the_catalogue(make_config, name):
    model, history, users, items = _ranked_setup(make_config, name)
    exact = pair_ranks(model, users, items, history, chunk=3)
    sampled = pair_ranks(model, users, items, history, chunk=3, candidates=np.arange(1, model.n_items))
    np.testing.assert_allclose(sampled, exact)


def test_sampled_ranks_are_unbiased_estimates_of_the_exact_rank(make_config):
    """E[a * C / n] = the exact count above: the mean over many samples is within 4 standard
    errors of the exact rank, for every pair."""
    model, history, users, items = _ranked_setup(make_config, "VBPR")
    exact = pair_ranks(model, users, items, history)
    rng = np.random.default_rng(5)
    draws = np.array([pair_ranks(model, users, items, history, candidates=sample_items(model.n_items, 15, rng))
                      for _ in range(300)])
    error = np.abs(draws.mean(0) - exact)
    assert np.all(error <= 4 * draws.std(0) / np.sqrt(len(draws)) + 1e-9)
    assert draws.std(0).max() > 0                               # they are estimates, not the exact ranks


def test_vbpr_catalogue_content_is_reused_across_user_and_item_id_updates(make_config):
    """Full-sort scores stay exact while the content projection of the catalogue is computed
    once, and again only after a content-side tensor changes."""
    from recbole.data.interaction import Interaction

    config = make_config("VBPR")
    _, train, _, _ = load_data(config)
    model = build_model(config, train.dataset).eval()
    users = torch.tensor([1, 2])

    def full_sort():
        return model.full_sort_predict(Interaction({"user_id": users})).view(2, -1)

    def direct():
        items = torch.arange(model.n_items)
        (score,) = model.pair_scores(users.repeat_interleave(model.n_items), items.repeat(2))
        return score.view(2, -1)

    with torch.no_grad():
        full_sort()
        first = model._content_cache
        model.user_embedding.weight[1] += 1.0                   # user-side steps
        model.theta["text"].weight[2] -= 0.5
        torch.testing.assert_close(full_sort(), direct(), rtol=1e-5, atol=1e-5)
        model.item_bias.weight[3] += 1.0                        # item ID steps (TRU's deleted items)
        model.item_embedding.weight[4] -= 0.5
        torch.testing.assert_close(full_sort(), direct(), rtol=1e-5, atol=1e-5)
        assert model._content_cache is first                    # not recomputed
        model.projection["text"].weight[0, 0] += 0.1            # a content-side step: recomputed
        torch.testing.assert_close(full_sort(), direct(), rtol=1e-5, atol=1e-5)
        assert model._content_cache is not first


def test_scale_summary_rows_from_both_benchmarks(tmp_path):
    """scale_summary.csv: a share request is labelled as a percentage, a count as itself; the
    speedup is retrain's seconds / the method's from the same run (empty without a retrain);
    a variant with tru_stop_delta 0 is marked forced; each row names its data's generator affinity;
    the gaps of a one-request run are |recall - retrain's| and |NDCG - retrain's|, without an interval."""
    summary = load_benchmark("scale_summary")
    scale_report = {"data": {"baby": {"generator": {"affinity": 3.0}}}, "unlearn": [{"model": "MMGCN", "size": "baby", "forget": [
        {"forget": 0.05, "methods": {"retrain": {"seconds": 100.0, "forget_recall@20": 0.10, "test_ndcg@20": 0.05},
                                     "tru": {"seconds": 4.0, "forget_recall@20": 0.125, "test_ndcg@20": 0.049},
                                     "tru[delta=0]": {"seconds": 8.0, "config": {"tru_stop_delta": 0.0}},
                                     "sisa": {"seconds": None, "note": "not available"}}},
        {"forget": 250, "methods": {"tru": {"seconds": 0.5}}}]}]}
    latency_report = {"method": "tru", "kinds": ["user"], "config": {}, "backbones": [
        {"model": "VBPR", "dataset": "synthetic-clothing", "summary": {"user": {"median_seconds": 0.25}}}]}
    paths = []
    for name, report in (("scale.json", scale_report), ("latency.json", latency_report)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "scale_summary.csv"
    summary.main([*map(str, paths), "--out", str(out)])
    lines = out.read_text().splitlines()
    assert lines == ["backbone,size,request,method,seconds,speedup,forced,generator_affinity,"
                     "requests,forget_gap,forget_gap_ci,retain_gap,retain_gap_ci",
                     "MMGCN,baby,5%,retrain,100.000,,0,3.0,1,,,,",
                     "MMGCN,baby,5%,tru,4.000,25.0,0,3.0,1,0.0250,,0.0010,",
                     "MMGCN,baby,5%,tru[delta=0],8.000,12.5,1,3.0,1,,,,",
                     "MMGCN,baby,250,tru,0.500,,0,3.0,1,,,,",
                     "VBPR,clothing,one-user,tru,0.250,,0,1.5,1,,,,"]      # no record: the generator before records
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="bad.json"):
        summary.main([str(tmp_path / "bad.json"), "--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_scale_summary_rows_of_tru_seconds(tmp_path):
    """Rows of a tru_seconds.py report: method tru[<variant>], the median of the requests' medians,
    no speedup (nothing retrained in that run), forced where the variant runs every epoch, the
    request labelled by its pair count, gaps only where retrained models judged the run."""
    summary = load_benchmark("scale_summary")
    requests = [{"seed": s, "interactions": 1000, "data_generator": {"affinity": 3.0}} for s in (1, 2)]
    report = {"model": "MMGCN", "variant_config": {"defaults": {}, "fixed work": {"tru_stop": "epochs"}},
              "targets": [{"label": "synthetic-baby", "dataset": "synthetic-baby", "forget_share": 0.00831,
                           "requests": requests}],
              "summary": [{"dataset": "synthetic-baby", "variant": "defaults", "requests": 2, "median": 4.5,
                           "forget_gap": None, "retain_gap": None},
                          {"dataset": "synthetic-baby", "variant": "fixed work", "requests": 2, "median": 9.25,
                           "forget_gap": {"mean": 0.02, "ci_low": 0.01, "ci_high": 0.03},
                           "retain_gap": {"mean": 0.001, "ci_low": 0.0, "ci_high": 0.002}}]}
    path = tmp_path / "tru_seconds.json"
    path.write_text(json.dumps(report))
    out = tmp_path / "s.csv"
    summary.main([str(path), "--out", str(out)])
    assert out.read_text().splitlines()[1:] == ["MMGCN,baby,1000,tru[defaults],4.500,,0,3.0,2,,,,",
                                                "MMGCN,baby,1000,tru[fixed work],9.250,,1,3.0,2,0.0200,0.0100,0.0010,0.0010"]
    with pytest.raises(SystemExit, match="records its generator"):
        summary.main([str(path), "--affinity", "tru_seconds=1.5", "--out", str(out)])


def test_scale_summary_repeated_requests_and_an_unrecorded_generator(tmp_path):
    """Rows of an unlearning.py report on synthetic data: the median seconds over the requests,
    retrain's median / the method's, the gaps' means with their t-interval half-widths (hand-
    computed: two requests, t(1) = 12.706); --affinity gives the generator of a report without a
    record, and is refused for one that has it."""
    summary = load_benchmark("scale_summary")

    def request(retrain_s, tru_s):
        return {"forget": {"share_of_train": 0.0500025, "interactions": 6017}, "methods": {
            "original": {"forget_gap": 0.3}, "retrain": {"seconds": retrain_s}, "tru": {"seconds": tru_s}}}
    interval = {"mean": 0.02, "ci_low": 0.02 - 12.706 * 0.01 / 2 ** 0.5, "ci_high": 0.02 + 12.706 * 0.01 / 2 ** 0.5}
    report = {"dataset": "synthetic-baby", "data_generator": {"affinity": 3.0}, "cells": [
        {"model": "VBPR", "regime": "interaction", "requests": [request(200.0, 8.0), request(240.0, 12.0)],
         "aggregate": {"tru": {"forget_gap": interval, "retain_gap": {"mean": 0.001, "ci_low": None}}}}]}
    path = tmp_path / "unlearning.json"
    path.write_text(json.dumps(report))
    rows = summary.main([str(path), "--out", str(tmp_path / "s.csv")])
    assert rows[0] == {**rows[0], "method": "retrain", "seconds": "220.000", "speedup": "", "forget_gap": "",
                       "requests": 2}
    assert rows[1] == {"backbone": "VBPR", "size": "baby", "request": "5%", "method": "tru", "seconds": "10.000",
                       "speedup": "22.0", "forced": 0, "generator_affinity": 3.0, "requests": 2,
                       "forget_gap": "0.0200", "forget_gap_ci": f"{12.706 * 0.01 / 2 ** 0.5:.4f}",
                       "retain_gap": "0.0010", "retain_gap_ci": ""}
    report["cells"][0]["requests"][0]["forget"] = {"share_of_train": 1000 / 120340, "interactions": 1000}
    path.write_text(json.dumps(report))
    assert summary.main([str(path), "--out", str(tmp_path / "s.csv")])[1]["request"] == "1000"   # not "1%"
    with pytest.raises(SystemExit, match="records its generator"):
        summary.main([str(path), "--affinity", "unlearning=3", "--out", str(tmp_path / "s.csv")])
    del report["data_generator"]
    path.write_text(json.dumps(report))
    assert summary.main([str(path), "--out", str(tmp_path / "s.csv")])[1]["generator_affinity"] == 1.5
    assert summary.main([str(path), "--affinity", "unlearning=3", "--out", str(tmp_path / "s.csv")])[1][
        "generator_affinity"] == 3.0
    with pytest.raises(SystemExit, match="not among the reports"):
        summary.main([str(path), "--affinity", "other=3", "--out", str(tmp_path / "s.csv")])
