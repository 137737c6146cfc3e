"""The binary cache of feature files: it equals the text read, is rebuilt when the source
changes or the cache is corrupt, and never bypasses the checks."""
import os

import numpy as np
import pytest

from recbole_tru.data import FeatureFileError
from recbole_tru.data import features
from recbole_tru.data.features import cache_path, read_feature_file

HEADER = "item_id:token\tt:float_seq"


def write(path, rows, header=HEADER):
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return path


def rows_of(matrix, prefix="i"):
    return [f"{prefix}{k}\t" + " ".join(f"{v:.6g}" for v in row) for k, row in enumerate(matrix)]


@pytest.fixture
def feature_file(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(30, 7)).astype(np.float32)
    return write(tmp_path / "x.feat", rows_of(matrix))


def test_cached_load_equals_the_text_load(feature_file):
    tokens, matrix = read_feature_file(feature_file, cache=False)
    assert not cache_path(feature_file).exists()
    first = read_feature_file(feature_file, cache=True)           # parses the text, writes the cache
    assert cache_path(feature_file).is_file()
    second = read_feature_file(feature_file, cache=True)          # reads the cache
    for got in (first, second):
        assert list(got[0]) == list(tokens) and got[0].dtype == tokens.dtype
        assert got[1].dtype == np.float32
        np.testing.assert_array_equal(got[1], matrix)


def test_valid_cache_is_used_without_parsing_the_text(feature_file, monkeypatch):
    read_feature_file(feature_file, cache=True)
    monkeypatch.setattr(features, "_read_text", lambda *a: pytest.fail("text parsed despite a valid cache"))
    tokens, matrix = read_feature_file(feature_file, cache=True)
    assert matrix.shape == (30, 7)


def test_stale_cache_is_ignored_after_the_source_changes(feature_file):
    read_feature_file(feature_file, cache=True)
    new = np.full((3, 2), 0.5, dtype=np.float32)
    write(feature_file, rows_of(new, prefix="j"))
    tokens, matrix = read_feature_file(feature_file, cache=True)
    assert list(tokens) == ["j0", "j1", "j2"]
    np.testing.assert_array_equal(matrix, new)
    np.testing.assert_array_equal(read_feature_file(feature_file, cache=True)[1], new)   # rebuilt


def test_same_size_edit_with_the_old_mtime_is_still_detected(feature_file):
    """An edit that keeps the size and restores the modification time changes the hashed
    first/last MiB (the whole of a small file)."""
    read_feature_file(feature_file, cache=True)
    stat = os.stat(feature_file)
    text = feature_file.read_text()
    k = text.index("i3\t") + 3
    digit = text[k + 1] if text[k] == "-" else text[k]
    edited = text.replace(text[k:k + 12], text[k:k + 12].replace(digit, "9" if digit != "9" else "8", 1), 1)
    assert len(edited) == len(text) and edited != text
    feature_file.write_text(edited)
    os.utime(feature_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    np.testing.assert_array_equal(read_feature_file(feature_file, cache=True)[1],
                                  read_feature_file(feature_file, cache=False)[1])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_arrays"])
def test_corrupt_cache_is_rebuilt(feature_file, damage):
    expected = read_feature_file(feature_file, cache=False)
    read_feature_file(feature_file, cache=True)
    cache = cache_path(feature_file)
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:200])
    elif damage == "garbage":
        cache.write_bytes(b"not a zip file at all")
    else:                       # a readable npz with the right key but inconsistent content
        with np.load(cache) as npz:
            key = npz["key"]
        with open(cache, "wb") as f:
            np.savez(f, key=key, tokens=np.array(["a"]), matrix=np.zeros((2, 7), np.float32))
    tokens, matrix = read_feature_file(feature_file, cache=True)
    assert list(tokens) == list(expected[0])
    np.testing.assert_array_equal(matrix, expected[1])
    with np.load(cache) as npz:                                   # the rebuilt cache is good
        np.testing.assert_array_equal(npz["matrix"], expected[1])


def test_checks_still_apply_with_a_cache(feature_file):
    read_feature_file(feature_file, cache=True)
    with pytest.raises(FeatureFileError, match="dimension 7, expected 8"):
        read_feature_file(feature_file, expected_dim=8, cache=True)
    with pytest.raises(FeatureFileError, match="header must be"):
        read_feature_file(feature_file, item_field="product", cache=True)


def test_bad_text_is_never_cached(tmp_path):
    path = write(tmp_path / "bad.feat", ["a\t1 2", "b\t1 nan"])
    for _ in range(2):
        with pytest.raises(FeatureFileError, match=r"NaN or infinite values for item\(s\) b"):
            read_feature_file(path, cache=True)
    assert not cache_path(path).exists()


def test_automatic_cache_only_for_large_files(feature_file, monkeypatch):
    read_feature_file(feature_file)
    assert not cache_path(feature_file).exists()
    monkeypatch.setattr(features, "CACHE_MIN_BYTES", 1)
    read_feature_file(feature_file)
    assert cache_path(feature_file).exists()


def test_unwritable_folder_reads_the_text(feature_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(features.np, "savez", refuse)
    tokens, matrix = read_feature_file(feature_file, cache=True)
    assert matrix.shape == (30, 7) and not cache_path(feature_file).exists()
    assert not [p for p in feature_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_fast_parse_falls_back_to_python_numbers(tmp_path):
    """Where numpy's C parser stops early, Python decides (same results as before)."""
    path = write(tmp_path / "u.feat", ["a\t1_000 2", "b\t3 4"])
    np.testing.assert_array_equal(read_feature_file(path, cache=False)[1], [[1000, 2], [3, 4]])
    path = write(tmp_path / "c.feat", ["a\t1 0,5", "b\t3 4"])
    with pytest.raises(FeatureFileError, match="not a number"):
        read_feature_file(path, cache=False)
