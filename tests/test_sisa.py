"""SISA: shards by user keep a user in one shard; a deletion retrains only the shards that held
deleted data (the others stay bit-identical) and a retrained shard is exactly a fresh fit on
its retained rows; the ensemble averages its submodels and works with the judge; Ray tasks
give the same shards as training in-process."""
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import TINY, TINY_CONFIG, tiny_config
from recbole_tru.data.forget import select_forget
from recbole_tru.data.retained import UnlearnData
from recbole_tru.model.ranking import user_scores
from recbole_tru.training import build_model, load_data
from recbole_tru.unlearn import pipeline
from recbole_tru.unlearn.evaluation import Judge
from recbole_tru.unlearn.sisa import SISAEnsemble, SISATrainer, assign_shards, train_shard


def sisa_config(root, workdir, model="VBPR", **overrides):
    return tiny_config(root, model, workdir, **{
        "forget_regime": "user", "forget_share": 0.05, "sisa_shards": 4, "sisa_split": "user", "sisa_parallel": False,
        "unlearn_cache": False, **overrides})


def make_trainer(config):
    _, train, valid, test = load_data(config)
    forget = select_forget(config, train.dataset, heldout=(valid.dataset, test.dataset))
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    start = pipeline.start_from(config, data, build_model(config, train.dataset))
    return SISATrainer(config, start, data)


@pytest.fixture(scope="module")
def unlearned(tiny_root, workdir):
    """One SISA run per backbone (K=4 by user, 5% of users deleted), trained in-process."""
    cache = {}

    def get(model):
        if model not in cache:
            trainer = make_trainer(sisa_config(tiny_root, workdir, model))
            trainer.unlearn()
            cache[model] = trainer
        return cache[model]

    return get


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- shards

def test_user_split_puts_each_user_in_exactly_one_shard_and_balances_shards():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 201), rng.integers(5, 60, size=200))
    shard = assign_shards(users, 4, "user", seed=3)
    for u in np.unique(users):
        assert len(np.unique(shard[users == u])) == 1
    sizes = np.bincount(shard, minlength=4)
    assert sizes.min() > 0.8 * len(users) / 4 and sizes.max() < 1.2 * len(users) / 4
    assert np.array_equal(shard, assign_shards(users, 4, "user", seed=3))          # seeded
    assert not np.array_equal(shard, assign_shards(users, 4, "user", seed=4))


def test_random_split_cuts_interactions_into_equal_shards():
    users = np.repeat(np.arange(1, 51), 10)
    shard = assign_shards(users, 4, "random", seed=0)
    assert sorted(np.bincount(shard).tolist()) == [125, 125, 125, 125]
    assert any(len(np.unique(shard[users == u])) > 1 for u in np.unique(users))   # users straddle shards


def test_split_errors_are_clear():
    with pytest.raises(ValueError, match="sisa_split"):
        assign_shards(np.arange(1, 10), 2, "items", seed=0)
    with pytest.raises(ValueError, match="empty"):
        assign_shards(np.array([1, 1, 2]), 4, "user", seed=0)


def test_tiny_run_users_sit_in_one_shard(unlearned):
    trainer = unlearned("VBPR")
    users = trainer.data.train_dataset.inter_feat["user_id"].numpy()
    for u in np.unique(users):
        assert len(np.unique(trainer.shard_of_row[users == u])) == 1


# --------------------------------------------------------------------------- deletion

@pytest.mark.parametrize("model", ["VBPR", "MMGCN"])
def test_deletion_retrains_only_the_shards_that_held_deleted_users(unlearned, model):
    trainer = unlearned(model)
    forget = trainer.data.forget
    touched = sorted(set(trainer.shard_of_row[forget.rows].tolist()))
    assert 0 < len(touched) < 4, "the test needs a request that misses some shards"
    assert trainer.retrained_shards == touched
    assert len([r for r in trainer.log if r["phase"] == "retrain"]) == len(touched)
    assert len([r for r in trainer.log if r["phase"] == "original"]) == 4
    for k in range(4):
        kept = same(trainer.original_states[k], trainer.states[k])
        assert kept == (k not in touched), f"shard {k}"
        live = {n: p.detach() for n, p in trainer.model.submodels[k].state_dict().items()}
        assert same(live, trainer.states[k])                 # the ensemble holds the final states
    # no retrained shard holds a deleted interaction any more
    for k in touched:
        assert not np.isin(trainer.rows(k, retained=True), forget.rows).any()
    assert trainer.seconds > 0 and trainer.seconds < trainer.original_seconds + 60


def test_retrained_shard_is_exactly_a_fresh_fit_on_its_retained_rows(unlearned):
    trainer = unlearned("VBPR")
    k = trainer.retrained_shards[0]
    state, _ = train_shard({"config": trainer.config, "train": trainer.data.train_dataset,
                            "valid": trainer.data.eval_loader("valid")},
                           {"shard": k, "rows": trainer.rows(k, retained=True)})
    assert same(state, trainer.states[k])


