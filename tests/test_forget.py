"""Deletion requests and the deleted data: every regime selects exactly what it says, request
files are parsed strictly (errors name the file and the line), the forget set is reproducible
from its seed and from its saved ``forget.inter``, and ``UnlearnData`` removes every forgotten
edge from what a model reads (retained interactions, the graph, negative sampling, history
masks, held-out rows of deleted users)."""
import logging

import numpy as np
import pytest
import torch

from conftest import tiny_config
from recbole_tru.data.forget import RequestError, read_request, save_forget_set, select_forget, union
from recbole_tru.data.retained import UnlearnData, with_overrides
from recbole_tru.training import build_model, load_data
from recbole_tru.unlearn import pipeline

UID, IID = "user_id", "item_id"
HEADER = ("user_id:token", "item_id:token")


# --------------------------------------------------------------------------- fixtures and helpers

class Tiny:
    """The tiny data set's splits, loaded once for the module."""

    def __init__(self, config):
        self.config = config
        _, train, valid, test = load_data(config)
        self.train, self.valid, self.test = train.dataset, valid.dataset, test.dataset
        inter = self.train.inter_feat
        self.users = inter[UID].numpy().astype(np.int64)
        self.items = inter[IID].numpy().astype(np.int64)
        self.id2user = self.train.field2id_token[UID]
        self.id2item = self.train.field2id_token[IID]

    def cfg(self, **overrides):
        return with_overrides(self.config, **overrides)

    def keys(self, users, items):
        return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist()))


@pytest.fixture(scope="module")
def tiny(tiny_root, workdir):
    return Tiny(tiny_config(tiny_root, "VBPR", workdir))


def write_request(path, header, rows):
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n", encoding="utf-8")
    return path


def pairs_of(dataset):
    inter = dataset.inter_feat
    return set(zip(inter[UID].numpy().tolist(), inter[IID].numpy().tolist()))


# --------------------------------------------------------------------------- regimes

def test_interaction_regime_draws_round_share_of_training_rows(tiny):
    n_train = len(tiny.users)
    for share in (0.1, 0.25):
        forget = select_forget(tiny.cfg(forget_regime="interaction", forget_share=share), tiny.train)
        assert len(forget) == round(share * n_train)
        assert len(np.unique(forget.rows)) == len(forget.rows)
        assert forget.rows.min() >= 0 and forget.rows.max() < n_train
        np.testing.assert_array_equal(forget.users, tiny.users[forget.rows])
        np.testing.assert_array_equal(forget.items, tiny.items[forget.rows])
        assert forget.n_train == n_train
        assert forget.stats()["share_of_train"] == pytest.approx(len(forget) / n_train)
        # owned capacity: a user (item) is deleted iff none of its rows is left
        left_users = set(np.delete(tiny.users, forget.rows).tolist())
        left_items = set(np.delete(tiny.items, forget.rows).tolist())
        assert set(forget.deleted_users.tolist()) == set(forget.users.tolist()) - left_users
        assert set(forget.deleted_items.tolist()) == set(forget.items.tolist()) - left_items


@pytest.mark.parametrize("mode", ["random", "core", "edge"])
def test_user_regime_removes_every_row_of_the_chosen_users(tiny, mode):
    forget = select_forget(tiny.cfg(forget_regime="user", forget_share=0.2, forget_user_mode=mode), tiny.train)
    active = np.unique(tiny.users)
    chosen = forget.requested_users
    assert len(chosen) == round(0.2 * len(active))
    np.testing.assert_array_equal(forget.deleted_users, chosen)
    np.testing.assert_array_equal(np.sort(np.unique(forget.users)), chosen)
    np.testing.assert_array_equal(forget.rows, np.flatnonzero(np.isin(tiny.users, chosen)))
    assert len(forget.requested_items) == 0
    counts = np.bincount(tiny.users, minlength=tiny.train.user_num)
    others = np.setdiff1d(active, chosen)
    if mode == "core":      # the most active users: none left out is more active than one chosen
        assert counts[chosen].min() >= counts[others].max()
    elif mode == "edge":
        assert counts[chosen].max() <= counts[others].min()


