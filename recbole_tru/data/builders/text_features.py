"""A ``text`` modality for any RecBole atomic data set whose ``.item`` file has text fields.

Input: the data set folder ``<data_dir>`` (RecBole's ``<data_path>/<dataset>``) holding
``<dataset>.item``: tab separated, header ``item_id:token<TAB>title:token_seq<TAB>...``.
Output: ``<data_dir>/<dataset>.<suffix>`` (default ``textfeat``), header
``item_id:token<TAB><modality>:float_seq``, one row per row of the ``.item`` file, in its order.

Each item's sentence is its chosen fields' values joined by ``". "`` (empty values skipped);
the encoder turns the sentences into vectors (default: all-MiniLM-L6-v2, 384-d, unit norm).
Use it in a run with ``modalities: {text: textfeat}`` in the config.
"""
from pathlib import Path

import numpy as np

from recbole_tru.data.builders import read_atomic_file, write_feature_file

TEXT_TYPES = ("token_seq", "token")
FIELD_SEPARATOR = ". "


class TextFeatureError(ValueError):
    """The ``.item`` file cannot give text features (missing, no text field, no rows)."""


def read_item_file(path, item_field="item_id"):
    """Read ``path`` (a ``.item`` file) -> (frame of str, field types); checks the id column."""
    if not Path(path).is_file():
        raise TextFeatureError(f"Item file not found: {path}")
    frame, types = read_atomic_file(path)
    if types.get(item_field) != "token":
        raise TextFeatureError(f"{path}: header has no '{item_field}:token' field "
                               f"(fields: {', '.join(f'{k}:{v}' for k, v in types.items())})")
    if frame.empty:
        raise TextFeatureError(f"{path}: no item rows")
    duplicated = frame[item_field].duplicated()
    if duplicated.any():
        raise TextFeatureError(f"{path}: duplicate rows for item(s) "
                               f"{', '.join(frame.loc[duplicated, item_field].head(5))}")
    return frame, types


def choose_fields(path, types, fields, item_field="item_id"):
    """The text fields to use: ``fields`` checked against the header, or every token/token_seq
    field but the item id when ``fields`` is None."""
    if fields is None:
        fields = [name for name, kind in types.items() if kind in TEXT_TYPES and name != item_field]
        if not fields:
            raise TextFeatureError(f"{path}: no text field (token or token_seq) besides '{item_field}'")
        return fields
    fields = [fields] if isinstance(fields, str) else list(fields)
    if not fields:
        raise TextFeatureError(f"{path}: empty list of text fields")
    for name in fields:
        if name not in types:
            raise TextFeatureError(f"{path}: text field '{name}' is not in the header "
                                   f"(fields: {', '.join(types)})")
        if types[name] not in TEXT_TYPES:
            raise TextFeatureError(f"{path}: field '{name}' has type {types[name]}, "
                                   f"not a text type ({' or '.join(TEXT_TYPES)})")
    return fields


def item_sentences(frame, fields):
    """One sentence per row: the ``fields`` values, stripped, non-empty ones joined by ". "."""
    parts = frame[fields].apply(lambda column: column.str.strip())
    return [FIELD_SEPARATOR.join(filter(None, row)) for row in parts.itertuples(index=False)]


def default_encoder(texts):
    """all-MiniLM-L6-v2 embeddings, float32 [n, 384] (imports ``sentence-transformers`` lazily)."""
    from recbole_tru.data.builders import encoder
    return encoder.encode(texts)


def build_text_features(data_dir, dataset_name, fields=None, suffix="textfeat", modality="text",
                        encoder=None, item_field="item_id"):
    """Write ``<data_dir>/<dataset_name>.<suffix>`` from ``<data_dir>/<dataset_name>.item``.

    Args:
        data_dir: the data set's own folder.
        fields (list of str or None): text fields to embed; None: all token/token_seq fields
            except ``item_field``.
        encoder (callable or None): texts [n] -> float array [n, dim]; None: all-MiniLM-L6-v2.

    Returns:
        Path of the written file.
    """
    path = Path(data_dir) / f"{dataset_name}.item"
    frame, types = read_item_file(path, item_field)
    texts = item_sentences(frame, choose_fields(path, types, fields, item_field))
    vectors = np.asarray((encoder or default_encoder)(texts), dtype=np.float32)
    if vectors.shape[0] != len(texts) or vectors.ndim != 2:
        raise TextFeatureError(f"{path}: encoder returned shape {vectors.shape} for {len(texts)} items")
    out = Path(data_dir) / f"{dataset_name}.{suffix}"
    return write_feature_file(out, frame[item_field], vectors, modality, item_field)
