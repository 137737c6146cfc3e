"""Deletion requests: which training interactions must be forgotten.

Regimes (config ``forget_regime``):

* ``interaction`` -- a random share (``forget_share``) of the training interactions;
* ``user`` -- every training interaction of a share of users, chosen at random, the most
  active first (``forget_user_mode: core``) or the least active first (``edge``);
* ``item`` -- every training interaction of a share of the items that have any; the items stay
  in the catalogue (their content can still be scored);
* ``request`` -- an atomic file (``forget_file``) with a ``user_id:token`` and/or an
  ``item_id:token`` column: a row with both names one interaction, a row with only a user (or
  an empty item cell) all of that user's interactions, a row with only an item all of its.

The forget set ``D_f`` is the matching TRAINING interactions. Held-out rows (validation, test)
of requested users, items or pairs are data the request covers as well: they are dropped from
evaluation (:func:`heldout_keep_mask`), never used as utility.
"""
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_tru.files import write_text

REGIMES = ("interaction", "user", "item", "request")
USER_MODES = ("random", "core", "edge")


class RequestError(ValueError):
    """A deletion request is malformed, empty, names unknown ids, or deletes everything."""


@dataclass
class ForgetSet:
    """A deletion request resolved against the training split (internal ids)."""

    regime: str
    rows: np.ndarray                 # row indices into the training inter_feat
    users: np.ndarray                # [n_f] user of each forgotten interaction
    items: np.ndarray                # [n_f] item of each forgotten interaction
    deleted_users: np.ndarray        # users left with no training interaction (they own their rows)
    deleted_items: np.ndarray        # items left with no training interaction (they own their ID rows)
    requested_users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    requested_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    requested_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    n_train: int = 0

    def __len__(self):
        return len(self.rows)

    def stats(self):
        return {
            "regime": self.regime,
            "interactions": int(len(self.rows)),
            "share_of_train": float(len(self.rows) / max(self.n_train, 1)),
            "users_touched": int(len(np.unique(self.users))),
            "items_touched": int(len(np.unique(self.items))),
            "fully_deleted_users": int(len(self.deleted_users)),
            "fully_deleted_items": int(len(self.deleted_items)),
        }


def _pairs_of(train_dataset):
    inter = train_dataset.inter_feat
    return (inter[train_dataset.uid_field].numpy().astype(np.int64),
            inter[train_dataset.iid_field].numpy().astype(np.int64))


def _owned(ids, removed, n):
    """Ids whose every occurrence in ``ids`` is in ``removed`` (boolean mask)."""
    total = np.bincount(ids, minlength=n)
    gone = np.bincount(ids[removed], minlength=n)
    return np.flatnonzero((total > 0) & (gone == total))


def _finish(regime, train_dataset, removed, **requested):
    users, items = _pairs_of(train_dataset)
    if not removed.any():
        raise RequestError("The deletion request matches no training interaction (empty forget set).")
    if removed.all():
        raise RequestError("The deletion request removes every training interaction: nothing would be left to learn from.")
    if len(np.unique(users[~removed])) == 0:
        raise RequestError("The deletion request removes every interaction of every user.")
    rows = np.flatnonzero(removed)
    return ForgetSet(regime=regime, rows=rows, users=users[rows], items=items[rows],
                     deleted_users=_owned(users, removed, train_dataset.user_num),
                     deleted_items=_owned(items, removed, train_dataset.item_num),
                     n_train=len(users), **requested)


def union(first, second, train_dataset):
    """The forget set of two requests resolved on the same training split (a chained request:
    the earlier requests' set and this one's): every row either deletes, every id or pair either
    names. The same set as resolving one file holding both requests' lines."""
    users, _ = _pairs_of(train_dataset)
    removed = np.zeros(len(users), dtype=bool)
    removed[first.rows] = True
    removed[second.rows] = True
    pairs = np.unique(np.concatenate([first.requested_pairs.reshape(-1, 2),
                                      second.requested_pairs.reshape(-1, 2)]).astype(np.int64), axis=0)
    return _finish("request", train_dataset, removed,
                   requested_users=np.union1d(first.requested_users, second.requested_users).astype(np.int64),
                   requested_items=np.union1d(first.requested_items, second.requested_items).astype(np.int64),
                   requested_pairs=pairs)


