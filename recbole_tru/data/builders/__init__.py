"""Builders that write multimodal RecBole data sets, and the file helpers they share.

Sub-modules (import them directly; nothing here needs ``sentence-transformers``):

* :mod:`.ml100k` -- the default data set ``dataset/ml-100k-mm`` from RecBole's bundled ml-100k;
* :mod:`.text_features` -- a ``text`` modality for any atomic data set with text fields;
* :mod:`.mmrec` -- MMRec-format data sets (Amazon Baby/Sports/Clothing) to atomic files;
* :mod:`.encoder` -- the all-MiniLM-L6-v2 sentence encoder, loaded lazily.

Rebuild from the command line: ``python -m recbole_tru.data.builders --help``.

Feature files follow :mod:`recbole_tru.data.features`: a header
``item_id:token<TAB><modality>:float_seq`` then one line per item, ``<token><TAB><v1> <v2> ...``.
Every file is written atomically (:func:`recbole_tru.files.atomic_write`, replacing an earlier
build's file), so an interrupted build never leaves a half-written file under the final name.
"""
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_tru.files import atomic_write

FLOAT_FORMAT = "%.6g"


def write_atomic(path, text):
    """Write (or replace) ``path`` with ``text`` (str, UTF-8, ``\\n`` line ends), atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    return atomic_write(path, write, replace=True)


def format_matrix(matrix, fmt=FLOAT_FORMAT):
    """Lines ``"v1 v2 ..."`` (list of str, one per row) for a 2-D float array."""
    buffer = io.StringIO()
    np.savetxt(buffer, np.asarray(matrix, dtype=np.float64), fmt=fmt, delimiter=" ")
    return buffer.getvalue().splitlines()


def write_feature_file(path, tokens, matrix, modality, item_field="item_id", fmt=FLOAT_FORMAT):
    """Write one modality's feature file.

    Args:
        tokens: raw item tokens, [n_items] (str-convertible, unique).
        matrix: float array [n_items, dim]; row k belongs to ``tokens[k]``.
        modality (str): the column name, e.g. ``text`` (header ``text:float_seq``).
        fmt (str): printf format of one value.
    """
    tokens = [str(t) for t in tokens]
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != len(tokens):
        raise ValueError(f"{path}: need a [{len(tokens)}, dim] matrix, got shape {matrix.shape}")
    lines = [f"{item_field}:token\t{modality}:float_seq"]
    lines += [f"{t}\t{row}" for t, row in zip(tokens, format_matrix(matrix, fmt))]
    return write_atomic(path, "\n".join(lines) + "\n")


def read_atomic_file(path):
    """Read a RecBole atomic file (tab separated, header ``name:type``) as text.

    Returns:
        (frame, types): ``frame`` a DataFrame of str (empty fields are ``""``) whose columns are
        the field names; ``types`` a dict field name -> RecBole type (``token``, ``float_seq``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                        encoding="utf-8", engine="c")
    names, types = [], {}
    for column in frame.columns:
        name, _, kind = column.partition(":")
        if not kind:
            raise ValueError(f"{path}: header field {column!r} has no ':type' part")
        names.append(name)
        types[name] = kind
    frame.columns = names
    return frame, types


def write_atomic_file(path, frame, types):
    """Write a DataFrame of str as a RecBole atomic file, header ``name:type`` per column."""
    header = "\t".join(f"{name}:{types[name]}" for name in frame.columns)
    rows = frame[frame.columns[0]].astype(str)
    for name in frame.columns[1:]:
        rows = rows + "\t" + frame[name].astype(str)
    return write_atomic(path, "\n".join([header, *rows]) + "\n")
