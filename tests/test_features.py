"""Item-feature files: rows are aligned by item token (never by row order), row 0 is padding,
and every malformed file is a ``FeatureFileError`` that names the file."""
import numpy as np
import pytest
import torch

from conftest import TINY, write_tiny_dataset
from recbole_tru.data import FeatureFileError, create_dataset
from recbole_tru.data.features import align_to_items, read_feature_file
from recbole_tru.training import build_model, load_data

HEADER = "item_id:token\tt:float_seq"


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def file_rows(path):
    """{token: float32 values} parsed independently of the library."""
    lines = path.read_text().splitlines()[1:]
    return {t: np.array([float(v) for v in vals.split()], dtype=np.float32)
            for t, vals in (line.split("\t") for line in lines)}


@pytest.fixture
def copy_root(tmp_path):
    """A private copy of the tiny data set (same seed, same content) to edit."""
    root = tmp_path / "copy"
    write_tiny_dataset(root)
    return root


def feature_path(root, suffix="textfeat"):
    return root / TINY / f"{TINY}.{suffix}"


def edit_lines(path, edit):
    lines = path.read_text().splitlines()
    write(path, edit(lines))


# --------------------------------------------------------------------------- read / align

def test_read_feature_file_tokens_and_matrix(tmp_path):
    path = write(tmp_path / "f.feat", [HEADER, "b\t1 2.5 -3", "a\t0.25 0 1e-2"])
    tokens, matrix = read_feature_file(path)
    assert list(tokens) == ["b", "a"]
    assert matrix.dtype == np.float32 and matrix.shape == (2, 3)
    np.testing.assert_array_equal(matrix, np.array([[1, 2.5, -3], [0.25, 0, 0.01]], dtype=np.float32))


def test_align_to_items_by_token_row_zero_padding(tmp_path):
    tokens = np.array(["b", "c", "a"])
    matrix = np.array([[1, 1], [2, 2], [3, 3]], dtype=np.float32)
    token2id = {"[PAD]": 0, "a": 1, "b": 2, "c": 3}
    aligned = align_to_items("f.feat", tokens, matrix, token2id, 4)
    np.testing.assert_array_equal(aligned, [[0, 0], [3, 3], [1, 1], [2, 2]])


def test_align_skips_rows_of_known_but_dropped_items():
    tokens = np.array(["a", "gone", "b"])
    matrix = np.array([[1.0], [9.0], [2.0]], dtype=np.float32)
    token2id = {"[PAD]": 0, "b": 1, "a": 2}
    aligned = align_to_items("f.feat", tokens, matrix, token2id, 3, known_tokens={"a", "b", "gone"})
    np.testing.assert_array_equal(aligned, [[0.0], [2.0], [1.0]])
    with pytest.raises(FeatureFileError, match=r"f\.feat: feature rows for unknown item\(s\) gone"):
        align_to_items("f.feat", tokens, matrix, token2id, 3, known_tokens={"a", "b"})
    with pytest.raises(FeatureFileError, match=r"f\.feat: no feature row for item\(s\) b"):
        align_to_items("f.feat", tokens[:1], matrix[:1], token2id, 3)


# --------------------------------------------------------------------------- the data set

def test_dataset_features_match_file_rows_by_token(make_config, tiny_root):
    dataset = create_dataset(make_config("VBPR"))
    token2id = dataset.field2token_id["item_id"]
    assert list(dataset.item_features) == ["text", "meta"]
    for modality, suffix, dim in (("text", "textfeat", 8), ("meta", "metafeat", 5)):
        features = dataset.item_features[modality]
        assert features.dtype == torch.float32 and features.shape == (dataset.item_num, dim)
        assert torch.count_nonzero(features[0]) == 0            # [PAD]
        rows = file_rows(feature_path(tiny_root, suffix))
        assert len(rows) == dataset.item_num - 1
        for token, values in rows.items():
            np.testing.assert_allclose(features[token2id[token]].numpy(), values, atol=1e-6)
    # internal ids follow the .inter file, not the feature file: alignment is really needed
    assert [token2id[f"i{i}"] for i in range(5)] != [1, 2, 3, 4, 5]


def test_shuffled_feature_rows_give_the_same_model_input(make_config, tiny_root, copy_root):
    rng = np.random.default_rng(3)
    for suffix in ("textfeat", "metafeat"):
        def shuffle(lines):
            order = rng.permutation(len(lines) - 1) + 1
            assert (order != np.arange(1, len(lines))).any()
            return [lines[0]] + [lines[i] for i in order]
        edit_lines(feature_path(copy_root, suffix), shuffle)
    assert feature_path(copy_root).read_text() != feature_path(tiny_root).read_text()

    config_a, config_b = make_config("VBPR"), make_config("VBPR", data_path=str(copy_root))
    _, train_a, _, _ = load_data(config_a)
    _, train_b, _, _ = load_data(config_b)
    assert train_a.dataset.field2token_id["item_id"] == train_b.dataset.field2token_id["item_id"]
    model_a, model_b = build_model(config_a, train_a.dataset), build_model(config_b, train_b.dataset)
    for m in ("text", "meta"):
        assert torch.equal(train_a.dataset.item_features[m], train_b.dataset.item_features[m])
        assert torch.equal(model_a.feature(m), model_b.feature(m))
        assert torch.equal(getattr(model_b, f"feat_{m}"), train_b.dataset.item_features[m])


