"""No silent fallbacks: each place that used to fall back quietly now gives a clear error or a
documented, tested behaviour.

* TRU's stop with no user having both forget and reference pairs (the affected users have no
  validation pairs): the Recall gap used to be NaN, so the guarded stop neither stopped nor kept a
  state and TRU silently ran every epoch; now the gap is pooled, and a NaN distance is an error.
* The data digest hashed the feature caches, whose key holds the source's mtime: a copied data
  folder rejected every checkpoint; caches are now left out.
* A missing property file of the plugin was skipped; now it is an error naming the file.
* Ray tests skipped on any error; under CI they fail.
* The sweep's fresh-request judge restores ``data.config`` on error too.
"""
import logging
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY, start_ray_or_skip
from recbole_tru import config as config_module
from recbole_tru.checkpoint import data_fingerprint
from recbole_tru.data.features import cache_path, read_feature_file
from recbole_tru.data.forget import select_forget
from recbole_tru.training import build_model, load_data
from recbole_tru.tune import sweep
from recbole_tru.unlearn.gate import GuardedStop, gate_check, recall_gap, reference_pairs


# --------------------------------------------------------------------------- TRU's stop

def test_recall_gap_over_disjoint_users_is_the_pooled_gap():
    # forget: user 1 has both pairs in the top 20 -> recall 1; reference: users 2 and 3, one hit of two each
    gap = recall_gap(np.array([1, 1]), np.array([3, 7]), np.array([2, 2, 3, 3]), np.array([5, 50, 40, 1]), 20)
    assert gap == pytest.approx(0.5)
    # with a user in common, only that user counts (unchanged behaviour)
    gap = recall_gap(np.array([1, 2]), np.array([3, 70]), np.array([2, 2]), np.array([5, 50]), 20)
    assert gap == pytest.approx(abs(0.0 - 0.5))


def test_recall_difference_and_its_paired_standard_error_by_hand():
    """Users 1-3 have both kinds of pair (user 4 only reference pairs: left out). Per-user shares
    in the top 20: forget 1/2, 1, 0; reference 1/3, 0, 1/2; differences 1/6, 1, -1/2."""
    from recbole_tru.unlearn.gate import recall_difference

    fu, fr = np.array([1, 1, 2, 3]), np.array([3, 40, 5, 100])
    ru, rr = np.array([1, 1, 1, 2, 3, 3, 4]), np.array([10, 50, 60, 30, 2, 200, 1])
    d, se = recall_difference(fu, fr, ru, rr, 20)
    diffs = np.array([1 / 6, 1.0, -0.5])
    assert d == pytest.approx(diffs.mean()) == pytest.approx(2 / 9)
    assert se == pytest.approx(np.sqrt(((diffs - diffs.mean()) ** 2).sum() / 2) / np.sqrt(3))
    assert se == pytest.approx(0.43390, abs=1e-5)
    # one user with both: the difference as the stop reads it, no standard error
    d, se = recall_difference(np.array([1]), np.array([3]), np.array([1, 2]), np.array([50, 1]), 20)
    assert d == 1.0 and np.isnan(se)


def test_the_guarded_stop_refuses_a_nan_distance():
    stop = GuardedStop(delta=0.01)
    assert not stop.update(0.5, lambda: "state")
    with pytest.raises(ValueError, match=r"stop distance is nan at check 1"):
        stop.update(float("nan"), lambda: "never")
    assert stop.best_state == "state"


def test_a_check_whose_users_have_no_reference_pairs_gives_a_finite_distance():
    forget_users, forget_ranks = np.array([4, 4, 4]), np.array([1.0, 2.0, 30.0])
    groups = {"partial": (np.array([7, 8, 9]), np.array([11, 12, 13]))}
    record = gate_check(forget_users, forget_ranks, {"partial": np.ones(3, dtype=bool)}, groups,
                        {"partial": np.array([100.0, 3.0, 400.0])}, np.ones(3), match="user", gate=True,
                        temperature=0.5, stop_metric="recall", stop_k=20)
    # forget recall@20 of user 4 = 2/3; the reference users' mean recall = (0 + 1 + 0) / 3
    assert record["distance"] == pytest.approx(2 / 3 - 1 / 3)
    assert np.isfinite(record["distance"])


