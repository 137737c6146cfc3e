"""Import an MMRec-format data set (enoche/MMRec: Amazon Baby, Sports, Clothing, ...) into
RecBole atomic files with one feature file per modality.

MMRec input, folder ``<src>`` (``<name>`` defaults to the folder's name):

* ``<name>.inter`` -- tab separated, header ``userID itemID rating timestamp x_label``;
  ``userID``/``itemID`` are 0-based integer ids, ``x_label`` is 0/1/2 = train/valid/test.
  Only ``userID``, ``itemID`` and ``x_label`` are required; ``rating`` is not used.
* ``image_feat.npy`` -- float [n_items, 4096], CNN features of the product images;
  ``text_feat.npy`` -- float [n_items, 384], sentence-transformer features of the product text.
  Row k belongs to ``itemID`` k.

Output, folder ``<out>/<name>``:

* ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter`` -- the fixed split, from
  ``x_label``; and ``<name>.inter``, their concatenation. Columns ``user_id:token item_id:token``
  and ``timestamp:float`` when the source has it. Rows keep the source order. As MMRec does
  (``filter_out_cod_start_users: True``), valid/test rows of users absent from train are dropped.
* ``<name>.imagefeat`` (modality ``image``) and ``<name>.textfeat`` (modality ``text``) -- one row
  per item that occurs in the interactions, keyed by the itemID as token (``"3"`` = npy row 3).
  Feature rows of items with no interaction are not written.
* ``<name>.yaml`` -- RecBole config for it: field names, ``load_col``,
  ``benchmark_filename: [train, valid, test]`` (RecBole then reads the three split files instead
  of splitting ``<name>.inter`` itself), ``modalities`` and ``feature_dims``.

Run it with ``--dataset=<name> --data_path=<out> --config_files=<out>/<name>/<name>.yaml``.
"""
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from recbole_tru.data.builders import write_atomic, write_atomic_file, write_feature_file

SPLITS = ("train", "valid", "test")
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
DEFAULT_FEATURES = {"image": "image_feat.npy", "text": "text_feat.npy"}
SUFFIXES = {"image": "imagefeat", "text": "textfeat"}


class MMRecFormatError(ValueError):
    """An MMRec input file is missing or malformed."""


def feature_suffix(modality):
    """Suffix of a modality's feature file: ``imagefeat``, ``textfeat``, else ``<modality>feat``."""
    return SUFFIXES.get(modality, f"{modality}feat")


def _lines(mask, limit=5):
    """File line numbers (header = line 1) of the first True rows of ``mask``."""
    rows = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(r + 2) for r in rows[:limit])
    return shown + (f" ... ({len(rows)} rows)" if len(rows) > limit else "")