def test_core_and_edge_differ_on_the_tiny_data(tiny):
    core = select_forget(tiny.cfg(forget_regime="user", forget_share=0.2, forget_user_mode="core"), tiny.train)
    edge = select_forget(tiny.cfg(forget_regime="user", forget_share=0.2, forget_user_mode="edge"), tiny.train)
    counts = np.bincount(tiny.users)
    assert counts[core.deleted_users].mean() > counts[edge.deleted_users].mean()
    assert len(np.intersect1d(core.deleted_users, edge.deleted_users)) == 0


def test_item_regime_removes_every_row_of_the_chosen_items(tiny):
    forget = select_forget(tiny.cfg(forget_regime="item", forget_share=0.1), tiny.train)
    active = np.unique(tiny.items)
    chosen = forget.requested_items
    assert len(chosen) == round(0.1 * len(active))
    np.testing.assert_array_equal(forget.deleted_items, chosen)
    np.testing.assert_array_equal(forget.rows, np.flatnonzero(np.isin(tiny.items, chosen)))
    assert not np.isin(np.delete(tiny.items, forget.rows), chosen).any()
    assert len(forget.requested_users) == 0


@pytest.mark.parametrize("regime", ["interaction", "user", "item"])
def test_same_seed_same_forget_set_other_seed_other_set(tiny, regime):
    config = tiny.cfg(forget_regime=regime, forget_share=0.15)
    a = select_forget(config, tiny.train)
    b = select_forget(config, tiny.train)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.deleted_users, b.deleted_users)
    np.testing.assert_array_equal(a.deleted_items, b.deleted_items)
    c = select_forget(tiny.cfg(forget_regime=regime, forget_share=0.15, forget_seed=config["forget_seed"] + 1),
                      tiny.train)
    assert not np.array_equal(a.rows, c.rows)


@pytest.mark.parametrize("share", [0, 0.0, 1, 1.5, -0.1, "0.1", None])
def test_invalid_share_names_the_key(tiny, share):
    with pytest.raises(RequestError, match="forget_share"):
        select_forget(tiny.cfg(forget_regime="interaction", forget_share=share), tiny.train)


def test_unknown_regime_and_mode_name_the_key(tiny):
    with pytest.raises(RequestError, match="forget_regime.*'users'"):
        select_forget(tiny.cfg(forget_regime="users"), tiny.train)
    with pytest.raises(RequestError, match="forget_user_mode"):
        select_forget(tiny.cfg(forget_regime="user", forget_user_mode="busy"), tiny.train)
    with pytest.raises(RequestError, match="forget_file"):
        select_forget(tiny.cfg(forget_regime="request", forget_file=None), tiny.train)
    with pytest.raises(RequestError, match="forget_unknown"):
        read_request("x.inter", tiny.train, on_unknown="ignore")


# --------------------------------------------------------------------------- request files

def _request(tiny, path, **overrides):
    return select_forget(tiny.cfg(forget_regime="request", forget_file=str(path), **overrides), tiny.train)