def test_the_reference_falls_back_to_all_validation_pairs_and_says_so(make_config, caplog):
    config = make_config("VBPR")
    _, train, valid, test = load_data(config)

    class Data:                                      # the parts of UnlearnData reference_pairs reads
        valid_users = valid.dataset.inter_feat["user_id"].numpy()
        valid_items = valid.dataset.inter_feat["item_id"].numpy()

    forget = select_forget(config, train.dataset, heldout=(valid.dataset, test.dataset))
    Data.forget = forget
    outsider = int(Data.valid_users.max()) + 100      # a user with no validation pair
    forget.users = np.full_like(forget.users, outsider)
    with caplog.at_level(logging.INFO):
        groups = reference_pairs(Data, np.ones(len(forget.users), dtype=bool), np.zeros(len(forget.users), dtype=bool),
                                 None, 5, np.random.default_rng(0))
    assert "none of the 1 partially deleted user(s) has validation pairs" in caplog.text
    assert len(groups["partial"][0]) == 5 and outsider not in groups["partial"][0]


# --------------------------------------------------------------------------- the data digest

def test_a_copied_data_folder_keeps_its_digest_though_its_feature_cache_is_rebuilt(tiny_root, tmp_path):
    source = tmp_path / "a" / TINY
    shutil.copytree(tiny_root / TINY, source)
    feature = source / f"{TINY}.textfeat"
    read_feature_file(feature, cache=True)
    assert cache_path(feature).is_file()
    before = data_fingerprint(source)
    copy = tmp_path / "b" / TINY
    copy.mkdir(parents=True)
    for path in source.iterdir():                    # a plain copy: new modification times
        shutil.copyfile(path, copy / path.name)
    cached_bytes = cache_path(copy / feature.name).read_bytes()
    read_feature_file(copy / feature.name, cache=True)      # the key (mtime) differs: rebuilt
    assert cache_path(copy / feature.name).read_bytes() != cached_bytes
    assert data_fingerprint(copy) == before
    (copy / f"{TINY}.textfeat").write_text("item_id:token\ttext:float_seq\n", encoding="utf-8")
    assert data_fingerprint(copy) != before          # the data itself still counts


# --------------------------------------------------------------------------- property files

@pytest.mark.parametrize("name", ["overall.yaml", "unlearn/tru.yaml", "unlearn/audit.yaml"])
def test_a_missing_property_file_is_an_error_naming_it(name, tmp_path, monkeypatch):
    copy = tmp_path / "properties"
    shutil.copytree(config_module.PROPERTIES, copy)
    (copy / name).unlink()
    monkeypatch.setattr(config_module, "PROPERTIES", copy)
    with pytest.raises(FileNotFoundError, match=rf"{copy / name} are missing: the installation is incomplete"):
        config_module.plugin_property_files("VBPR", "ml-100k-mm")


def test_a_model_or_data_set_without_its_own_property_file_is_fine():
    names = [p.name for p in config_module.plugin_property_files("BPR", "my-data")]
    assert names[0] == "overall.yaml" and "BPR.yaml" not in names and "tru.yaml" in names


# --------------------------------------------------------------------------- Ray under CI

def test_ray_that_cannot_start_skips_here_and_fails_under_ci(monkeypatch):
    import ray

    def broken(**kwargs):
        raise RuntimeError("no Ray today")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", broken)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="Ray cannot start"):
        start_ray_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="no Ray today"):
        start_ray_or_skip()


# --------------------------------------------------------------------------- the sweep's judge

def test_judge_fresh_restores_the_data_config_when_a_method_fails(make_config, tmp_path, monkeypatch):
    config = make_config("VBPR")
    _, train, valid, test = load_data(config)
    original = build_model(config, train.dataset)
    made = []
    real = sweep.UnlearnData
    monkeypatch.setattr(sweep, "UnlearnData", lambda *a: made.append(real(*a)) or made[-1])

    def failing(*args, **kwargs):
        raise RuntimeError("the method failed")

    monkeypatch.setattr(sweep.pipeline, "unlearn_method", failing)
    prep = {"datasets": (train.dataset, valid.dataset, test.dataset), "cache": tmp_path / "cache", "held_key": "",
            "original": original}
    with pytest.raises(RuntimeError, match="the method failed"):
        sweep.judge_fresh(config, "tru", {"tru_budget": 0.5}, prep)
    assert made and made[0].config is config
    assert torch.is_tensor(next(original.parameters()))
