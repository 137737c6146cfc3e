"""Compatibility of RecBole 1.2.1 with today's numpy, pandas, scipy and torch.

RecBole 1.2.1 (2023) predates numpy 2, pandas 3, scipy >= 1.13 and torch >= 2.6. Rather
than pin the project to 2023 libraries, this one module applies the smallest fixes that
make RecBole run on the current stack. :func:`apply` is idempotent and is called once when
``recbole_tru`` is imported (Ray workers import the package, so they get it too).

Each fix is a named function; ``FIXES`` lists them and ``ORIGINALS`` keeps what each one
replaced, so that the tests can show every fix is needed (the original fails) and works.

| fix | library change | RecBole symptom |
| --- | --- | --- |
| ``numpy_aliases`` | numpy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_`` | ``Config()`` raises AttributeError |
| ``pandas_seq_fill`` | pandas 3 copy-on-write: ``fillna(inplace=True)`` on a column is a no-op | empty ``token_seq``/``float_seq`` cells stay NaN and crash ``_load_feat`` |
| ``pandas_fill_nan`` | same | ``Dataset._fill_nan`` leaves NaN tokens/floats |
| ``pandas_agg_len`` | pandas 3 ``Series.agg(len)`` returns the Series length | any ``token_seq`` feature fails in ``_remap`` ("Length of values"); benchmark files' ``item_length`` = row count |
| ``scipy_dok_update`` | scipy >= 1.13 removed ``dok_matrix._update`` | LightGCN/NGCF adjacency construction fails |
| ``torch_load_recbole`` | torch >= 2.6 ``torch.load`` defaults to ``weights_only=True`` | RecBole's own checkpoints (they pickle its ``Config``) fail to load in ``Trainer.evaluate(load_best_model=True)`` |

The torch fix only touches the ``torch`` name seen by RecBole's trainer module, which loads
the checkpoints RecBole itself wrote in this run (``recbole.quick_start`` is not patched: it
imports Ray at module level and the plugin does not use it). The plugin's own
checkpoints (:mod:`recbole_tru.checkpoint`) hold tensors only and load with
``weights_only=True``.
"""
import contextlib
import functools
import types

import numpy as np
import pandas as pd

ORIGINALS = {}
_APPLIED = set()


def numpy_aliases():
    """Restore the numpy 1.x scalar aliases that ``Config.compatibility_settings`` reads."""
    for alias, target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, alias):
            setattr(np, alias, target)


class _PandasSeqFill(types.ModuleType):
    """``pandas`` as seen by RecBole's dataset module, with ``read_csv`` filling empty
    sequence cells with ``""`` (what ``fillna(value="", inplace=True)`` did before pandas 3)."""

    def __init__(self):
        super().__init__("pandas")

    def __getattr__(self, name):
        return getattr(pd, name)

    @staticmethod
    def read_csv(*args, **kwargs):
        df = pd.read_csv(*args, **kwargs)
        for col in df.columns:
            if isinstance(col, str) and col.endswith("seq"):
                df[col] = df[col].fillna("")
        return df


def pandas_seq_fill():
    from recbole.data.dataset import dataset as ds_module

    if not isinstance(ds_module.pd, _PandasSeqFill):
        ORIGINALS["dataset.pd"] = ds_module.pd
        ds_module.pd = _PandasSeqFill()


def _fill_nan(self):
    """``Dataset._fill_nan`` by assignment: tokens -> 0 ([PAD]), floats -> column mean,
    missing sequences -> empty arrays."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


def pandas_fill_nan():
    from recbole.data.dataset.dataset import Dataset

    if Dataset._fill_nan is not _fill_nan:
        ORIGINALS["Dataset._fill_nan"] = Dataset._fill_nan
        Dataset._fill_nan = _fill_nan


@contextlib.contextmanager
def elementwise_agg_len():
    """Within the block, ``Series.agg(len)`` maps ``len`` over the elements (pandas < 3)."""
    original = pd.Series.agg

    def agg(self, func=None, *args, **kwargs):
        if func is len:
            return self.map(len)
        return original(self, func, *args, **kwargs)

    pd.Series.agg = agg
    try:
        yield
    finally:
        pd.Series.agg = original


def _with_elementwise_agg_len(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with elementwise_agg_len():
            return method(*args, **kwargs)

    wrapper.__recbole_tru_compat__ = True
    return wrapper


# Every RecBole 1.2.1 method that calls ``Series.agg(len)`` on a column of sequences
# (``grep -rn "agg(len)" recbole/``; ``tests/test_compat.py`` checks the list is complete), as
# (module, class that defines it, method): what pandas 3 does to each.
AGG_LEN_METHODS = (
    # token_seq fields: split points of the remapped ids -> "Length of values" ValueError
    ("recbole.data.dataset.dataset", "Dataset", "_remap"),
    # float_seq fields with normalize_field/normalize_all: the same split
    ("recbole.data.dataset.dataset", "Dataset", "_normalize"),
    # float_seq fields with discretization: the same split
    ("recbole.data.dataset.dataset", "Dataset", "_discretization"),
    # benchmark files (benchmark_filename): item_length = number of rows, for every row
    ("recbole.data.dataset.sequential_dataset", "SequentialDataset", "_benchmark_presets"),
    # token_seq fields aliased to item/entity ids in a KG data set: the same split as _remap
    ("recbole.data.dataset.kg_dataset", "KnowledgeBasedDataset", "_reset_ent_remapID"),
)


def pandas_agg_len():
    """Run each method of ``AGG_LEN_METHODS`` inside :func:`elementwise_agg_len`."""
    import importlib

    for module, cls_name, name in AGG_LEN_METHODS:
        cls = getattr(importlib.import_module(module), cls_name)
        method = cls.__dict__[name]                     # the class's own, never an inherited one
        if not getattr(method, "__recbole_tru_compat__", False):
            ORIGINALS[f"{cls_name}.{name}"] = method
            setattr(cls, name, _with_elementwise_agg_len(method))


def scipy_dok_update():
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        ORIGINALS["dok_matrix._update"] = None

        def _update(self, data):
            if hasattr(self, "_dict"):          # scipy >= 1.13 keeps the entries in a dict
                self._dict.update(data)
            else:
                for key, value in data.items():
                    self[key] = value

        sp.dok_matrix._update = _update


class _TorchRecBoleLoad(types.ModuleType):
    """``torch`` as seen by RecBole's trainer/quick-start: ``load`` defaults to
    ``weights_only=False`` because RecBole pickles its ``Config`` into its checkpoints."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        import torch

        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        import torch

        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def torch_load_recbole():
    import recbole.trainer.trainer as trainer_module

    if not isinstance(trainer_module.torch, _TorchRecBoleLoad):
        ORIGINALS["trainer.torch"] = trainer_module.torch
        trainer_module.torch = _TorchRecBoleLoad()


FIXES = {
    "numpy_aliases": numpy_aliases,
    "pandas_seq_fill": pandas_seq_fill,
    "pandas_fill_nan": pandas_fill_nan,
    "pandas_agg_len": pandas_agg_len,
    "scipy_dok_update": scipy_dok_update,
    "torch_load_recbole": torch_load_recbole,
}


def apply():
    """Apply every fix once (idempotent)."""
    for name, fix in FIXES.items():
        if name not in _APPLIED:
            fix()
            _APPLIED.add(name)