def test_request_user_item_and_pair_rows(tiny, tmp_path):
    counts_u, counts_i = np.bincount(tiny.users), np.bincount(tiny.items)
    user = int(np.flatnonzero(counts_u > 0)[0])
    item = int(np.flatnonzero(counts_i >= 2)[-1])
    row = int(np.flatnonzero((tiny.users != user) & (tiny.items != item))[3])
    pair = (int(tiny.users[row]), int(tiny.items[row]))
    tok_u, tok_i = tiny.id2user, tiny.id2item

    only_user = _request(tiny, write_request(tmp_path / "u.inter", HEADER[:1], [[tok_u[user]]]))
    np.testing.assert_array_equal(only_user.rows, np.flatnonzero(tiny.users == user))
    np.testing.assert_array_equal(only_user.deleted_users, [user])
    np.testing.assert_array_equal(only_user.requested_users, [user])

    only_item = _request(tiny, write_request(tmp_path / "i.inter", HEADER[1:], [[tok_i[item]]]))
    np.testing.assert_array_equal(only_item.rows, np.flatnonzero(tiny.items == item))
    np.testing.assert_array_equal(only_item.deleted_items, [item])
    np.testing.assert_array_equal(only_item.requested_items, [item])

    only_pair = _request(tiny, write_request(tmp_path / "p.inter", HEADER, [[tok_u[pair[0]], tok_i[pair[1]]]]))
    np.testing.assert_array_equal(only_pair.rows, [row])
    np.testing.assert_array_equal(only_pair.requested_pairs, [pair])
    assert len(only_pair.requested_users) == len(only_pair.requested_items) == 0

    # all three kinds in one two-column file (empty cells), plus a blank line
    mixed_path = tmp_path / "mixed.inter"
    mixed_path.write_text("\t".join(HEADER) + "\n" + f"{tok_u[user]}\t\n\n\t{tok_i[item]}\n"
                          f"{tok_u[pair[0]]}\t{tok_i[pair[1]]}\n", encoding="utf-8")
    mixed = _request(tiny, mixed_path)
    expected = np.flatnonzero((tiny.users == user) | (tiny.items == item)
                              | ((tiny.users == pair[0]) & (tiny.items == pair[1])))
    np.testing.assert_array_equal(mixed.rows, expected)
    assert mixed.regime == "request"


def test_empty_request(tiny, tmp_path):
    path = write_request(tmp_path / "empty.inter", HEADER, [])
    with pytest.raises(RequestError, match="empty request") as err:
        _request(tiny, path)
    assert str(path) in str(err.value)
    blank = tmp_path / "blank.inter"
    blank.write_text("\t".join(HEADER) + "\n\t\n\n", encoding="utf-8")
    with pytest.raises(RequestError, match="empty request"):
        _request(tiny, blank)


def test_request_deleting_everything(tiny, tmp_path):
    users = [[tiny.id2user[u]] for u in np.unique(tiny.users)]
    with pytest.raises(RequestError, match="every training interaction"):
        _request(tiny, write_request(tmp_path / "all.inter", HEADER[:1], users))


def test_unknown_tokens_are_listed_with_the_file(tiny, tmp_path):
    good = [tiny.id2user[tiny.users[0]], tiny.id2item[tiny.items[0]]]
    path = write_request(tmp_path / "unknown.inter", HEADER,
                         [good, ["nobody", ""], ["", "nothing"], ["ghost", tiny.id2item[tiny.items[0]]]])
    with pytest.raises(RequestError) as err:
        _request(tiny, path)
    message = str(err.value)
    assert str(path) in message
    assert "unknown user(s) ghost, nobody" in message
    assert "unknown item(s) nothing" in message
    assert "forget_unknown" in message


def test_pair_with_no_interaction(tiny, tmp_path):
    user = int(tiny.users[0])
    seen = set(tiny.items[tiny.users == user].tolist())
    held = pairs_of(tiny.valid) | pairs_of(tiny.test)
    never = next(i for i in range(1, tiny.train.item_num) if i not in seen and (user, i) not in held)
    path = write_request(tmp_path / "absent.inter", HEADER, [[tiny.id2user[user], tiny.id2item[never]]])
    with pytest.raises(RequestError) as err:
        _request(tiny, path)
    assert str(path) in str(err.value)
    assert f"pair(s) with no interaction ({tiny.id2user[user]}, {tiny.id2item[never]})" in str(err.value)


@pytest.mark.parametrize("header", ["user:token\titem_id:token", "user_id:token\tuser_id:token",
                                    "user_id\titem_id", "user_id:token,item_id:token", ""])
