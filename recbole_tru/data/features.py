"""Item-feature atomic files: reading, checking, and alignment to RecBole's internal ids.

One file per modality, in RecBole's atomic-file convention::

    item_id:token<TAB>text:float_seq
    242<TAB>0.0132 -0.0871 ...

Rows are keyed by the raw item token (never by row order) and re-ordered to the data set's
internal item ids; row 0 (RecBole's ``[PAD]``) is all zeros. Every problem is an error that
names the file (and the line or item where one applies).
"""
import csv
from pathlib import Path

import numpy as np
import pandas as pd


class FeatureFileError(ValueError):
    """A feature file is missing, malformed or inconsistent with the data set."""


def _show(items, limit=5):
    items = list(items)
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def feature_file_path(data_path, dataset_name, suffix):
    return Path(data_path) / f"{dataset_name}.{suffix}"


def read_feature_file(path, item_field="item_id", expected_dim=None, sep="\t"):
    """Read one modality's atomic feature file.

    Returns:
        (tokens, matrix): ``tokens`` a str array [n_rows], ``matrix`` float32 [n_rows, dim].
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"Feature file not found: {path}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(sep)
    if len(header) != 2 or header[0] != f"{item_field}:token" or not header[1].endswith(":float_seq"):
        raise FeatureFileError(
            f"{path}: header must be '{item_field}:token<TAB><name>:float_seq', got {sep.join(header)!r}")
    try:
        df = pd.read_csv(path, sep=sep, header=0, names=["token", "values"], dtype=str,
                         keep_default_na=False, engine="c", quoting=csv.QUOTE_NONE)
    except (pd.errors.ParserError, ValueError) as err:
        raise FeatureFileError(f"{path}: malformed feature file ({err})") from None
    if len(df) == 0:
        raise FeatureFileError(f"{path}: no feature rows")
    tokens = df["token"].to_numpy()
    dup = pd.Series(tokens).duplicated()
    if dup.any():
        raise FeatureFileError(f"{path}: duplicate rows for item(s) {_show(tokens[dup.to_numpy()])}")
    counts = df["values"].str.split().str.len().to_numpy()
    dim = int(np.bincount(counts).argmax())
    if dim == 0:
        raise FeatureFileError(f"{path}: feature rows have no values")
    bad = np.flatnonzero(counts != dim)
    if len(bad):
        lines = [f"line {i + 2} (item {tokens[i]}: {counts[i]} values)" for i in bad[:5]]
        raise FeatureFileError(
            f"{path}: inconsistent feature dimension, most rows have {dim} values but "
            + "; ".join(lines) + (f" ... ({len(bad)} rows)" if len(bad) > 5 else ""))
    if expected_dim is not None and dim != int(expected_dim):
        raise FeatureFileError(f"{path}: features have dimension {dim}, expected {expected_dim}")
    try:
        flat = np.array(" ".join(df["values"].to_numpy()).split(), dtype=np.float32)
    except ValueError as err:
        raise FeatureFileError(f"{path}: a value is not a number ({err})") from None
    matrix = flat.reshape(len(df), dim)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise FeatureFileError(f"{path}: NaN or infinite values for item(s) {_show(tokens[~finite])}")
    return tokens, matrix


def align_to_items(path, tokens, matrix, token2id, n_items, known_tokens=None):
    """Re-order feature rows to internal item ids.

    Args:
        token2id (dict): RecBole's ``field2token_id[item_field]`` (``[PAD]`` -> 0).
        n_items (int): number of internal item ids, padding included.
        known_tokens (set or None): every item token the raw data mentioned, before RecBole's
            filtering. Rows for tokens in it that the data set dropped are skipped; rows for
            tokens outside it are an error. ``None``: only the data set's own tokens are known.

    Returns:
        np.ndarray float32 [n_items, dim], row 0 zeros.
    """
    ids = np.array([token2id.get(t, -1) for t in tokens], dtype=np.int64)
    missing_in_data = ids < 0
    if missing_in_data.any():
        strange = [t for t in tokens[missing_in_data] if known_tokens is None or t not in known_tokens]
        if strange:
            raise FeatureFileError(f"{path}: feature rows for unknown item(s) {_show(strange)}")
    aligned = np.zeros((n_items, matrix.shape[1]), dtype=np.float32)
    keep = ~missing_in_data
    aligned[ids[keep]] = matrix[keep]
    have = np.zeros(n_items, dtype=bool)
    have[ids[keep]] = True
    have[0] = True
    if not have.all():
        id2token = {i: t for t, i in token2id.items()}
        raise FeatureFileError(
            f"{path}: no feature row for item(s) {_show(id2token[i] for i in np.flatnonzero(~have))}")
    return aligned
