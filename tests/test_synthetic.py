"""The synthetic data generator: exact counts, long-tailed popularity, content that predicts
interactions, determinism, and files that the plugin reads."""
import numpy as np
import pytest
import yaml

from recbole_tru.config import Config
from recbole_tru.data import create_dataset
from recbole_tru.data.builders.__main__ import main as builders_main
from recbole_tru.data.builders.synthetic import (SIZES, Generator, Size, _feature_chunks, build_synthetic,
                                                 generate_interactions)
from recbole_tru.data.features import read_feature_file

TINY = SIZES["tiny"]
MEDIUM = Size(2_000, 1_000, 20_000, 32, 16)       # big enough for distribution checks, ~0.1 s


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    written = build_synthetic("tiny", out, log=lambda *a: None)
    return out, written


@pytest.fixture(scope="module")
def medium():
    return generate_interactions(MEDIUM)


def read_inter(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    return [line.split("\t") for line in lines[1:]]


def test_counts_are_exact(tiny_dir, medium):
    _, written = tiny_dir
    rows = read_inter(written["inter"])
    assert len(rows) == TINY.interactions
    assert len({u for u, _, _ in rows}) == TINY.users
    assert len({i for _, i, _ in rows}) == TINY.items
    assert len({(u, i) for u, i, _ in rows}) == len(rows)             # no duplicate pair
    users, items, times, _, _ = medium
    assert len(users) == MEDIUM.interactions
    assert len(np.unique(users)) == MEDIUM.users and len(np.unique(items)) == MEDIUM.items
    assert len(np.unique(users * MEDIUM.items + items)) == len(users)


def test_every_user_has_the_minimum_and_times_increase(medium):
    users, _, times, _, _ = medium
    assert np.bincount(users).min() >= Generator().min_per_user >= 1
    same_user = users[1:] == users[:-1]
    assert (np.diff(times)[same_user] >= 0).all()


def test_popularity_is_long_tailed(medium):
    _, items, _, _, _ = medium
    counts = np.sort(np.bincount(items, minlength=MEDIUM.items))[::-1]
    top = counts[:MEDIUM.items // 100].sum() / counts.sum()
    assert top > 5 * 0.01                 # the top 1% of items hold over 5x their uniform share
    assert counts[MEDIUM.items // 2:].sum() / counts.sum() < 0.3   # the bottom half holds little
    assert counts.min() >= 1              # every item occurs


def test_content_predicts_interactions(medium):
    """A user's profile (summed content of their items but one) is closer to the held-out item
    than to a random item for most users (paired AUC > 0.6; 0.5 = content says nothing)."""
    users, items, _, _, item_factors = medium
    rng = np.random.default_rng(0)
    first = np.searchsorted(users, np.arange(MEDIUM.users))
    held = items[first]                                         # each user's first item
    keep = np.ones(len(users), dtype=bool)
    keep[first] = False
    for kind, dim in (("imagelike", MEDIUM.imagelike_dim), ("textlike", MEDIUM.textlike_dim)):
        feats = np.concatenate(list(_feature_chunks(np.random.default_rng(1), item_factors, dim, kind, Generator())))
        feats = feats - feats.mean(0)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        profile = np.zeros((MEDIUM.users, dim))
        np.add.at(profile, users[keep], feats[items[keep]])
        pos = (profile * feats[held]).sum(1)
        neg = (profile * feats[rng.integers(0, MEDIUM.items, MEDIUM.users)]).sum(1)
        auc = (pos > neg).mean()                                # paired: same user, same profile
        assert auc > 0.6, (kind, auc)


def test_visible_share_hides_factors_from_content(medium):
    """With ``visible=0.5`` the content is a function of the first half of the latent factors
    only: regressed on all of them, the hidden half's coefficients vanish (up to noise) while the
    visible half carries the signal; ``visible=0`` leaves noise alone."""
    from dataclasses import replace

    _, _, _, _, item_factors = medium
    k = Generator().factors
    for visible, seen in ((0.5, k // 2), (0.0, 0)):
        gen = replace(Generator(), visible=visible, noise=0.1)
        feats = np.concatenate(list(_feature_chunks(np.random.default_rng(1), item_factors, 64, "textlike", gen)))
        coef, *_ = np.linalg.lstsq(item_factors, feats, rcond=None)       # [k, 64]
        strength = np.linalg.norm(coef, axis=1)
        if seen:
            assert strength[:seen].min() > 10 * strength[seen:].max()
        else:                                                # pure noise: no factor explains it
            fit = item_factors @ coef
            assert (fit ** 2).sum() / (feats ** 2).sum() < 0.05
    with pytest.raises(ValueError, match="visible"):
        list(_feature_chunks(np.random.default_rng(1), item_factors, 8, "textlike", replace(Generator(), visible=1.5)))


def test_same_seed_same_files_other_seed_other_files(tmp_path, tiny_dir):
    _, written = tiny_dir
    again = build_synthetic("tiny", tmp_path / "a", log=lambda *a: None)
    other = build_synthetic("tiny", tmp_path / "b", seed=7, log=lambda *a: None)
    for kind in ("inter", "imagelike", "textlike", "yaml"):
        assert again[kind].read_bytes() == written[kind].read_bytes()
    for kind in ("inter", "imagelike", "textlike"):
        assert other[kind].read_bytes() != written[kind].read_bytes()


def test_feature_files_are_readable_and_labelled(tiny_dir):
    out, written = tiny_dir
    for modality, dim in (("imagelike", TINY.imagelike_dim), ("textlike", TINY.textlike_dim)):
        tokens, matrix = read_feature_file(written[modality], expected_dim=dim, cache=False)
        assert sorted(tokens) == sorted(f"i{i}" for i in range(TINY.items))
        assert matrix.shape == (TINY.items, dim) and np.isfinite(matrix).all()
    _, image = read_feature_file(written["imagelike"], cache=False)
    _, text = read_feature_file(written["textlike"], cache=False)
    assert (image >= 0).all() and (image == 0).mean() > 0.2            # post-ReLU-like
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-3)
    readme = written["readme"].read_text()
    assert "SYNTHETIC" in readme and "image-like synthetic" in readme and "text-like synthetic" in readme
    config = yaml.safe_load(written["yaml"].read_text())
    assert config["modalities"] == {"imagelike": "imagelikefeat", "textlike": "textlikefeat"}
    assert config["feature_dims"] == {"imagelike": TINY.imagelike_dim, "textlike": TINY.textlike_dim}
    assert "SYNTHETIC" in written["yaml"].read_text()


def test_recbole_loads_the_data_set_with_its_config(tiny_dir, tmp_path, monkeypatch):
    out, written = tiny_dir
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load(written["yaml"].read_text())
    params.update({"data_path": str(out), "state": "WARNING", "show_progress": False})
    dataset = create_dataset(Config(model="VBPR", dataset="synthetic-tiny", config_dict=params, read_cmd_line=False))
    assert dataset.user_num == TINY.users + 1 and dataset.item_num == TINY.items + 1
    assert dataset.inter_num == TINY.interactions
    assert dataset.item_features["imagelike"].shape == (TINY.items + 1, TINY.imagelike_dim)


def test_command_line(tmp_path, capsys):
    builders_main(["synthetic", "--size", "tiny", "--out", str(tmp_path), "--seed", "3"])
    folder = tmp_path / "synthetic-tiny"
    assert (folder / "synthetic-tiny.inter").is_file() and (folder / "synthetic-tiny.imagelikefeat").is_file()
    assert "--seed 3" in (folder / "README.md").read_text()
    assert "synthetic-tiny.textlikefeat" in capsys.readouterr().out


def test_unknown_size_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic size 'huge'"):
        build_synthetic("huge", tmp_path)


def test_a_folder_from_another_generator_is_regenerated_not_reused(tmp_path):
    """``ensure_synthetic`` reuses a folder only when its recorded generator is today's; a folder
    with another record (or none: written before records existed) is written again, so a
    benchmark never measures stale data under the data set's name."""
    import json

    from recbole_tru.data.builders.synthetic import GENERATOR_FILE, ensure_synthetic, generator_of

    quiet = dict(log=lambda *a: None)
    folder, seconds, gen = ensure_synthetic("tiny", tmp_path, **quiet)
    assert seconds is not None and gen == generator_of(folder) and gen["affinity"] == Generator().affinity
    assert ensure_synthetic("tiny", tmp_path, **quiet)[1] is None               # same generator: reused
    record = folder / GENERATOR_FILE
    record.write_text(json.dumps({**gen, "affinity": 1.5}), encoding="utf-8")
    messages = []
    assert ensure_synthetic("tiny", tmp_path, log=messages.append)[1] is not None
    assert "another generator" in messages[0] and generator_of(folder) == gen
    record.unlink()                                                            # no record at all
    assert ensure_synthetic("tiny", tmp_path, **quiet)[1] is not None and record.is_file()
    record.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=GENERATOR_FILE):
        generator_of(folder)