def new_part(cumulative, earlier_rows, request=None):
    """The part of the forget set ``cumulative`` that is not in ``earlier_rows`` (training rows an
    earlier request deleted): what a chained request still has to unlearn. Users and items are
    fully deleted in it when they are in ``cumulative`` (nothing retained after this request)
    and own a row of the new part (ids fully deleted by an earlier request are done).
    ``request`` (this request alone) gives the requested ids. Raises :class:`RequestError` when
    every row was deleted before."""
    keep = ~np.isin(cumulative.rows, earlier_rows)
    if not keep.any():
        raise RequestError("every training interaction this request names was already deleted by an earlier "
                           "request (recorded in the input checkpoint): nothing left to unlearn")
    users, items = cumulative.users[keep], cumulative.items[keep]
    named = {} if request is None else {"requested_users": request.requested_users,
                                        "requested_items": request.requested_items,
                                        "requested_pairs": request.requested_pairs}
    return ForgetSet(regime=cumulative.regime, rows=cumulative.rows[keep], users=users, items=items,
                     deleted_users=np.intersect1d(cumulative.deleted_users, users),
                     deleted_items=np.intersect1d(cumulative.deleted_items, items),
                     n_train=cumulative.n_train, **named)


def _check_share(share):
    if not isinstance(share, (int, float)) or not 0 < share < 1:
        raise RequestError(f"config key 'forget_share' must be a number in (0, 1), got {share!r}")


def select_forget(config, train_dataset, heldout=()):
    """Resolve the configured deletion request on ``train_dataset`` (``heldout``: the
    validation/test data sets, where a requested pair may also be found)."""
    regime = config["forget_regime"]
    if regime not in REGIMES:
        raise RequestError(f"config key 'forget_regime' must be one of {', '.join(REGIMES)}, got {regime!r}")
    if regime == "request":
        if not config["forget_file"]:
            raise RequestError("forget_regime 'request' needs config key 'forget_file' (a deletion-request atomic file)")
        return read_request(config["forget_file"], train_dataset, on_unknown=config["forget_unknown"],
                            heldout=heldout)
    share = config["forget_share"]
    _check_share(share)
    rng = np.random.default_rng(config["forget_seed"])
    users, items = _pairs_of(train_dataset)
    removed = np.zeros(len(users), dtype=bool)
    if regime == "interaction":
        removed[rng.choice(len(users), size=max(1, round(share * len(users))), replace=False)] = True
        return _finish(regime, train_dataset, removed)
    if regime == "user":
        mode = config["forget_user_mode"]
        if mode not in USER_MODES:
            raise RequestError(f"config key 'forget_user_mode' must be one of {', '.join(USER_MODES)}, got {mode!r}")
        active = np.unique(users)
        n = max(1, round(share * len(active)))
        counts = np.bincount(users, minlength=train_dataset.user_num)[active]
        if mode == "random":
            chosen = rng.choice(active, size=n, replace=False)
        else:  # stable order: activity, then a seeded tie-break
            tie = rng.permutation(len(active))
            order = np.lexsort((tie, -counts if mode == "core" else counts))
            chosen = active[order[:n]]
        removed = np.isin(users, chosen)
        return _finish(regime, train_dataset, removed, requested_users=np.sort(chosen))
    active = np.unique(items)
    chosen = rng.choice(active, size=max(1, round(share * len(active))), replace=False)
    removed = np.isin(items, chosen)
    return _finish(regime, train_dataset, removed, requested_items=np.sort(chosen))


