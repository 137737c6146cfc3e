"""Each fix of ``recbole_tru.compat`` is needed (the original fails on this stack) and works.

The fixes are applied when ``recbole_tru`` is imported; a test that shows an original failing
puts ``compat.ORIGINALS[...]`` back with ``monkeypatch`` (undone after the test).
"""
import ast
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import data_preparation
from recbole.data.dataset import dataset as ds_module
from recbole.data.dataset import KGSeqDataset, KnowledgeBasedDataset, SequentialDataset
from recbole.data.dataset.dataset import Dataset
from recbole.model.general_recommender import BPR, LightGCN
from recbole.trainer import Trainer
import recbole.trainer.trainer as trainer_module
from recbole.utils import FeatureType

from conftest import TINY, write_tiny_dataset
from recbole_tru import compat
from recbole_tru.data import create_dataset

WRAPPED = ((Dataset, "_remap"), (Dataset, "_normalize"), (Dataset, "_discretization"),
           (SequentialDataset, "_benchmark_presets"), (KnowledgeBasedDataset, "_reset_ent_remapID"))


def test_fixes_and_originals_are_recorded():
    assert list(compat.FIXES) == ["numpy_aliases", "pandas_seq_fill", "pandas_fill_nan", "pandas_agg_len",
                                  "scipy_dok_update", "torch_load_recbole"]
    assert compat._APPLIED == set(compat.FIXES)
    assert compat.ORIGINALS["dataset.pd"] is pd
    assert compat.ORIGINALS["trainer.torch"] is torch
    assert compat.ORIGINALS["dok_matrix._update"] is None        # it did not exist at all


# --------------------------------------------------------------------------- numpy_aliases

def recbole_config(tiny_root, monkeypatch, model="BPR"):
    monkeypatch.setattr(sys, "argv", ["prog"])                  # RecBole reads sys.argv
    return RecBoleConfig(model=model, dataset=TINY,
                         config_dict={"data_path": str(tiny_root), "use_gpu": False, "state": "WARNING"})


