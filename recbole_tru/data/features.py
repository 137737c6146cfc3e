"""Item-feature atomic files: reading, checking, and alignment to RecBole's internal ids.

One file per modality, in RecBole's atomic-file convention::

    item_id:token<TAB>text:float_seq
    242<TAB>0.0132 -0.0871 ...

Rows are keyed by the raw item token (never by row order) and re-ordered to the data set's
internal item ids; row 0 (RecBole's ``[PAD]``) is all zeros. Every problem is an error that
names the file (and the line or item where one applies).

Binary cache. Text is slow for wide features (a 4096-d file of 23k items is ~0.5 GB): after a
successful text read, :func:`read_feature_file` writes ``<file>.cache.npz`` next to it (an
uncompressed npz holding ``tokens``, ``matrix`` float32 and ``key``) and later reads it
instead of the text while it is valid. ``key`` = format version, separator, the source's size,
its modification time (ns) and the sha256 of its first and last MiB: any change to the source
(rewritten, edited, touched) makes the cache stale, and a stale, unreadable or inconsistent
cache is ignored and rebuilt. Only files of at least ``CACHE_MIN_BYTES`` are cached unless the
caller asks (``cache=True``/``False``); the cache is written atomically
(:func:`recbole_tru.files.atomic_write`, replacing a stale one) and skipped, with a warning,
where the folder is not writable. The header and the expected dimension are checked on every
read, cached or not; the other checks ran when the cache was built from the text (and
finiteness and shapes are checked again on load).
"""
import csv
import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_tru.checkpoint import DERIVED_SUFFIXES
from recbole_tru.files import atomic_write

CACHE_SUFFIX = DERIVED_SUFFIXES[0]               # left out of the data digest (recbole_tru.checkpoint)
CACHE_VERSION = "recbole_tru-features-v1"
CACHE_MIN_BYTES = 8 << 20          # files from 8 MiB on are cached by default
_EDGE_BYTES = 1 << 20              # the key hashes this much of the file's start and end
_PARSE_ROWS = 1024                 # rows parsed per block (bounds the joined text's size)


class FeatureFileError(ValueError):
    """A feature file is missing, malformed or inconsistent with the data set."""


def _show(items, limit=5):
    items = list(items)
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def feature_file_path(data_path, dataset_name, suffix):
    return Path(data_path) / f"{dataset_name}.{suffix}"


def read_feature_file(path, item_field="item_id", expected_dim=None, sep="\t", cache=None):
    """Read one modality's atomic feature file (through its binary cache where valid).

    Args:
        cache (bool or None): use and write ``<file>.cache.npz``; None: only for files of at
            least ``CACHE_MIN_BYTES``.

    Returns:
        (tokens, matrix): ``tokens`` a str array [n_rows], ``matrix`` float32 [n_rows, dim].
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"Feature file not found: {path}")
    _check_header(path, item_field, sep)
    if cache is None:
        cache = path.stat().st_size >= CACHE_MIN_BYTES
    loaded = None
    if cache:
        key = cache_key(path, sep)
        loaded = _load_cache(cache_path(path), key)
    if loaded is None:
        loaded = _read_text(path, sep)
        if cache:
            _write_cache(cache_path(path), key, *loaded)
    tokens, matrix = loaded
    if expected_dim is not None and matrix.shape[1] != int(expected_dim):
        raise FeatureFileError(f"{path}: features have dimension {matrix.shape[1]}, expected {expected_dim}")
    return tokens, matrix


def _check_header(path, item_field, sep):
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(sep)
    if len(header) != 2 or header[0] != f"{item_field}:token" or not header[1].endswith(":float_seq"):
        raise FeatureFileError(
            f"{path}: header must be '{item_field}:token<TAB><name>:float_seq', got {sep.join(header)!r}")


def _read_text(path, sep):
    """Parse and check the text file (header already checked) -> (tokens, matrix)."""
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
    values = df["values"]
    counts = values.str.count(r"\S+").to_numpy(dtype=np.int64)
    dim = int(np.bincount(counts).argmax())
    if dim == 0:
        raise FeatureFileError(f"{path}: feature rows have no values")
    bad = np.flatnonzero(counts != dim)
    if len(bad):
        lines = [f"line {i + 2} (item {tokens[i]}: {counts[i]} values)" for i in bad[:5]]
        raise FeatureFileError(
            f"{path}: inconsistent feature dimension, most rows have {dim} values but "
            + "; ".join(lines) + (f" ... ({len(bad)} rows)" if len(bad) > 5 else ""))
    matrix = np.empty((len(df), dim), dtype=np.float32)
    rows = values.to_numpy()
    for start in range(0, len(rows), _PARSE_ROWS):
        block = rows[start:start + _PARSE_ROWS]
        matrix[start:start + len(block)] = _parse_block(path, block, dim)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise FeatureFileError(f"{path}: NaN or infinite values for item(s) {_show(tokens[~finite])}")
    return tokens, matrix


def _parse_block(path, rows, dim):
    """Rows of ``dim`` space-separated numbers -> float32 [len(rows), dim]. numpy's C parser
    first; where it stops early, Python's (which decides what is a number, as before)."""
    text = " ".join(rows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            flat = np.fromstring(text, dtype=np.float32, sep=" ")
        if flat.size == len(rows) * dim:
            return flat.reshape(len(rows), dim)
    except (ValueError, DeprecationWarning):
        pass
    try:
        flat = np.array(text.split(), dtype=np.float32)
    except ValueError as err:
        raise FeatureFileError(f"{path}: a value is not a number ({err})") from None
    return flat.reshape(len(rows), dim)


# ------------------------------------------------------------------------------ binary cache

def cache_path(path):
    """``<file>.cache.npz`` beside the feature file."""
    path = Path(path)
    return path.with_name(path.name + CACHE_SUFFIX)


def cache_key(path, sep="\t"):
    """Identity of the source file's current content (see the module docstring)."""
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_EDGE_BYTES))
        if stat.st_size > _EDGE_BYTES:
            f.seek(max(_EDGE_BYTES, stat.st_size - _EDGE_BYTES))
            digest.update(f.read(_EDGE_BYTES))
    return f"{CACHE_VERSION}|sep={sep!r}|size={stat.st_size}|mtime_ns={stat.st_mtime_ns}|sha256={digest.hexdigest()}"


def _load_cache(path, key):
    """(tokens, matrix) from a valid cache for ``key``; None when absent, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != {"key", "tokens", "matrix"} or str(npz["key"]) != key:
                return None
            tokens, matrix = npz["tokens"], npz["matrix"]
    except Exception as err:  # a truncated or garbled file raises several types
        logging.getLogger(__name__).warning(f"{path}: unreadable feature cache, rebuilding it ({type(err).__name__})")
        return None
    if (matrix.dtype != np.float32 or matrix.ndim != 2 or tokens.ndim != 1 or tokens.dtype.kind != "U"
            or len(tokens) != len(matrix) or len(tokens) == 0 or matrix.shape[1] == 0
            or not np.isfinite(matrix).all()):
        return None
    return tokens.astype(object), matrix


def _write_cache(path, key, tokens, matrix):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), tokens=np.asarray(tokens, dtype=str), matrix=matrix)

    try:
        atomic_write(path, write, replace=True)         # a stale cache is replaced
    except OSError as err:
        logging.getLogger(__name__).warning(f"{path}: feature cache not written ({err})")


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