def _read_request_frame(path, uid_field, iid_field):
    """Rows of a request file as a DataFrame with columns ``user`` and ``item`` (raw tokens,
    ``""`` where a row leaves one out)."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"Deletion-request file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    allowed = {f"{uid_field}:token": "user", f"{iid_field}:token": "item"}
    if not header or any(h not in allowed for h in header) or len(set(header)) != len(header):
        raise RequestError(f"{path}, line 1: header must be '{uid_field}:token' and/or '{iid_field}:token' "
                           f"(tab separated), got {lines[0] if lines else ''!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != len(header):
            raise RequestError(f"{path}, line {n}: expected {len(header)} column(s), got {len(cells)}")
        rows.append(cells)
    frame = pd.DataFrame(rows, columns=[allowed[h] for h in header], dtype=str)
    for col in ("user", "item"):
        if col not in frame:
            frame[col] = ""
    frame = frame[(frame["user"] != "") | (frame["item"] != "")]
    if frame.empty:
        raise RequestError(f"{path}: the deletion request has no rows (empty request)")
    return frame


def read_request(path, train_dataset, on_unknown="error", heldout=()):
    """Resolve a deletion-request atomic file against the training split.

    ``on_unknown``: ``error`` (default) -- unknown user/item tokens or pairs that are in no
    split are an error naming the first few; ``skip`` -- they are left out with a warning.
    """
    if on_unknown not in ("error", "skip"):
        raise RequestError(f"config key 'forget_unknown' must be 'error' or 'skip', got {on_unknown!r}")
    ds = train_dataset
    frame = _read_request_frame(path, ds.uid_field, ds.iid_field)
    u2id, i2id = ds.field2token_id[ds.uid_field], ds.field2token_id[ds.iid_field]
    problems = []
    unknown_users = sorted({t for t in frame["user"] if t and t not in u2id})
    unknown_items = sorted({t for t in frame["item"] if t and t not in i2id})
    if unknown_users:
        problems.append(f"unknown user(s) {', '.join(unknown_users[:5])}" + (" ..." if len(unknown_users) > 5 else ""))
    if unknown_items:
        problems.append(f"unknown item(s) {', '.join(unknown_items[:5])}" + (" ..." if len(unknown_items) > 5 else ""))
    known = frame[~frame["user"].isin(unknown_users) & ~frame["item"].isin(unknown_items)]
    users, items = _pairs_of(ds)
    req_users = np.array(sorted({u2id[t] for t, i in zip(known["user"], known["item"]) if t and not i}), dtype=np.int64)
    req_items = np.array(sorted({i2id[t] for t, u in zip(known["item"], known["user"]) if t and not u}), dtype=np.int64)
    pair_rows = known[(known["user"] != "") & (known["item"] != "")]
    pairs = np.array([[u2id[u], i2id[i]] for u, i in zip(pair_rows["user"], pair_rows["item"])], dtype=np.int64).reshape(-1, 2)
    n_items = ds.item_num
    train_keys = users * n_items + items
    pair_keys = pairs[:, 0] * n_items + pairs[:, 1]
    all_keys = np.concatenate([train_keys] + [_pair_keys(h) for h in heldout])
    absent = ~np.isin(pair_keys, all_keys)
    if absent.any():
        id2u, id2i = ds.field2id_token[ds.uid_field], ds.field2id_token[ds.iid_field]
        shown = [f"({id2u[u]}, {id2i[i]})" for u, i in pairs[absent][:5]]
        problems.append(f"pair(s) with no interaction {', '.join(shown)}" + (" ..." if absent.sum() > 5 else ""))
        pairs = pairs[~absent]
        pair_keys = pair_keys[~absent]
    if problems:
        message = f"{path}: " + "; ".join(problems)
        if on_unknown == "error":
            raise RequestError(message + " (set forget_unknown: skip to leave them out)")
        logging.getLogger().warning(message + " -- skipped (forget_unknown: skip)")
    removed = np.isin(users, req_users) | np.isin(items, req_items) | np.isin(train_keys, pair_keys)
    return _finish("request", ds, removed, requested_users=req_users, requested_items=req_items,
                   requested_pairs=pairs)


def _pair_keys(dataset):
    users, items = _pairs_of(dataset)
    return users * dataset.item_num + items


def heldout_keep_mask(forget, dataset):
    """Boolean mask over ``dataset``'s rows: False for rows the request covers (rows of
    requested users or items, requested pairs)."""
    users, items = _pairs_of(dataset)
    drop = np.isin(users, forget.requested_users) | np.isin(items, forget.requested_items)
    if len(forget.requested_pairs):
        keys = forget.requested_pairs[:, 0] * dataset.item_num + forget.requested_pairs[:, 1]
        drop |= np.isin(_pair_keys(dataset), keys)
    return ~drop


def save_forget_set(forget, train_dataset, folder):
    """Write ``forget.inter`` and ``forget_stats.json``; returns the .inter path.

    ``forget.inter`` is a valid ``forget_regime: request`` file that replays the request
    exactly: a user-only row per requested user, an item-only row per requested item, and a
    pair row for every other forgotten training pair and every requested pair."""
    ds = train_dataset
    folder = Path(folder)
    id2u, id2i = ds.field2id_token[ds.uid_field], ds.field2id_token[ds.iid_field]
    covered = np.isin(forget.users, forget.requested_users) | np.isin(forget.items, forget.requested_items)
    pairs = np.unique(np.concatenate([np.stack([forget.users[~covered], forget.items[~covered]], axis=1),
                                      forget.requested_pairs.reshape(-1, 2)]), axis=0)
    lines = [f"{ds.uid_field}:token\t{ds.iid_field}:token"]
    lines += [f"{id2u[u]}\t" for u in forget.requested_users]
    lines += [f"\t{id2i[i]}" for i in forget.requested_items]
    lines += [f"{id2u[u]}\t{id2i[i]}" for u, i in pairs]
    inter = folder / "forget.inter"
    write_text(inter, "\n".join(lines) + "\n")
    write_text(folder / "forget_stats.json", json.dumps(forget.stats(), indent=2))
    return inter