def test_mmgcn_submodels_read_their_own_shard_graph(unlearned):
    trainer = unlearned("MMGCN")
    degrees = [int(m.adjacency._nnz()) for m in trainer.model.submodels]
    assert len(set(degrees)) > 1                       # different graphs
    full = build_model(trainer.config, trainer.data.retain_dataset).adjacency._nnz()
    assert sum(degrees) == full                         # the shards partition the retained graph


# --------------------------------------------------------------------------- the ensemble

def test_ensemble_scores_are_the_mean_of_the_submodels(unlearned):
    model = unlearned("VBPR").model
    model.eval()
    users = torch.tensor([1, 5, 9])
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users}))
        subs = torch.stack([m.full_sort_predict(Interaction({"user_id": users})) for m in model.submodels])
        assert torch.allclose(full, subs.mean(0))
        pairs = Interaction({"user_id": users, "item_id": torch.tensor([2, 3, 4])})
        assert torch.allclose(model.predict(pairs), torch.stack([m.predict(pairs) for m in model.submodels]).mean(0))
    with pytest.raises(NotImplementedError):
        model.calculate_loss(pairs)


def test_ensemble_works_with_the_judge_and_rankings(unlearned):
    trainer = unlearned("VBPR")
    assert isinstance(trainer.model, SISAEnsemble)
    judge = Judge(trainer.config, trainer.data, trainer.model.submodels[0])
    report = judge.report(trainer.model)
    assert 0 <= report["retain"]["ndcg@20"] <= 1 and 0 <= report["topk_overlap_with_retrain"] <= 1
    trainer.model.train()
    scores = user_scores(trainer.model, np.array([1, 2]), trainer.data.eval_history())
    assert scores.shape == (2, trainer.data.n_items) and torch.isinf(scores[:, 0]).all()
    assert trainer.model.training and all(m.training for m in trainer.model.submodels)   # mode restored


def run_sisa(root, workdir, **overrides):
    trainer = make_trainer(sisa_config(root, workdir, unlearn_cache=True, **overrides))
    trainer.unlearn()
    return trainer


def test_original_submodels_are_cached_across_requests(tiny_root, workdir):
    first = run_sisa(tiny_root, workdir, forget_regime="interaction", forget_seed=5)
    second = run_sisa(tiny_root, workdir, forget_regime="interaction", forget_seed=6)
    assert [r for r in first.log if r["phase"] == "original"]
    assert not [r for r in second.log if r["phase"] == "original"]          # loaded, not trained
    assert all(same(a, b) for a, b in zip(first.original_states, second.original_states))
    assert first.retrained_shards and second.retrained_shards


def test_original_submodels_do_not_depend_on_the_request_in_the_user_regime(tiny_root, workdir):
    """SISA's original is trained before any request: it validates on every validation pair,
    including those of users a later request deletes."""
    first = run_sisa(tiny_root, workdir, forget_seed=7)
    assert len(first.data.original_valid_dataset) > len(first.data.valid_dataset)   # the request dropped rows
    second = run_sisa(tiny_root, workdir, forget_seed=8)
    assert not [r for r in second.log if r["phase"] == "original"]
    assert all(same(a, b) for a, b in zip(first.original_states, second.original_states))


# --------------------------------------------------------------------------- Ray tasks


def test_ray_tasks_train_the_same_shards_as_in_process(tiny_root, workdir, unlearned, ray_local):
    sequential = unlearned("VBPR")
    parallel = make_trainer(sisa_config(tiny_root, workdir, sisa_parallel=True))
    parallel.unlearn()
    assert parallel.retrained_shards == sequential.retrained_shards
    for a, b in zip(parallel.states, sequential.states):
        assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_sisa_sits_in_the_results_table_beside_the_other_methods(tiny_root, workdir):
    from recbole_tru.quick_start import run_recbole_tru

    params = {**TINY_CONFIG, "data_path": str(tiny_root), "checkpoint_dir": str(workdir / "saved"),
              "output_dir": str(workdir / "table"), "forget_regime": "user", "unlearn": "sisa,reverse",
              "sisa_parallel": False, "audit_enabled": False}
    results = run_recbole_tru(model="VBPR", dataset=TINY, config_dict=params, read_cmd_line=False)
    sisa = results["methods"]["sisa"]
    assert sisa["seconds"] > 0 and 0 <= sisa["retain"]["ndcg@20"] <= 1
    summary = sisa["details"]["log"][-1]
    assert summary["phase"] == "summary" and summary["unlearn_seconds"] == sisa["seconds"]
    assert 0 < len(summary["retrained_shards"]) < 4
    rows = (Path(results["output_dir"]) / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["original", "sisa", "reverse"]