def test_malformed_header_names_file_and_line_1(tiny, tmp_path, header):
    path = tmp_path / "bad.inter"
    path.write_text(header + ("\n" if header else "") + ("u1\ti1\n" if header else ""), encoding="utf-8")
    with pytest.raises(RequestError) as err:
        _request(tiny, path)
    assert f"{path}, line 1" in str(err.value)


def test_wrong_column_count_names_the_line(tiny, tmp_path):
    u, i = tiny.id2user[tiny.users[0]], tiny.id2item[tiny.items[0]]
    path = tmp_path / "cols.inter"
    path.write_text(f"user_id:token\titem_id:token\n{u}\t{i}\n{u}\t{i}\textra\n", encoding="utf-8")
    with pytest.raises(RequestError) as err:
        _request(tiny, path)
    assert f"{path}, line 3: expected 2 column(s), got 3" in str(err.value)


def test_missing_request_file(tiny, tmp_path):
    with pytest.raises(RequestError, match="not found"):
        _request(tiny, tmp_path / "nope.inter")


def test_forget_unknown_skip_leaves_unknown_rows_out(tiny, tmp_path, caplog):
    row = 5
    u, i = int(tiny.users[row]), int(tiny.items[row])
    seen = set(tiny.items[tiny.users == u].tolist()) | {i for uu, i in pairs_of(tiny.valid) | pairs_of(tiny.test) if uu == u}
    never = next(j for j in range(1, tiny.train.item_num) if j not in seen)
    rows = [[tiny.id2user[u], tiny.id2item[i]], ["nobody", ""], ["", "nothing"],
            [tiny.id2user[u], tiny.id2item[never]]]
    path = write_request(tmp_path / "skip.inter", HEADER, rows)
    with caplog.at_level(logging.WARNING):
        forget = _request(tiny, path, forget_unknown="skip")
    np.testing.assert_array_equal(forget.rows, [row])
    np.testing.assert_array_equal(forget.requested_pairs, [[u, i]])
    assert len(forget.requested_users) == len(forget.requested_items) == 0
    assert "skipped" in caplog.text and "nobody" in caplog.text
    # only unknown rows: nothing is left, an empty forget set is still an error
    path = write_request(tmp_path / "skip_all.inter", HEADER, [["nobody", ""]])
    with pytest.raises(RequestError, match="empty forget set"):
        _request(tiny, path, forget_unknown="skip")


def test_request_pair_in_a_heldout_split_only_is_accepted(tiny, tmp_path):
    valid_pairs = sorted(pairs_of(tiny.valid) - tiny.keys(tiny.users, tiny.items))
    held_u, held_i = valid_pairs[0]
    train_u, train_i = int(tiny.users[0]), int(tiny.items[0])
    path = write_request(tmp_path / "held.inter", HEADER, [[tiny.id2user[train_u], tiny.id2item[train_i]],
                                                           [tiny.id2user[held_u], tiny.id2item[held_i]]])
    forget = select_forget(tiny.cfg(forget_regime="request", forget_file=str(path)), tiny.train,
                           heldout=(tiny.valid, tiny.test))
    np.testing.assert_array_equal(forget.rows, [0])
    data = UnlearnData(tiny.config, tiny.train, tiny.valid, tiny.test, forget)
    assert (held_u, held_i) not in pairs_of(data.valid_dataset)


# --------------------------------------------------------------------------- saved forget sets

@pytest.mark.parametrize("regime", ["interaction", "user", "item"])
def test_saved_forget_set_reads_back_as_the_same_request(tiny, tmp_path, regime):
    forget = select_forget(tiny.cfg(forget_regime=regime, forget_share=0.1), tiny.train)
    path = save_forget_set(forget, tiny.train, tmp_path)
    assert path == tmp_path / "forget.inter"
    lines = path.read_text(encoding="utf-8").splitlines()
    # one row per requested user / item (whole-user and whole-item rows), one per other pair
    expected_rows = {"interaction": len(forget), "user": len(forget.requested_users),
                     "item": len(forget.requested_items)}[regime]
    assert lines[0] == "user_id:token\titem_id:token" and len(lines) == expected_rows + 1
    again = _request(tiny, path)
    np.testing.assert_array_equal(again.rows, forget.rows)
    np.testing.assert_array_equal(again.users, forget.users)
    np.testing.assert_array_equal(again.items, forget.items)
    np.testing.assert_array_equal(again.deleted_users, forget.deleted_users)
    np.testing.assert_array_equal(again.deleted_items, forget.deleted_items)
    stats = (tmp_path / "forget_stats.json").read_text()
    assert f'"interactions": {len(forget)}' in stats


