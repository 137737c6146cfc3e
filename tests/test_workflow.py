"""The deletion-request workflow (``--checkpoint`` + ``--forget_file``): a trained checkpoint and
a request file give a NEW unlearned checkpoint and a report; the input is never modified; the
outputs appear whole or not at all; the report's hashes, figures and proof of deletion are
right, and the proof fails on data or a model that still hold the forgotten pairs."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, TINY_CONFIG
from recbole_tru.checkpoint import file_digest, read_checkpoint
from recbole_tru.data.forget import RequestError, new_part, read_request
from recbole_tru.data.retained import UnlearnData
from recbole_tru.quick_start import run_recbole_tru
from recbole_tru.training import build_model, load_data
from recbole_tru.unlearn import workflow
from recbole_tru.unlearn.proof import deletion_proof, proof_passed

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {"unlearned.pth", "report.json", "report.md", "forget.inter", "forget_stats.json"}
# a cheap audit: every attack but the gradient-boosted one (seconds of OpenMP spinning on a busy
# machine), with the shadow model
AUDIT = {"audit_attacks": ["rank", "score", "margin", "logistic", "delta", "shadow"], "audit_pairs": 500}


# --------------------------------------------------------------------------- helpers (shared by the workflow test files)

def base_dict(root, out, **overrides):
    return {**TINY_CONFIG, **AUDIT, "data_path": str(root), "checkpoint_dir": str(out.parent / "saved"),
            "output_dir": str(out), **overrides}


def train_checkpoint(root, out, model="VBPR", dataset=TINY, **overrides):
    """A checkpoint trained on the tiny data set (2 epochs): its path."""
    result = run_recbole_tru(model=model, dataset=dataset, config_dict=base_dict(root, out, **overrides),
                             read_cmd_line=False)
    return Path(result["checkpoint"])


def run_workflow(root, out, checkpoint, request, model="VBPR", dataset=TINY, **overrides):
    config = base_dict(root, out, checkpoint=str(checkpoint), forget_file=str(request), **overrides)
    return run_recbole_tru(model=model, dataset=dataset, config_dict=config, read_cmd_line=False)


def write_request(path, rows, header=("user_id:token", "item_id:token")):
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n", encoding="utf-8")
    return path


def tree(folder):
    """Every path under ``folder`` (hidden ones included), relative."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