def test_numpy_aliases_needed_and_restored(tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for alias in ("float_", "complex_", "unicode_"):
        monkeypatch.delattr(np, alias)
    assert not hasattr(np, "float_")                            # numpy 2 removed them
    with pytest.raises(AttributeError, match="float_"):
        recbole_config(tiny_root, monkeypatch)
    compat.numpy_aliases()
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    config = recbole_config(tiny_root, monkeypatch)
    assert config["model"] == "BPR" and config["embedding_size"] == 64


# --------------------------------------------------------------------------- pandas_seq_fill / agg_len

GENRES = {3: "", 5: "g1 g2", 8: "g2"}                          # item index -> genre cell ("" = empty)


@pytest.fixture
def genre_root(tmp_path):
    """The tiny data set plus a ``.item`` file with a ``token_seq`` column; item i3's cell is empty."""
    root = tmp_path / "genre"
    folder = write_tiny_dataset(root)
    lines = ["item_id:token\tgenre:token_seq"]
    lines += [f"i{i}\t{GENRES.get(i, 'g0 g3')}" for i in range(60)]
    (folder / f"{TINY}.item").write_text("\n".join(lines) + "\n")
    return root


def genre_config(make_config, genre_root):
    return make_config("BPR", data_path=str(genre_root),
                       load_col={"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "genre"]})


def genre_tokens(dataset, token):
    feat = dataset.item_feat
    row = feat[feat["item_id"] == dataset.field2token_id["item_id"][token]]
    (seq,) = row["genre"].to_list()
    return [dataset.field2id_token["genre"][g] for g in seq]


def test_pandas_inplace_fillna_on_a_column_is_a_no_op():
    """The pandas 3 change both pandas fixes address (copy-on-write)."""
    df = pd.DataFrame({"genre:token_seq": ["a b", np.nan]})
    with pytest.warns(pd.errors.ChainedAssignmentError):
        df["genre:token_seq"].fillna(value="", inplace=True)
    assert pd.isna(df.loc[1, "genre:token_seq"])


def test_seq_fill_read_csv_fills_only_sequence_columns(genre_root):
    path = genre_root / TINY / f"{TINY}.item"
    plain = pd.read_csv(path, sep="\t", dtype=str)
    assert pd.isna(plain.loc[3, "genre:token_seq"])             # what RecBole's _load_feat got
    filled = compat._PandasSeqFill().read_csv(path, sep="\t", dtype=str)
    assert filled.loc[3, "genre:token_seq"] == "" and filled.loc[5, "genre:token_seq"] == "g1 g2"
    assert filled["item_id:token"].tolist() == plain["item_id:token"].tolist()
    assert compat._PandasSeqFill().DataFrame is pd.DataFrame    # everything else is pandas


def test_empty_token_seq_cell_loads_as_empty_sequence(make_config, genre_root):
    dataset = create_dataset(genre_config(make_config, genre_root))
    assert genre_tokens(dataset, "i3") == []
    assert genre_tokens(dataset, "i5") == ["g1", "g2"]
    assert genre_tokens(dataset, "i8") == ["g2"]
    assert genre_tokens(dataset, "i0") == ["g0", "g3"]


def test_empty_token_seq_cell_fails_with_original_pandas(make_config, genre_root, monkeypatch):
    config = genre_config(make_config, genre_root)
    monkeypatch.setattr(ds_module, "pd", compat.ORIGINALS["dataset.pd"])
    with pytest.raises(AttributeError, match="split"):         # NaN.split(...) in _load_feat
        create_dataset(config)


def test_series_agg_len_changed_and_elementwise_context():
    series = pd.Series([np.array([1, 2]), np.array([3])])
    assert series.agg(len) == 2                                 # pandas 3: length of the Series
    with compat.elementwise_agg_len():
        assert list(series.agg(len)) == [2, 1]
        assert pd.Series([1, 2, 4]).agg("sum") == 7             # other functions untouched
    assert series.agg(len) == 2                                 # restored after the block
    with pytest.raises(RuntimeError):
        with compat.elementwise_agg_len():
            raise RuntimeError
    assert series.agg(len) == 2                                 # ... and after an error


def test_token_seq_field_fails_with_original_remap(make_config, genre_root, monkeypatch):
    config = genre_config(make_config, genre_root)
    monkeypatch.setattr(Dataset, "_remap", compat.ORIGINALS["Dataset._remap"])
    with pytest.raises(ValueError, match="Length of values"):
        create_dataset(config)


def test_agg_len_wraps_the_five_dataset_methods():
    for cls, name in WRAPPED:
        method = getattr(cls, name)
        assert method.__recbole_tru_compat__ is True
        assert method.__wrapped__ is compat.ORIGINALS[f"{cls.__name__}.{name}"]
    # KGSeqDataset(SequentialDataset, KnowledgeBasedDataset) inherits both wrapped methods
    assert KGSeqDataset._benchmark_presets is SequentialDataset._benchmark_presets
    assert KGSeqDataset._reset_ent_remapID is KnowledgeBasedDataset._reset_ent_remapID


def agg_len_calls_in_recbole():
    """Every ``<x>.agg(len)`` call in the installed RecBole source, as a list of
    (module, class, method) or (module, None, None) for a call outside a class's method."""
    import recbole

    root = pathlib.Path(recbole.__file__).parent

    def is_agg_len(node):
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "agg" and len(node.args) > 0
                and isinstance(node.args[0], ast.Name) and node.args[0].id == "len")

    calls = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(("recbole",) + path.relative_to(root).with_suffix("").parts)
        total = sum(map(is_agg_len, ast.walk(tree)))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
                found = sum(map(is_agg_len, ast.walk(fn)))
                calls += [(module, cls.name, fn.name)] * found
                total -= found
        calls += [(module, None, None)] * total
    return calls


def test_agg_len_methods_cover_every_call_in_recbole():
    calls = agg_len_calls_in_recbole()
    assert len(calls) == 6                                      # grep -rn "agg(len)" recbole/
    assert set(calls) == set(compat.AGG_LEN_METHODS)            # _discretization has two


# A sequential data set given as benchmark files (RecBole's ``benchmark_filename``): each row
# holds a user's item history (token_seq) and the next item. RecBole computes ``item_length``
# from the history in ``SequentialDataset._benchmark_presets``.
SEQ_ROWS = {
    "train": [("u1", "i1", "i2"), ("u1", "i1 i2", "i3"), ("u2", "i4", "i5")],
    "valid": [("u1", "i1 i2 i3", "i4")],
    "test": [("u2", "i4 i5", "i6")],
}


@pytest.fixture
def seq_benchmark_config(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "seqb"
    folder.mkdir(parents=True)
    for part, rows in SEQ_ROWS.items():
        lines = ["user_id:token\titem_id_list:token_seq\titem_id:token"]
        lines += ["\t".join(row) for row in rows]
        (folder / f"seqb.{part}.inter").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prog"])
    return RecBoleConfig(model="GRU4Rec", dataset="seqb", config_dict={
        "data_path": str(tmp_path / "data"), "load_col": None, "benchmark_filename": list(SEQ_ROWS),
        "alias_of_item_id": ["item_id_list"], "train_neg_sample_args": None,
        "use_gpu": False, "state": "WARNING"})


def test_sequential_benchmark_item_length_is_per_row(seq_benchmark_config):
    dataset = SequentialDataset(seq_benchmark_config)
    feat = dataset.inter_feat                                   # train, valid, test rows in order
    token = dataset.field2id_token["item_id"]
    assert [[token[i] for i in seq] for seq in feat["item_id_list"]] == [
        ["i1"], ["i1", "i2"], ["i4"], ["i1", "i2", "i3"], ["i4", "i5"]]
    assert feat["item_length"].tolist() == [1, 2, 1, 3, 2]


def test_sequential_benchmark_item_length_with_original_presets(seq_benchmark_config, monkeypatch):
    monkeypatch.setattr(SequentialDataset, "_benchmark_presets",
                        compat.ORIGINALS["SequentialDataset._benchmark_presets"])
    dataset = SequentialDataset(seq_benchmark_config)
    assert dataset.inter_feat["item_length"].tolist() == [5, 5, 5, 5, 5]   # the row count


# A knowledge-based data set whose item file has a token_seq field of entities, aliased to
# ``entity_id``: ``KnowledgeBasedDataset._reset_ent_remapID`` remaps it into the merged id space.
RELATED = {"i0": "e5 e6", "i1": "e6", "i2": "e0 e5 e1", "i3": "e2"}


@pytest.fixture
def kg_config(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "kgt"
    folder.mkdir(parents=True)
    files = {
        "inter": ["user_id:token\titem_id:token"] + [f"u{u}\ti{i}" for u in range(3) for i in range(4)],
        "link": ["item_id:token\tentity_id:token", "i0\te0", "i1\te1", "i2\te2"],
        "kg": ["head_id:token\trelation_id:token\ttail_id:token", "e0\tr0\te5", "e1\tr0\te6", "e2\tr1\te5"],
        "item": ["item_id:token\trelated:token_seq"] + [f"{i}\t{seq}" for i, seq in RELATED.items()],
    }
    for suffix, lines in files.items():
        (folder / f"kgt.{suffix}").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prog"])
    return RecBoleConfig(model="CKE", dataset="kgt", config_dict={
        "data_path": str(tmp_path / "data"), "load_col": None, "alias_of_entity_id": ["related"],
        "use_gpu": False, "state": "WARNING"})


def test_kg_token_seq_entity_field_is_remapped(kg_config):
    dataset = KnowledgeBasedDataset(kg_config)
    feat = dataset.item_feat
    item_token, entity_token = dataset.field2id_token["item_id"], dataset.field2id_token["related"]
    related = {item_token[i]: " ".join(entity_token[e] for e in seq)
               for i, seq in zip(feat["item_id"], feat["related"])}
    assert related == {"[PAD]": "", **RELATED}
    # linked items share their entity's id (the merge that _reset_ent_remapID serves)
    assert [dataset.field2token_id["entity_id"][e] for e in ("e0", "e1", "e2")] == \
        [dataset.field2token_id["item_id"][i] for i in ("i0", "i1", "i2")]


def test_kg_token_seq_entity_field_fails_with_original_reset(kg_config, monkeypatch):
    monkeypatch.setattr(KnowledgeBasedDataset, "_reset_ent_remapID",
                        compat.ORIGINALS["KnowledgeBasedDataset._reset_ent_remapID"])
    with pytest.raises(ValueError, match=r"Length of values \(1\) does not match length of index \(4\)"):
        KnowledgeBasedDataset(kg_config)


# --------------------------------------------------------------------------- pandas_fill_nan

class FakeDataset:
    """What ``Dataset._fill_nan`` reads: ``feat_name_list``, the frames, ``field2type``, ``logger``."""

    def __init__(self):
        import logging

        self.logger = logging.getLogger("fake")
        self.feat_name_list = ["inter_feat"]
        self.inter_feat = pd.DataFrame({
            "tok": [1.0, np.nan, 3.0],
            "flt": [1.0, np.nan, 5.0],
            "tseq": [np.array([1]), np.nan, np.array([2, 3])],
        })
        self.field2type = {"tok": FeatureType.TOKEN, "flt": FeatureType.FLOAT, "tseq": FeatureType.TOKEN_SEQ}


def test_fill_nan_fills_tokens_floats_and_sequences():
    fake = FakeDataset()
    compat._fill_nan(fake)
    df = fake.inter_feat
    assert df["tok"].tolist() == [1.0, 0.0, 3.0]                # [PAD]
    assert df["flt"].tolist() == [1.0, 3.0, 5.0]                # mean of 1 and 5
    empty = df.loc[1, "tseq"]
    assert isinstance(empty, np.ndarray) and empty.size == 0 and empty.dtype == np.int64
    assert df.loc[2, "tseq"].tolist() == [2, 3]


def test_original_fill_nan_leaves_nan():
    fake = FakeDataset()
    with pytest.warns(pd.errors.ChainedAssignmentError):
        compat.ORIGINALS["Dataset._fill_nan"](fake)
    assert pd.isna(fake.inter_feat.loc[1, "tok"]) and pd.isna(fake.inter_feat.loc[1, "flt"])


def test_fill_nan_float_seq_needs_no_np_float(monkeypatch):
    """RecBole's ``Config`` re-creates ``np.float``; the fix must not depend on it."""
    monkeypatch.delattr(np, "float", raising=False)
    fake = FakeDataset()
    fake.inter_feat = pd.DataFrame({"fseq": [np.array([0.5]), np.nan]})
    fake.field2type = {"fseq": FeatureType.FLOAT_SEQ}
    compat._fill_nan(fake)
    empty = fake.inter_feat.loc[1, "fseq"]
    assert empty.dtype == np.float64 and empty.size == 0
    assert fake.inter_feat.loc[0, "fseq"].tolist() == [0.5]
    assert Dataset._fill_nan is compat._fill_nan


# --------------------------------------------------------------------------- scipy_dok_update

def test_dok_update_sets_values():
    matrix = sp.dok_matrix((3, 3))
    matrix._update({(0, 1): 1.0, (2, 0): 4.0})
    assert matrix.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [4, 0, 0]]


def test_lightgcn_adjacency_needs_dok_update(make_config, monkeypatch):
    config = make_config("LightGCN")
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    train = train_data.dataset
    with monkeypatch.context() as patch:
        patch.delattr(sp.dok_matrix, "_update")
        with pytest.raises(AttributeError, match="_update"):
            LightGCN(config, train)
    model = LightGCN(config, train)
    adj = model.norm_adj_matrix.to_dense()
    n_users = train.user_num
    users = train.inter_feat["user_id"].numpy()
    items = train.inter_feat["item_id"].numpy()
    assert model.norm_adj_matrix._nnz() == 2 * len(users)     # both directions, no duplicates
    deg_u, deg_i = np.bincount(users), np.bincount(items)
    u, i = users[0], items[0]
    expected = 1 / np.sqrt(deg_u[u] * deg_i[i])                 # D^-1/2 A D^-1/2
    assert adj[u, n_users + i].item() == pytest.approx(expected, rel=1e-5)
    assert adj[n_users + i, u].item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- torch_load_recbole

@pytest.fixture
def recbole_checkpoint(make_config, tmp_path):
    """A checkpoint written by RecBole's own trainer (it pickles the Config into it)."""
    config = make_config("BPR")
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    trainer = Trainer(config, BPR(config, train_data.dataset))
    path = tmp_path / "recbole.pth"
    trainer._save_checkpoint(0, verbose=False, saved_model_file=str(path))
    return trainer, test_data, path


def test_recbole_checkpoint_fails_with_plain_torch_load(recbole_checkpoint):
    _, _, path = recbole_checkpoint
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        compat.ORIGINALS["trainer.torch"].load(path)


def test_recbole_checkpoint_loads_in_recbole_trainer(recbole_checkpoint):
    trainer, test_data, path = recbole_checkpoint
    state = trainer_module.torch.load(path)
    assert state["config"]["model"] == "BPR" and state["epoch"] == 0
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(state["state_dict"][name], tensor)
    assert trainer_module.torch.Tensor is torch.Tensor          # the rest of torch is torch
    result = trainer.evaluate(test_data, load_best_model=True, model_file=str(path))
    assert 0 <= result["recall@10"] <= 1


def test_tensor_only_checkpoint_loads_with_plain_torch_load(tmp_path):
    """Control: weights-only loading is fine for tensors (what the plugin's checkpoints hold)."""
    path = tmp_path / "tensors.pth"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "epoch": 1}, path)
    assert torch.load(path)["state_dict"]["w"].tolist() == [0.0, 1.0, 2.0]


def test_evaluate_load_best_model_fails_with_original_torch(recbole_checkpoint, monkeypatch):
    trainer, test_data, path = recbole_checkpoint
    monkeypatch.setattr(trainer_module, "torch", compat.ORIGINALS["trainer.torch"])
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        trainer.evaluate(test_data, load_best_model=True, model_file=str(path))


# --------------------------------------------------------------------------- apply()

def test_apply_is_idempotent(monkeypatch):
    patched = {(cls, name): getattr(cls, name) for cls, name in WRAPPED + ((Dataset, "_fill_nan"),)}
    seen = (ds_module.pd, trainer_module.torch, sp.dok_matrix._update, np.float_)
    originals = dict(compat.ORIGINALS)
    monkeypatch.setattr(compat, "_APPLIED", set())              # force every fix to run again
    compat.apply()
    compat.apply()
    for fix in compat.FIXES.values():
        fix()
    for (cls, name), method in patched.items():
        assert getattr(cls, name) is method, name               # not wrapped a second time
    for cls, name in WRAPPED:
        assert not hasattr(compat.ORIGINALS[f"{cls.__name__}.{name}"], "__recbole_tru_compat__")
    assert (ds_module.pd, trainer_module.torch, sp.dok_matrix._update, np.float_) == seen
    assert compat.ORIGINALS == originals and all(compat.ORIGINALS[k] is v for k, v in originals.items())
    assert compat._APPLIED == set(compat.FIXES)