@pytest.mark.parametrize("regime", ["user", "item"])
def test_saved_forget_set_replays_the_same_evaluation_data(tiny, tmp_path, regime):
    forget = select_forget(tiny.cfg(forget_regime=regime, forget_share=0.1), tiny.train)
    again = _request(tiny, save_forget_set(forget, tiny.train, tmp_path))
    first = UnlearnData(tiny.config, tiny.train, tiny.valid, tiny.test, forget)
    replay = UnlearnData(tiny.config, tiny.train, tiny.valid, tiny.test, again)
    assert pairs_of(replay.valid_dataset) == pairs_of(first.valid_dataset)
    assert pairs_of(replay.test_dataset) == pairs_of(first.test_dataset)


def test_union_of_two_requests_is_the_request_of_both_files(tiny, tmp_path):
    """A chained request unites the earlier forget set with the new one without writing and
    re-parsing a combined file: the same rows, deleted ids and requested ids as one file with
    both requests' lines."""
    first = select_forget(tiny.cfg(forget_regime="user", forget_share=0.1), tiny.train)
    second = select_forget(tiny.cfg(forget_regime="item", forget_share=0.1, forget_seed=7), tiny.train)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = save_forget_set(first, tiny.train, tmp_path / "a")
    b = save_forget_set(second, tiny.train, tmp_path / "b")
    both = tmp_path / "both.inter"
    both.write_text(a.read_text() + "".join(b.read_text().splitlines(keepends=True)[1:]), encoding="utf-8")
    expected = _request(tiny, both)
    united = union(first, second, tiny.train)
    for key in ("rows", "users", "items", "deleted_users", "deleted_items", "requested_users", "requested_items"):
        np.testing.assert_array_equal(getattr(united, key), getattr(expected, key), err_msg=key)
    assert set(map(tuple, united.requested_pairs)) == set(map(tuple, expected.requested_pairs))
    assert len(united) == len(np.union1d(first.rows, second.rows)) > max(len(first), len(second))


