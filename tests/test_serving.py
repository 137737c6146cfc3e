"""Serving a checkpoint (:mod:`recbole_tru.serving`): an unlearned checkpoint reloads with its
forget set deleted from everything the model reads (the proof of deletion passes on the reloaded
model and its scores equal the model the request made in memory); a trained checkpoint reloads in
RecBole's shape and scores its test set as when it was trained; recommendations are the top of
the full-sort scores with the retained history masked; bad inputs name the file or key."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils.case_study import full_sort_topk

from conftest import TINY
from recbole_tru.checkpoint import CheckpointError, read_checkpoint
from recbole_tru.quick_start import load_data_and_model, run_recbole_tru
from recbole_tru.serving import UsersFileError, load_checkpoint, top_k
from recbole_tru.training import build_model
from recbole_tru.unlearn import workflow
from recbole_tru.unlearn.proof import deletion_proof, proof_passed
from test_workflow import Splits, base_dict, run_workflow, train_checkpoint, write_request

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def splits(tiny_root, workdir):
    return Splits(tiny_root, workdir / "splits")


@pytest.fixture(scope="module")
def trained(tiny_root, workdir):
    made = {}

    def get(model):
        if model not in made:
            made[model] = train_checkpoint(tiny_root, workdir / "trained", model)
        return made[model]

    return get


def all_scores(model):
    users = torch.arange(model.n_users)
    with torch.no_grad():
        return model.full_sort_predict(Interaction({"user_id": users})).view(model.n_users, -1)


def request_in_memory(model, trained, splits, tiny_root, out, monkeypatch, rows, checkpoint=None):
    """Run the workflow; returns (report, the data and model it held in memory at the proof)."""
    seen = {}
    real = workflow.deletion_proof

    def capture(data, unlearned):
        seen["data"], seen["model"] = data, unlearned
        return real(data, unlearned)

    monkeypatch.setattr(workflow, "deletion_proof", capture)
    request = write_request(out.parent / f"{out.name}.inter", rows)
    report = run_workflow(tiny_root, out, checkpoint or trained(model), request, model=model, audit_enabled=False)
    monkeypatch.undo()
    return report, seen["data"], seen["model"]


@pytest.mark.parametrize("model", ["MMGCN", "VBPR"])
def test_a_reloaded_unlearned_checkpoint_passes_the_proof_and_scores_as_in_memory(
        model, trained, splits, tiny_root, tmp_path, monkeypatch):
    rows = splits.request_rows(n_users=1, n_items=1, n_pairs=3)
    report, data, in_memory = request_in_memory(model, trained, splits, tiny_root, tmp_path / "out", monkeypatch, rows)
    unlearned = Path(report["output_dir"]) / "unlearned.pth"

    served = load_checkpoint(unlearned)
    assert served.data is not None
    assert np.array_equal(served.data.forget.rows, data.forget.rows)   # the same forget set, from the meta
    proof = deletion_proof(served.data, served.model)
    assert proof_passed(proof), {k: v["detail"] for k, v in proof.items() if not v["passed"]}
    assert torch.equal(all_scores(served.model), all_scores(in_memory))
    # the loaders RecBole users get are over the retained data
    assert len(served.train_data.dataset) == len(data.retain_dataset)
    assert served.test_data is served.data.eval_loader("test")

    if model == "MMGCN":
        # the way that is NOT safe: the model built on the full training split has the edges back
        naive = build_model(served.config, data.train_dataset)
        naive.load_state_dict(read_checkpoint(unlearned)["state_dict"])
        assert not deletion_proof(served.data, naive)["graph"]["passed"]
        assert not torch.equal(all_scores(naive), all_scores(in_memory))


@pytest.mark.parametrize("model", ["MMGCN", "VBPR"])
def test_end_to_end_train_request_chain_reload_recommend_prove(model, trained, splits, tiny_root, tmp_path,
                                                                 monkeypatch):
    """train -> request -> a second request chained on the first -> reload -> recommend, and
    every check of the proof of deletion finds 0 forgotten pairs in the reloaded model's data."""
    rows = splits.request_rows(n_users=1, n_items=1, n_pairs=2)
    first, _, _ = request_in_memory(model, trained, splits, tiny_root, tmp_path / "a", monkeypatch, rows[:2])
    second, data, in_memory = request_in_memory(model, trained, splits, tiny_root, tmp_path / "b", monkeypatch,
                                                rows[2:], checkpoint=Path(first["output_dir"]) / "unlearned.pth")
    unlearned = Path(second["output_dir"]) / "unlearned.pth"
    served = load_checkpoint(unlearned)
    assert len(served.data.forget) == len(data.forget) == second["deleted"]["interactions"]
    assert second["deleted"]["interactions"] > first["deleted"]["interactions"]
    assert np.array_equal(served.data.forget.rows, data.forget.rows)
    proof = deletion_proof(served.data, served.model)
    assert proof_passed(proof) and all(check["found"] == 0 for check in proof.values())
    assert torch.equal(all_scores(served.model), all_scores(in_memory))
    users_file = tmp_path / "users.txt"
    users_file.write_text("u5\nu6\n", encoding="utf-8")
    result = recommend_run(tiny_root, tmp_path / "rec", unlearned, users_file, model=model, recommend_topk=4)
    assert result["forgotten_interactions"] == len(data.forget)
    lists = read_lists(result["file"])
    assert list(lists) == ["u5", "u6"] and all(len(v) == 4 for v in lists.values())