def test_rows_of_items_removed_by_filtering_are_skipped(make_config, tiny_root):
    dataset = create_dataset(make_config("VBPR", item_inter_num_interval="[12,inf)"))
    token2id = dataset.field2token_id["item_id"]
    assert 1 < dataset.item_num < 61                             # some items were filtered out
    features = dataset.item_features["text"]
    assert features.shape[0] == dataset.item_num
    rows = file_rows(feature_path(tiny_root))
    for token, i in token2id.items():
        if token != "[PAD]":
            np.testing.assert_allclose(features[i].numpy(), rows[token], atol=1e-6)


# --------------------------------------------------------------------------- malformed files

def drop_row(token):
    return lambda lines: [line for line in lines if not line.startswith(f"{token}\t")]


def replace_value(token, value):
    def edit(lines):
        out = []
        for line in lines:
            if line.startswith(f"{token}\t"):
                tok, vals = line.split("\t")
                vals = vals.split()
                vals[2] = value
                line = tok + "\t" + " ".join(vals)
            out.append(line)
        return out
    return edit


def drop_last_value(index):
    def edit(lines):
        lines = list(lines)
        lines[index] = lines[index].rsplit(" ", 1)[0]
        return lines
    return edit


BAD_FILES = {
    "header_field": (lambda lines: ["item:token\ttext:float_seq"] + lines[1:], r"header must be"),
    "header_type": (lambda lines: ["item_id:token\ttext:float"] + lines[1:], r"header must be"),
    "unknown_item": (lambda lines: lines + ["i999\t" + lines[1].split("\t")[1]], r"unknown item\(s\) i999"),
    "missing_row": (drop_row("i7"), r"no feature row for item\(s\) i7\b"),
    "inconsistent_dim": (drop_last_value(11), r"inconsistent feature dimension.*line 12 \(item i10: 7 values\)"),
    "nan": (replace_value("i4", "nan"), r"NaN or infinite values for item\(s\) i4\b"),
    "inf": (replace_value("i4", "inf"), r"NaN or infinite values for item\(s\) i4\b"),
    "minus_inf": (replace_value("i9", "-inf"), r"NaN or infinite values for item\(s\) i9\b"),
    "not_a_number": (replace_value("i4", "abc"), r"not a number"),
    "comma_decimal": (replace_value("i4", "0,5"), r"not a number"),
    "duplicate": (lambda lines: lines + [lines[4]], r"duplicate rows for item\(s\) i3\b"),
    "no_rows": (lambda lines: lines[:1], r"no feature rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_feature_file_raises_naming_the_file(case, make_config, copy_root):
    edit, message = BAD_FILES[case]
    path = feature_path(copy_root)
    edit_lines(path, edit)
    with pytest.raises(FeatureFileError, match=message) as err:
        create_dataset(make_config("VBPR", data_path=str(copy_root)))
    assert str(path) in str(err.value)


def test_missing_feature_file_raises_naming_the_file(make_config, copy_root):
    path = feature_path(copy_root, "metafeat")
    path.unlink()
    with pytest.raises(FeatureFileError, match="not found") as err:
        create_dataset(make_config("VBPR", data_path=str(copy_root)))
    assert f"{TINY}.metafeat" in str(err.value)


def test_dimension_other_than_feature_dims_raises(make_config, tiny_root):
    with pytest.raises(FeatureFileError, match="dimension 5, expected 6") as err:
        create_dataset(make_config("VBPR", feature_dims={"meta": 6}))
    assert f"{TINY}.metafeat" in str(err.value)
    dataset = create_dataset(make_config("VBPR", feature_dims={"meta": 5, "text": 8}))
    assert dataset.item_features["meta"].shape[1] == 5


def test_modalities_must_be_a_mapping(make_config):
    with pytest.raises(FeatureFileError, match="modalities"):
        create_dataset(make_config("VBPR", modalities=["textfeat"]))


def test_row_with_extra_column_is_a_feature_file_error(tmp_path):
    path = write(tmp_path / "f.feat", [HEADER, "a\t1 2", "b\t1 2\t3"])
    with pytest.raises(FeatureFileError, match=r"f\.feat"):
        read_feature_file(path)


def test_rows_without_values_are_an_error(tmp_path):
    path = write(tmp_path / "f.feat", [HEADER, "a\t", "b\t"])
    with pytest.raises(FeatureFileError, match=r"f\.feat"):
        read_feature_file(path)