def test_save_forget_set_refuses_to_overwrite(tiny, tmp_path):
    forget = select_forget(tiny.cfg(forget_regime="interaction", forget_share=0.1), tiny.train)
    existing = tmp_path / "forget.inter"
    existing.write_text("keep me\n")
    with pytest.raises(FileExistsError):
        save_forget_set(forget, tiny.train, tmp_path)
    assert existing.read_text() == "keep me\n"
    assert not (tmp_path / "forget_stats.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["forget.inter"]          # no temporary file left


# --------------------------------------------------------------------------- deletion from everything the model reads

def _csr_pairs(csr):
    indptr, indices = csr
    return {(u, int(i)) for u in range(len(indptr) - 1) for i in indices[indptr[u]:indptr[u + 1]]}


def _loader_history(loader):
    out = set()
    for u, items in enumerate(loader.uid2history_item):
        if items is not None:
            out |= {(u, int(i)) for i in items.tolist()}
    return out


@pytest.mark.parametrize("regime", ["interaction", "user", "item"])
def test_no_forgotten_edge_is_left(tiny, regime):
    forget = select_forget(tiny.cfg(forget_regime=regime, forget_share=0.1), tiny.train)
    data = UnlearnData(tiny.config, tiny.train, tiny.valid, tiny.test, forget)
    forgotten = tiny.keys(forget.users, forget.items)
    train_pairs = tiny.keys(tiny.users, tiny.items)
    assert len(forgotten) == len(forget)                   # no duplicate pairs on the tiny data

    # (a) retained interactions: exactly D \ D_f
    retained = pairs_of(data.retain_dataset)
    assert len(data.retain_dataset.inter_feat) == len(tiny.users) - len(forget)
    assert retained == train_pairs - forgotten
    assert tiny.keys(data.retain_users, data.retain_items) == retained

    # (c) negative sampling of retain batches: forgotten pairs are not "used", retained ones are
    sampler = data.retain_loader()._sampler
    used = {(u, i) for u, items in enumerate(sampler.used_ids) for i in items}
    assert used == retained
    u, i = next(iter(sorted(forgotten)))
    np.random.seed(0)
    negatives = sampler.sample_by_user_ids(np.full(3000, u), None, 1).numpy()
    assert i in negatives                                    # a forgotten item can be a negative ...
    assert not np.isin(negatives, [j for (v, j) in retained if v == u]).any()   # ... a retained one never
    # forget batches draw negatives the user never had in the ORIGINAL training data
    forget_used = {(u, i) for u, items in enumerate(data.forget_loader()._sampler.used_ids) for i in items}
    assert forget_used == train_pairs
    batch = next(iter(data.forget_loader()))
    assert not tiny.keys(batch[UID], batch["neg_item_id"]) & train_pairs

    # (d) history masks
    valid_pairs = pairs_of(data.valid_dataset)
    assert _csr_pairs(data.train_history()) == retained
    assert _csr_pairs(data.eval_history()) == retained | valid_pairs
    for phase in ("test", "forget"):
        history = _loader_history(data.eval_loader(phase))
        assert not history & forgotten, phase
        assert history <= retained | valid_pairs
    forget_loader = data.eval_loader("forget")
    positives = {(u, int(i)) for u, items in enumerate(forget_loader.uid2positive_item)
                 if items is not None for i in items.tolist()}
    assert positives == forgotten

    # held-out rows the request covers are gone, the others stay
    for name, split in (("valid", tiny.valid), ("test", tiny.test)):
        kept = pairs_of(getattr(data, f"{name}_dataset"))
        users = np.unique(split.inter_feat[UID].numpy())
        expected = {(u, i) for u, i in pairs_of(split)
                    if u not in set(forget.requested_users.tolist()) and i not in set(forget.requested_items.tolist())}
        assert kept == expected, name
        if regime == "user":
            assert not {u for u, _ in kept} & set(forget.deleted_users.tolist())
            assert set(forget.deleted_users.tolist()) & set(users.tolist())     # they had held-out rows
        if regime == "item":
            assert not {i for _, i in kept} & set(forget.deleted_items.tolist())


def test_graph_rebuilt_from_retained_data_has_no_forgotten_edge(tiny_root, workdir, tiny):
    config = tiny_config(tiny_root, "MMGCN", workdir)
    forget = select_forget(tiny.cfg(forget_regime="interaction", forget_share=0.1), tiny.train)
    data = UnlearnData(config, tiny.train, tiny.valid, tiny.test, forget)
    n_users = tiny.train.user_num
    original = build_model(config, tiny.train)
    before = original.adjacency.to_dense()
    after = build_model(config, data.retain_dataset).adjacency.to_dense()
    # every method starts from a model whose graph is the retained one
    assert torch.equal(pipeline.start_from(config, data, original).adjacency.to_dense(), after)
    u = torch.as_tensor(forget.users)
    i = torch.as_tensor(forget.items) + n_users
    assert (before[u, i] > 0).all() and (before[i, u] > 0).all()
    assert (after[u, i] == 0).all() and (after[i, u] == 0).all()
    ru = torch.as_tensor(data.retain_users)
    ri = torch.as_tensor(data.retain_items) + n_users
    assert (after[ru, ri] > 0).all() and (after[ri, ru] > 0).all()
    assert int((after > 0).sum()) == 2 * len(data.retain_users)