def test_a_trained_checkpoint_reloads_in_recboles_shape_and_scores_its_test_set_as_trained(trained):
    path = trained("MMGCN")
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(path)
    assert config["model"] == "MMGCN" and config["dataset"] == TINY
    state = read_checkpoint(path)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert len(train_data.dataset) + len(valid_data.dataset) + len(test_data.dataset) == len(dataset)
    result = Trainer(config, model).evaluate(test_data, load_best_model=False)
    recorded = read_checkpoint(path)["meta"]["test_result"]
    assert {k: round(float(v), 6) for k, v in result.items()} == pytest.approx(recorded, abs=1e-6)


def test_the_callers_settings_override_the_recorded_ones_and_are_checked(trained):
    path = trained("VBPR")
    served = load_checkpoint(path, config_dict={"eval_batch_size": 512})     # not part of what a model is
    assert served.config["eval_batch_size"] == 512
    with pytest.raises(CheckpointError, match=r"trained with other settings: config digest"):
        load_checkpoint(path, config_dict={"embedding_size": 8, "seed": 8})  # another split
    with pytest.raises(CheckpointError, match=r"is a checkpoint of model='VBPR', this run has model='MMGCN'"):
        load_checkpoint(path, expect={"model": "MMGCN"})


def test_a_checkpoint_of_other_data_is_refused_before_its_forget_set_is_read(trained, tmp_path):
    payload = read_checkpoint(trained("VBPR"))
    meta = {**payload["meta"], "data_digest": "0" * 64,
            "unlearning": {"forgotten": "user_id:token\titem_id:token\nnobody\t\n"}}
    other = tmp_path / "other.pth"
    torch.save({"state_dict": payload["state_dict"], "meta": meta}, other)
    with pytest.raises(CheckpointError, match=rf"{other} was trained on other data: data digest 0000"):
        load_checkpoint(other)


def test_a_checkpoint_without_recorded_settings_needs_them_from_the_caller(trained, tiny_root, tmp_path):
    payload = read_checkpoint(trained("VBPR"))
    meta = {k: v for k, v in payload["meta"].items() if k != "config"}
    old = tmp_path / "old.pth"
    torch.save({"state_dict": payload["state_dict"], "meta": meta}, old)
    with pytest.raises(CheckpointError, match=rf"{old} records no settings"):
        load_checkpoint(old)
    recorded = payload["meta"]["config"]
    served = load_checkpoint(old, config_dict=recorded)
    assert served.config["embedding_size"] == recorded["embedding_size"]


# --------------------------------------------------------------------------- recommending

def recommend_run(tiny_root, out, checkpoint, users_file, model="VBPR", **overrides):
    config = base_dict(tiny_root, out, checkpoint=str(checkpoint), recommend=str(users_file), **overrides)
    return run_recbole_tru(model=model, dataset=TINY, config_dict=config, read_cmd_line=False)