class Splits:
    """The tiny data set's split and raw tokens (for writing requests)."""

    def __init__(self, root, out, model="VBPR"):
        from recbole_tru.config import Config

        self.config = Config(model=model, dataset=TINY, config_dict=base_dict(root, out), read_cmd_line=False)
        _, train, valid, test = load_data(self.config)
        self.train, self.valid, self.test = train.dataset, valid.dataset, test.dataset
        inter = self.train.inter_feat
        self.users = inter["user_id"].numpy().astype(np.int64)
        self.items = inter["item_id"].numpy().astype(np.int64)
        self.user_token = self.train.field2id_token["user_id"]
        self.item_token = self.train.field2id_token["item_id"]

    def request_rows(self, n_users=1, n_items=1, n_pairs=2):
        """Rows naming ``n_users`` users, ``n_items`` items (each with >= 2 interactions) and
        ``n_pairs`` training pairs of other users and items."""
        users = [u for u in np.unique(self.users)][:n_users]
        counts = np.bincount(self.items)
        items = [i for i in np.flatnonzero(counts >= 2)[::-1]][:n_items]
        others = np.flatnonzero(~np.isin(self.users, users) & ~np.isin(self.items, items))
        pairs = [(self.users[r], self.items[r]) for r in others[:: max(1, len(others) // max(n_pairs, 1))][:n_pairs]]
        return ([[self.user_token[u], ""] for u in users] + [["", self.item_token[i]] for i in items]
                + [[self.user_token[u], self.item_token[i]] for u, i in pairs])


@pytest.fixture(scope="module")
def checkpoints(tiny_root, workdir):
    """``checkpoints(model)``: one trained checkpoint per backbone, made once."""
    made = {}

    def get(model="VBPR"):
        if model not in made:
            made[model] = train_checkpoint(tiny_root, workdir / "trained", model)
        return made[model]

    return get


@pytest.fixture(scope="module")
def splits(tiny_root, workdir):
    return Splits(tiny_root, workdir / "splits")


# --------------------------------------------------------------------------- the run and its outputs

@pytest.mark.parametrize("model", ["VBPR", "MMGCN"])
def test_request_gives_a_new_checkpoint_and_report_input_untouched(model, checkpoints, splits, tiny_root, tmp_path):
    checkpoint = checkpoints(model)
    before, stat = file_digest(checkpoint), checkpoint.stat()
    request = write_request(tmp_path / "request.inter", splits.request_rows(n_users=1, n_items=1, n_pairs=2))
    out = tmp_path / "out"
    report = run_workflow(tiny_root, out, checkpoint, request, model=model, unlearn="tru")

    # the input checkpoint is untouched (bytes and modification time)
    assert file_digest(checkpoint) == before and checkpoint.stat().st_mtime_ns == stat.st_mtime_ns
    # one new folder with exactly the outputs, nothing temporary left
    folder = Path(report["output_dir"])
    assert folder.parent == out and folder.name.startswith(f"request-{model}-")
    assert tree(out) == sorted([folder.name] + [f"{folder.name}/{f}" for f in OUTPUTS])
    # the hashes in the report are the files' hashes
    assert report["input"]["sha256"] == before
    assert report["request"]["sha256"] == file_digest(request)
    assert report["output"]["sha256"] == file_digest(folder / "unlearned.pth")
    assert report["output"]["forget_inter_sha256"] == file_digest(folder / "forget.inter")
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["output"]["sha256"] == report["output"]["sha256"] and on_disk["method"]["name"] == "tru"
    # what was deleted
    names = report["request"]["names"]
    assert (names["users"], names["items"], names["pairs"]) == (1, 1, 2)
    forget = read_request(request, splits.train, heldout=(splits.valid, splits.test))
    assert report["deleted"]["interactions"] == len(forget)
    assert report["deleted"]["fully_deleted_users"] == len(forget.deleted_users) >= 1
    assert (folder / "forget.inter").read_text().count("\n") - 1 >= 4
    # figures for the input and the output model, the audit, the proof
    for part in ("utility", "forgetting"):
        for side in ("input", "output"):
            assert set(report[part][side]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert report["utility"]["input"]["recall@20"] == pytest.approx(
        on_disk["utility"]["input"]["recall@20"])
    for side in ("input", "output"):
        assert 0.0 <= report["audit"][side]["mia_auc"] <= 1.0
    assert report["proof_of_deletion"]["passed"]
    graph = report["proof_of_deletion"]["checks"]["graph"]["detail"]
    assert ("adjacency" in graph) == (model == "MMGCN") and ("not applicable" in graph) == (model == "VBPR")
    assert report["method"]["settings"]["tru_epochs"] == 10
    assert report["timings"]["unlearn"] > 0 and report["timings"]["total"] >= report["timings"]["unlearn"]

    # the new checkpoint: the input's meta + what was done; other tensors than the input's
    new, old = read_checkpoint(folder / "unlearned.pth"), read_checkpoint(checkpoint)
    done = new["meta"]["unlearning"]
    assert done["input_sha256"] == before and done["request_sha256"] == file_digest(request)
    assert done["method"] == "tru" and done["forgotten"] == (folder / "forget.inter").read_text()
    for key in ("model", "dataset", "config_digest", "data_digest", "feature_dims"):
        assert new["meta"][key] == old["meta"][key]
    assert set(new["state_dict"]) == set(old["state_dict"])
    assert any(not torch.equal(new["state_dict"][k], old["state_dict"][k]) for k in old["state_dict"])

    # the Markdown report says the same, briefly
    text = (folder / "report.md").read_text()
    for needle in (before, report["request"]["sha256"], report["output"]["sha256"], "## What was deleted",
                   f"{report['deleted']['interactions']} training interactions were forgotten",
                   "method: tru (", "## Utility and forgetting", "## Membership audit",
                   "| logistic (headline) |", "## Proof of deletion", "| retained_interactions | yes |"):
        assert needle in text, needle
    assert "| NO |" not in text


def test_default_method_is_tru_and_retrain_is_allowed(checkpoints, splits, tiny_root, tmp_path):
    request = write_request(tmp_path / "r.inter", splits.request_rows(n_users=0, n_items=0, n_pairs=3))
    default = run_workflow(tiny_root, tmp_path / "a", checkpoints(), request, audit_enabled=False)
    assert default["method"]["name"] == "tru" and default["audit"] is None
    assert "Not run (audit_enabled: False)" in (Path(default["output_dir"]) / "report.md").read_text()
    retrain = run_workflow(tiny_root, tmp_path / "b", checkpoints(), request, unlearn="retrain", audit_enabled=False)
    assert retrain["method"]["name"] == "retrain"
    assert set(retrain["method"]["settings"]) == set(workflow.RETRAIN_SETTINGS)
    # retrain = a fresh model trained on the retained data: the input's weights do not matter
    payload = read_checkpoint(checkpoints())
    noisy = {k: v + torch.randn_like(v) for k, v in payload["state_dict"].items()}
    forged = tmp_path / "forged.pth"
    torch.save({"state_dict": noisy, "meta": payload["meta"]}, forged)
    again = run_workflow(tiny_root, tmp_path / "c", forged, request, unlearn="retrain", audit_enabled=False)
    assert again["input"]["sha256"] != retrain["input"]["sha256"]
    first = read_checkpoint(Path(retrain["output_dir"]) / "unlearned.pth")["state_dict"]
    second = read_checkpoint(Path(again["output_dir"]) / "unlearned.pth")["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again["utility"]["output"] == retrain["utility"]["output"]


@pytest.mark.parametrize("model", ["VBPR", "MMGCN"])
def test_influence_runs_in_the_workflow_and_the_proof_passes(model, checkpoints, splits, tiny_root, tmp_path):
    """Every method the workflow offers (its error lists them) runs in it: here the influence step on a
    mixed request, with its own settings reported and the input's weights changed."""
    checkpoint = checkpoints(model)
    request = write_request(tmp_path / "r.inter", splits.request_rows(n_users=1, n_items=1, n_pairs=2))
    report = run_workflow(tiny_root, tmp_path / "out", checkpoint, request, model=model, unlearn="influence",
                          audit_enabled=False)
    assert report["method"]["name"] == "influence"
    settings = report["method"]["settings"]
    assert settings and all(k.startswith("influence_") for k in settings)
    assert report["proof_of_deletion"]["passed"]
    before = read_checkpoint(checkpoint)["state_dict"]
    after = read_checkpoint(Path(report["output_dir"]) / "unlearned.pth")["state_dict"]
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in before)


def test_unlearn_evaluate_skips_the_evaluations_not_the_proof(checkpoints, splits, tiny_root, tmp_path):
    """unlearn_evaluate: output scores the output only, none neither; the unlearned checkpoint is
    the same in every mode (evaluating changes nothing), the proof of deletion always runs, and
    the report says what was not scored."""
    request = write_request(tmp_path / "r.inter", splits.request_rows(n_users=1, n_items=0, n_pairs=2))
    runs = {mode: run_workflow(tiny_root, tmp_path / mode, checkpoints(), request, audit_enabled=False,
                               unlearn_evaluate=mode)
            for mode in ("both", "output", "none")}
    both, output, none = runs["both"], runs["output"], runs["none"]
    assert both["utility"]["input"] and both["forgetting"]["input"]
    assert output["utility"]["input"] is None and output["forgetting"]["input"] is None
    assert output["utility"]["output"] == both["utility"]["output"]
    assert output["forgetting"]["output"] == both["forgetting"]["output"]
    assert all(none[part][side] is None for part in ("utility", "forgetting") for side in ("input", "output"))
    states = [read_checkpoint(Path(r["output_dir"]) / "unlearned.pth")["state_dict"] for r in runs.values()]
    assert all(torch.equal(states[0][k], other[k]) for other in states[1:] for k in states[0])
    assert all(r["proof_of_deletion"]["passed"] for r in runs.values())
    assert none["timings"]["evaluate"] == 0.0 < both["timings"]["evaluate"]
    assert "| test ndcg@20 | n/a | n/a |" in (Path(none["output_dir"]) / "report.md").read_text()
    with pytest.raises(ValueError, match="unlearn_evaluate"):
        run_workflow(tiny_root, tmp_path / "bad", checkpoints(), request, audit_enabled=False, unlearn_evaluate="after")


def test_forget_unknown_skip_goes_on_without_the_unknown_rows(checkpoints, splits, tiny_root, tmp_path, caplog):
    rows = splits.request_rows(n_users=0, n_items=0, n_pairs=2) + [["nobody", ""], ["", "nothing"]]
    request = write_request(tmp_path / "r.inter", rows)
    report = run_workflow(tiny_root, tmp_path / "out", checkpoints(), request, forget_unknown="skip",
                          audit_enabled=False)
    assert report["request"]["names"]["pairs"] == 2 and report["request"]["names"]["users"] == 0
    assert "nobody" in caplog.text and "skipped" in caplog.text


def test_a_second_request_on_an_unlearned_checkpoint_deletes_both(checkpoints, splits, tiny_root, tmp_path):
    """The earlier request travels in the unlearned checkpoint and is deleted again: otherwise
    its pairs would be retained data, and a repair or retrain would learn them back."""
    rows = splits.request_rows(n_users=1, n_items=0, n_pairs=2)
    first_req = write_request(tmp_path / "first.inter", rows[:1])
    second_req = write_request(tmp_path / "second.inter", rows[1:])
    first = run_workflow(tiny_root, tmp_path / "one", checkpoints(), first_req, audit_enabled=False)
    second = run_workflow(tiny_root, tmp_path / "two", first["output"]["checkpoint"], second_req,
                          unlearn="retrain", audit_enabled=False)
    both = read_request(write_request(tmp_path / "both.inter", rows), splits.train,
                        heldout=(splits.valid, splits.test))
    assert second["deleted"]["interactions"] == len(both) > first["deleted"]["interactions"]
    assert second["request"]["earlier_requests"] == 1 and second["request"]["names"]["users"] == 0
    assert second["proof_of_deletion"]["passed"]
    history = read_checkpoint(Path(second["output_dir"]) / "unlearned.pth")["meta"]["unlearning"]["history"]
    assert [h["request_sha256"] for h in history] == [file_digest(first_req), file_digest(second_req)]
    assert history[1]["input_sha256"] == first["output"]["sha256"]
    assert "on top of 1 earlier request(s)" in (Path(second["output_dir"]) / "report.md").read_text()


# --------------------------------------------------------------------------- whole or nothing

def test_a_chained_request_unlearns_only_what_no_earlier_request_deleted(checkpoints, splits, tiny_root, tmp_path,
                                                                         monkeypatch):
    """``unlearn_chain_targets: new`` (default): the method's target is the new interactions,
    while every request's interactions stay deleted from the data it trains and is judged on;
    ``all`` targets the whole set again; a request that adds nothing is an error."""
    rows = splits.request_rows(n_users=1, n_items=0, n_pairs=3)
    first = run_workflow(tiny_root, tmp_path / "one", checkpoints(), write_request(tmp_path / "a.inter", rows[:2]),
                         audit_enabled=False)
    chained = first["output"]["checkpoint"]
    seen = []
    real = workflow.unlearn_method
    monkeypatch.setattr(workflow, "unlearn_method", lambda c, m, data, o: seen.append(data) or real(c, m, data, o))
    new = run_workflow(tiny_root, tmp_path / "two", chained, write_request(tmp_path / "b.inter", rows[1:]),
                       audit_enabled=False)
    target = seen[-1]
    cumulative = new["deleted"]["interactions"]
    assert new["method"]["targets"] == {"chain_targets": "new", "interactions": cumulative - first["deleted"]["interactions"]}
    assert len(target.forget) == len(target.forget_dataset) == cumulative - first["deleted"]["interactions"]
    assert len(target.deleted) == cumulative                               # the data: every request's deletion
    assert len(target.train_dataset) - len(target.retain_dataset) == cumulative
    assert len(target.eval_loader("forget").dataset) == cumulative
    assert new["proof_of_deletion"]["passed"]
    assert "- unlearned now: the" in (Path(new["output_dir"]) / "report.md").read_text()
    again = run_workflow(tiny_root, tmp_path / "three", chained, write_request(tmp_path / "c.inter", rows[1:]),
                         audit_enabled=False, unlearn_chain_targets="all")
    assert again["method"]["targets"]["interactions"] == len(seen[-1].forget) == cumulative
    with pytest.raises(RequestError, match="already deleted by an earlier request"):
        run_workflow(tiny_root, tmp_path / "four", chained, write_request(tmp_path / "d.inter", rows[1:2]),
                     audit_enabled=False)


def test_new_part_keeps_what_the_earlier_requests_did_not_delete(splits, tmp_path):
    full = read_request(write_request(tmp_path / "all.inter", splits.request_rows(n_users=2, n_items=0, n_pairs=0)),
                        splits.train)
    user_a, user_b = np.unique(full.users)
    earlier = full.rows[full.users == user_a]
    part = new_part(full, earlier)
    assert np.array_equal(part.rows, full.rows[full.users == user_b])
    assert set(part.deleted_users.tolist()) == {int(user_b)}               # user_a was done earlier
    assert part.n_train == full.n_train
    with pytest.raises(RequestError, match="nothing left to unlearn"):
        new_part(full, full.rows)


def test_a_run_that_fails_while_writing_leaves_nothing(checkpoints, splits, tiny_root, tmp_path, monkeypatch):
    request = write_request(tmp_path / "r.inter", splits.request_rows(n_users=0, n_items=0, n_pairs=2))
    out = tmp_path / "out"
    before = file_digest(checkpoints())

    def interrupted(path, model, meta):
        Path(path).write_bytes(b"half a checkpoint")            # a half-written file ...
        raise KeyboardInterrupt                                   # ... then the run is interrupted

    monkeypatch.setattr(workflow, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_workflow(tiny_root, out, checkpoints(), request, audit_enabled=False)
    assert tree(out) == []                                        # no folder, no hidden temporary
    assert file_digest(checkpoints()) == before


def test_an_existing_output_folder_is_never_overwritten(checkpoints, splits, tiny_root, tmp_path, monkeypatch):
    request = write_request(tmp_path / "r.inter", splits.request_rows(n_users=0, n_items=0, n_pairs=2))
    out = tmp_path / "out"
    taken = out / "request-VBPR-taken"
    taken.mkdir(parents=True)
    (taken / "report.md").write_text("keep me\n")
    monkeypatch.setattr(workflow, "new_folder_name", lambda config: taken)
    with pytest.raises(FileExistsError, match="never overwrites"):
        run_workflow(tiny_root, out, checkpoints(), request, audit_enabled=False)
    assert tree(out) == ["request-VBPR-taken", "request-VBPR-taken/report.md"]
    assert (taken / "report.md").read_text() == "keep me\n"
    monkeypatch.undo()
    first = run_workflow(tiny_root, out, checkpoints(), request, audit_enabled=False)
    second = run_workflow(tiny_root, out, checkpoints(), request, audit_enabled=False)
    assert first["output_dir"] != second["output_dir"]             # same second: a -1 suffix


# --------------------------------------------------------------------------- proof of deletion

@pytest.fixture(scope="module")
def mmgcn_data(tiny_root, workdir, splits):
    """(config, splits, UnlearnData of a request, the same with the forgotten pairs left in)."""
    tiny = Splits(tiny_root, workdir / "mmgcn", model="MMGCN")
    path = write_request(workdir / "proof.inter", splits.request_rows(n_users=1, n_items=1, n_pairs=3))
    forget = read_request(path, tiny.train, heldout=(tiny.valid, tiny.test))
    clean = UnlearnData(tiny.config, tiny.train, tiny.valid, tiny.test, forget)
    # contaminated: everything built for another, one-pair request, then labelled with this one
    row = int(np.flatnonzero(~np.isin(np.arange(len(tiny.users)), forget.rows))[0])
    other = read_request(write_request(workdir / "other.inter", [[tiny.user_token[tiny.users[row]],
                                                                   tiny.item_token[tiny.items[row]]]]), tiny.train)
    dirty = UnlearnData(tiny.config, tiny.train, tiny.valid, tiny.test, other)
    dirty.forget = forget
    return tiny, clean, dirty


def test_proof_passes_on_the_deleted_data_and_the_retained_graph(mmgcn_data):
    tiny, clean, _ = mmgcn_data
    model = build_model(tiny.config, clean.retain_dataset)
    proof = deletion_proof(clean, model)
    assert proof_passed(proof)
    assert set(proof) == {"retained_interactions", "graph", "negative_sampler", "train_history", "eval_history",
                          "valid_loader_history", "test_loader_history", "forget_loader_history", "heldout_targets"}
    assert all(check["found"] == 0 for check in proof.values())
    assert re.search(r"adjacency: 0 of \d+ directed edges; adjacency_t: 0 of", proof["graph"]["detail"])


def test_proof_fails_on_a_model_built_on_the_full_training_data(mmgcn_data):
    tiny, clean, _ = mmgcn_data
    proof = deletion_proof(clean, build_model(tiny.config, tiny.train))
    assert not proof["graph"]["passed"]
    n_pairs = len(clean.forget)                            # training pairs: each an edge both ways, both graphs
    assert proof["graph"]["found"] == 2 * 2 * n_pairs
    assert all(c["passed"] for name, c in proof.items() if name != "graph")
    assert not proof_passed(proof)


def test_proof_fails_on_data_that_still_holds_the_forgotten_pairs(mmgcn_data):
    tiny, clean, dirty = mmgcn_data
    proof = deletion_proof(dirty, build_model(tiny.config, dirty.retain_dataset))
    n = len(clean.forget)
    for name in ("retained_interactions", "graph", "negative_sampler", "train_history", "eval_history"):
        assert not proof[name]["passed"] and proof[name]["found"] >= n, name
    assert not proof["heldout_targets"]["passed"]          # the request's held-out rows were left in
    assert not proof["test_loader_history"]["passed"]      # test masks the (forgotten) training pairs


# --------------------------------------------------------------------------- the command line

def cli_args(config):
    return [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in config.items()]


def test_cli_runs_the_workflow(checkpoints, splits, tiny_root, tmp_path):
    checkpoint = checkpoints()
    before = file_digest(checkpoint)
    request = write_request(tmp_path / "r.inter", splits.request_rows(n_users=1, n_items=0, n_pairs=1))
    config = {k: v for k, v in base_dict(tiny_root, tmp_path / "out", audit_enabled=False).items()}
    args = ["--model=VBPR", f"--dataset={TINY}", f"--checkpoint={checkpoint}", f"--forget_file={request}"]
    args += cli_args(config)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "run_recbole_tru.py"), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = list((tmp_path / "out").glob("request-VBPR-*"))
    assert len(folders) == 1 and {p.name for p in folders[0].iterdir()} == OUTPUTS
    assert f"deletion request written to {folders[0]}" in result.stdout
    assert "# Deletion request: VBPR on tiny-mm" in result.stdout
    assert file_digest(checkpoint) == before


# --------------------------------------------------------------------------- derived artifacts and the purge

def test_the_report_lists_what_derives_from_the_deleted_data_and_the_purge_removes_the_caches(
        checkpoints, splits, tiny_root, tmp_path):
    from recbole_tru.data.features import cache_path, read_feature_file

    data = tmp_path / "data"                         # a copy: same contents, same data digest
    shutil.copytree(tiny_root / TINY, data / TINY)
    feature_cache = cache_path(data / TINY / f"{TINY}.textfeat")
    read_feature_file(data / TINY / f"{TINY}.textfeat", cache=True)
    out = tmp_path / "out"
    (out / "cache").mkdir(parents=True)
    ours = out / "cache" / f"VBPR-{TINY}-original-0123456789abcdef.pth"
    theirs = out / "cache" / f"VBPR-{TINY}-2-original-0123456789abcdef.pth"       # another data set's
    saved = tmp_path / "saved"                       # base_dict's checkpoint_dir
    saved.mkdir()
    dataset_file, recbole_model = saved / f"{TINY}-MultimodalDataset.pth", saved / "BPR-Dec-01-2026_10-00-00.pth"
    for path in (ours, theirs, dataset_file, recbole_model):
        path.write_bytes(b"x")
    rows = splits.request_rows(n_users=0, n_items=0, n_pairs=4)
    first = run_workflow(data, out, checkpoints(), write_request(tmp_path / "a.inter", rows[:2]), audit_enabled=False)
    listed = {Path(e["path"]): e for e in first["derived_artifacts"]["files"]}
    assert listed[(data / TINY / f"{TINY}.inter").resolve()]["kind"] == "source"
    assert listed[checkpoints().resolve()]["kind"] == "model"
    assert {p for p, e in listed.items() if e["kind"] == "cache"} == {
        ours.resolve(), dataset_file.resolve(), feature_cache.resolve()}
    assert not first["derived_artifacts"]["purged"] and all(p.exists() for p in listed)
    assert "## Derived artifacts on disk" in (Path(first["output_dir"]) / "report.md").read_text()

    chained = Path(first["output_dir"]) / "unlearned.pth"
    second = run_workflow(data, out, chained, write_request(tmp_path / "b.inter", rows[2:]), audit_enabled=False,
                          unlearn_purge=True)
    listed = {Path(e["path"]): e for e in second["derived_artifacts"]["files"]}
    assert listed[chained.resolve()]["what"].startswith("the input checkpoint")
    assert listed[(Path(first["output_dir"]) / "forget.inter").resolve()]["kind"] == "model"
    assert second["derived_artifacts"]["purged"]
    for path, entry in listed.items():
        assert entry["removed"] == (entry["kind"] == "cache") and path.exists() == (entry["kind"] != "cache")
    assert theirs.exists() and recbole_model.exists()           # not derived from this data set
    assert "| cache |" in (Path(second["output_dir"]) / "report.md").read_text()