def _integer_column(path, frame, column):
    """``frame[column]`` as int64, or an error naming the lines that are not integers >= 0."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values < 0) | (values != values.round())
    if bad.any():
        raise MMRecFormatError(f"{path}: column '{column}' must hold integers >= 0; "
                               f"bad values on line(s) {_lines(bad)}")
    return values.to_numpy(dtype=np.int64)


def read_mmrec_inter(path):
    """Read an MMRec ``.inter`` file.

    Returns:
        DataFrame with columns user_id, item_id (str tokens of the integer ids), x_label (int,
        0/1/2) and, when the source has it, timestamp (str, as written).
    """
    path = Path(path)
    if not path.is_file():
        raise MMRecFormatError(f"Interaction file not found: {path}")
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise MMRecFormatError(f"{path}: missing column(s) {', '.join(missing)} "
                               f"(header: {', '.join(raw.columns)})")
    if raw.empty:
        raise MMRecFormatError(f"{path}: no interaction rows")
    labels = pd.to_numeric(raw["x_label"], errors="coerce")
    bad = ~labels.isin([0, 1, 2])
    if bad.any():
        values = ", ".join(map(repr, sorted(set(raw.loc[bad, "x_label"]))))
        raise MMRecFormatError(f"{path}: x_label must be 0, 1 or 2 (train/valid/test); "
                               f"got {values} on line(s) {_lines(bad)}")
    frame = pd.DataFrame({
        "user_id": _integer_column(path, raw, "userID").astype(str),
        "item_id": _integer_column(path, raw, "itemID").astype(str),
    })
    if "timestamp" in raw.columns:
        frame["timestamp"] = raw["timestamp"].to_numpy()
    frame["x_label"] = labels.to_numpy(dtype=np.int64)
    return frame


def split_frames(path, frame, drop_cold_start_users=True):
    """{split name: rows of that split (without x_label)}; checks that no split is empty."""
    splits = {name: frame[frame["x_label"] == k].drop(columns="x_label") for k, name in enumerate(SPLITS)}
    if drop_cold_start_users:
        known = splits["train"]["user_id"].unique()
        for name in SPLITS[1:]:
            splits[name] = splits[name][splits[name]["user_id"].isin(known)]
    for k, name in enumerate(SPLITS):
        if splits[name].empty:
            raise MMRecFormatError(f"{path}: no {name} interactions (x_label={k})"
                                   + (" from users seen in train" if drop_cold_start_users and k else ""))
    return splits


def load_features(path, item_ids):
    """Rows ``item_ids`` (int [n]) of the npy file at ``path``: float32 [n, dim], checked."""
    path = Path(path)
    if not path.is_file():
        raise MMRecFormatError(f"Feature file not found: {path}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise MMRecFormatError(f"{path}: not a numeric .npy array ({err})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise MMRecFormatError(f"{path}: need a 2-D numeric array [n_items, dim], "
                               f"got shape {array.shape} dtype {array.dtype}")
    needed = int(item_ids.max()) + 1
    if array.shape[0] < needed:
        raise MMRecFormatError(f"{path}: {array.shape[0]} rows, but itemIDs go up to {needed - 1} "
                               f"(need at least {needed} rows, row k = itemID k)")
    rows = np.asarray(array[item_ids], dtype=np.float32)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = item_ids[~finite]
        shown = ", ".join(map(str, bad[:5])) + (f" ... ({len(bad)} rows)" if len(bad) > 5 else "")
        raise MMRecFormatError(f"{path}: NaN or infinite values in row(s) (itemID) {shown}")
    return rows


def config_text(name, columns, dims):
    """The ``<name>.yaml`` RecBole config (str) for the imported data set."""
    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id"}
    if "timestamp" in columns:
        config["TIME_FIELD"] = "timestamp"
    config.update({
        "load_col": {"inter": list(columns)},
        "benchmark_filename": list(SPLITS),
        "modalities": {m: feature_suffix(m) for m in dims},
        "feature_dims": dict(dims),
    })
    head = (f"# RecBole config for '{name}', imported from MMRec format by recbole_tru.data.builders.mmrec.\n"
            "# benchmark_filename: RecBole reads <name>.train/.valid/.test.inter (the fixed MMRec split).\n")
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def import_mmrec(src, out, name=None, features=None, drop_cold_start_users=True):
    """Convert the MMRec data set in folder ``src`` into ``<out>/<name>/``.

    Args:
        src: MMRec data set folder with ``<name>.inter`` and the npy feature files.
        out: parent folder of the output data set folder (RecBole's ``data_path``).
        name (str or None): data set name; None: ``src``'s folder name.
        features (dict or None): modality -> npy file name in ``src``;
            None: ``{"image": "image_feat.npy", "text": "text_feat.npy"}``.
        drop_cold_start_users (bool): drop valid/test rows of users with no train row (MMRec's default).

    Returns:
        dict output kind (``inter``, ``train``, ``valid``, ``test``, modality names, ``yaml``) -> Path.
    """
    src = Path(src)
    name = name or src.resolve().name
    features = DEFAULT_FEATURES if features is None else features
    inter_path = src / f"{name}.inter"
    splits = split_frames(inter_path, read_mmrec_inter(inter_path), drop_cold_start_users)
    everything = pd.concat([splits[s] for s in SPLITS], ignore_index=True)
    item_ids = np.unique(everything["item_id"].to_numpy(dtype=np.int64))
    matrices = {m: load_features(src / f, item_ids) for m, f in features.items()}

    dest = Path(out) / name
    types = {"user_id": "token", "item_id": "token", "timestamp": "float"}
    written = {"inter": write_atomic_file(dest / f"{name}.inter", everything, types)}
    for split in SPLITS:
        written[split] = write_atomic_file(dest / f"{name}.{split}.inter", splits[split], types)
    for modality, matrix in matrices.items():
        written[modality] = write_feature_file(dest / f"{name}.{feature_suffix(modality)}",
                                               item_ids, matrix, modality)
    dims = {m: int(x.shape[1]) for m, x in matrices.items()}
    written["yaml"] = write_atomic(dest / f"{name}.yaml", config_text(name, everything.columns, dims))
    return written