def read_lists(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id:token\trank:float\titem_id:token\tscore:float"
    lists = {}
    for line in lines[1:]:
        user, rank, item, score = line.split("\t")
        lists.setdefault(user, []).append((int(rank), item, float(score)))
    return lists


def test_recommendations_are_the_top_scores_with_the_retained_history_masked(
        trained, splits, tiny_root, tmp_path, monkeypatch):
    rows = splits.request_rows(n_users=1, n_items=1, n_pairs=3)
    report, data, in_memory = request_in_memory("MMGCN", trained, splits, tiny_root, tmp_path / "req", monkeypatch,
                                                rows)
    unlearned = Path(report["output_dir"]) / "unlearned.pth"
    tokens = [splits.user_token[u] for u in (1, 2, 3)]
    users_file = tmp_path / "users.txt"
    users_file.write_text("user_id:token\n" + "\n".join(tokens) + "\n\n", encoding="utf-8")
    result = recommend_run(tiny_root, tmp_path / "rec", unlearned, users_file, model="MMGCN", recommend_topk=5)
    assert result["users"] == 3 and result["topk"] == 5 and result["forgotten_interactions"] == len(data.forget)
    lists = read_lists(result["file"])
    assert list(lists) == tokens
    # by hand: the in-memory model's scores, history = retained training + validation items
    scores = all_scores(in_memory)
    indptr, indices = data.eval_history()
    item_id = splits.train.field2token_id["item_id"]
    for token in tokens:
        u = splits.train.field2token_id["user_id"][token]
        row = scores[u].clone()
        row[0] = -float("inf")
        row[torch.as_tensor(indices[indptr[u]:indptr[u + 1]], dtype=torch.long)] = -float("inf")
        want = torch.topk(row, 5).indices.tolist()
        got = [item_id[item] for _, item, _ in lists[token]]
        assert [r for r, _, _ in lists[token]] == [1, 2, 3, 4, 5]
        assert got == want
        assert not set(got) & set(indices[indptr[u]:indptr[u + 1]].tolist())
    # RecBole's full_sort_topk agrees for the users it can rank (it fails on a user with no history)
    served = load_checkpoint(unlearned)
    ids = [splits.train.field2token_id["user_id"][t] for t in tokens]
    with_history = [u for u in ids if served.test_data.uid2history_item[u] is not None]
    assert 0 < len(with_history) < len(ids)             # the request's user has no history left
    _, theirs = full_sort_topk(np.array(with_history), served.model, served.test_data, 5)
    _, ours = top_k(served, with_history, 5)
    assert torch.equal(theirs, ours)
    # the output is a new file; an existing one is never overwritten
    with pytest.raises(FileExistsError, match="never overwrites"):
        recommend_run(tiny_root, tmp_path / "rec", unlearned, users_file, model="MMGCN",
                      recommend_file=result["file"])


def test_recommend_bad_inputs_name_the_file_or_key(trained, tiny_root, tmp_path):
    path = trained("VBPR")
    users_file = tmp_path / "users.txt"
    users_file.write_text("u1\nnobody\n", encoding="utf-8")
    with pytest.raises(UsersFileError, match=rf"{users_file}: unknown user\(s\) nobody \(line 2\)"):
        recommend_run(tiny_root, tmp_path / "a", path, users_file)
    empty = tmp_path / "empty.txt"
    empty.write_text("user_id:token\n\n", encoding="utf-8")
    with pytest.raises(UsersFileError, match=rf"{empty}: no users listed"):
        recommend_run(tiny_root, tmp_path / "a", path, empty)
    with pytest.raises(UsersFileError, match=r"users file not found: .*missing.txt \(config key 'recommend'\)"):
        recommend_run(tiny_root, tmp_path / "a", path, tmp_path / "missing.txt")
    users_file.write_text("u1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'recommend_topk' must be in 1\.\.\d+ \(the catalogue\), got 1000"):
        recommend_run(tiny_root, tmp_path / "a", path, users_file, recommend_topk=1000)
    with pytest.raises(ValueError, match=r"'recommend_topk' must be an integer > 0, got 0"):
        recommend_run(tiny_root, tmp_path / "a", path, users_file, recommend_topk=0)
    with pytest.raises(ValueError, match=r"'recommend' and 'forget_file' are both set"):
        recommend_run(tiny_root, tmp_path / "a", path, users_file, forget_file=str(users_file))
    with pytest.raises(CheckpointError, match=r"is a checkpoint of model='VBPR', this run has model='MMGCN'"):
        recommend_run(tiny_root, tmp_path / "a", path, users_file, model="MMGCN")
    config = base_dict(tiny_root, tmp_path / "a", recommend=str(users_file))
    with pytest.raises(ValueError, match=r"'recommend' \(a users file\) needs config key 'checkpoint'"):
        run_recbole_tru(model="VBPR", dataset=TINY, config_dict=config, read_cmd_line=False)
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").rglob("recommend-*"))


def test_cli_recommends_from_the_settings_the_checkpoint_records(trained, tiny_root, tmp_path):
    """The command line needs only the model, the data set, the checkpoint and the users: the
    training run's settings (tiny sizes, its data path) come from the checkpoint."""
    users_file = tmp_path / "users.txt"
    users_file.write_text("u1\nu2\n", encoding="utf-8")
    out = tmp_path / "lists.tsv"
    result = subprocess.run([sys.executable, str(REPO / "run_recbole_tru.py"), "--model=VBPR", f"--dataset={TINY}",
                             f"--checkpoint={trained('VBPR')}", f"--recommend={users_file}", "--recommend_topk=3",
                             f"--recommend_file={out}", "--state=WARNING"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=180,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"top-3 lists of 2 user(s) written to {out}" in result.stdout
    lists = read_lists(out)
    assert list(lists) == ["u1", "u2"] and all(len(v) == 3 for v in lists.values())
