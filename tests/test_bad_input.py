"""Bad input to the deletion-request workflow stops it with an error that names the file, the
line or the config key, and loses nothing: the input checkpoint, the request and the data are
unchanged and no output is written.

Every case runs the workflow in-process (``run_recbole_tru`` with ``checkpoint`` and
``forget_file``); two run the command line. The table of ``docs/bad_inputs.md`` is generated
from the same cases' actual messages and checked here, so it stays true; regenerate it with
``RECBOLE_TRU_WRITE_DOCS=1 python -m pytest tests/test_bad_input.py -k doc``.

Cases with a ``gap`` do not meet the bar yet (the library gives no error, or one that names no
file): they are ``xfail(strict=True)`` and flip to failures once the library is fixed.
"""
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch

from conftest import TINY, write_tiny_dataset
from recbole_tru.checkpoint import CheckpointError, file_digest
from recbole_tru.config import PROPERTIES
from recbole_tru.data import AtomicFileError, FeatureFileError
from recbole_tru.data.forget import RequestError
from recbole_tru.quick_start import run_recbole_tru
from test_workflow import REPO, Splits, base_dict, run_workflow, train_checkpoint, tree, write_request

DOC = REPO / "docs" / "bad_inputs.md"
HEADER = ("user_id:token", "item_id:token")


# --------------------------------------------------------------------------- the context: a checkpoint, tokens, data variants

class Context:
    def __init__(self, tmp, tiny_root):
        self.tmp, self.root = tmp, tiny_root
        self.checkpoint = train_checkpoint(tiny_root, tmp / "trained")
        self.checkpoints = [self.checkpoint]
        self.splits = Splits(tiny_root, tmp / "splits")
        self.roots = [tiny_root]
        self._variants = {}

    def pair(self, row=0):
        s = self.splits
        return [s.user_token[s.users[row]], s.item_token[s.items[row]]]

    def never_pair(self):
        """A (user, item) pair in no split."""
        s = self.splits
        user = s.users[0]
        seen = set(s.items[s.users == user].tolist())
        for ds in (s.valid, s.test):
            inter = ds.inter_feat
            seen |= set(inter["item_id"][inter["user_id"] == int(user)].tolist())
        item = next(i for i in range(1, s.train.item_num) if i not in seen)
        return [s.user_token[user], s.item_token[item]]

    def variant(self, name, make):
        """A data root made once by ``make(root)`` (a copy of the tiny data set, edited)."""
        if name not in self._variants:
            root = self.tmp / "data" / name
            make(root)
            self._variants[name] = root
            self.roots.append(root)
        return self._variants[name]

    def copy(self, name, edit=None):
        def make(root):
            shutil.copytree(self.root / TINY, root / TINY)
            if edit:
                edit(root / TINY)
        return self.variant(name, make)

    def other_dataset_checkpoint(self):
        if "other_ckpt" not in self._variants:
            root = self.variant("other", lambda r: write_tiny_dataset(r, name="tiny-other"))
            path = train_checkpoint(root, self.tmp / "trained_other", dataset="tiny-other")
            self._variants["other_ckpt"] = path
            self.checkpoints.append(path)
        return self._variants["other_ckpt"]

    def placeholders(self, folder):
        """(path, placeholder) pairs, longest path first."""
        pairs = [(str(p), "<checkpoint>") for p in self.checkpoints]
        pairs += [(str(folder / "checkpoint.pth"), "<checkpoint>"), (str(folder / "request.inter"), "<request>")]
        pairs += [(str(root), "<data>") for root in self.roots]
        pairs += [(str(PROPERTIES), "<properties>"), (str(folder), "<dir>"), (str(self.tmp), "<tmp>")]
        return sorted(pairs, key=lambda p: -len(p[0]))


def edit_lines(path, edit):
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")


def edit_inter(edit):
    return lambda folder: edit_lines(folder / f"{TINY}.inter", edit)


def edit_text_features(edit):
    return lambda folder: edit_lines(folder / f"{TINY}.textfeat", edit)


def set_value(line, value, column=2):
    token, values = line.split("\t")
    values = values.split()
    values[column] = value
    return token + "\t" + " ".join(values)


# --------------------------------------------------------------------------- the cases

@dataclass
class Case:
    name: str
    input: str                                     # what was tried (the doc's first column)
    run: Callable                                  # run(ctx, folder): makes the inputs, returns the run
    error: type
    names: Callable                                # names(ctx, folder) -> strings the message must contain
    gap: Optional[str] = None                      # why it does not meet the bar yet (xfail)


def request(rows, header=HEADER, **overrides):
    """A run with ``rows`` as the request file (``<folder>/request.inter``)."""
    def prepare(ctx, folder):
        rows_ = rows(ctx) if callable(rows) else rows
        path = write_request(folder / "request.inter", rows_, header)
        return lambda: run_workflow(ctx.root, folder / "out", ctx.checkpoint, path, **overrides)
    return prepare


def request_text(text, **overrides):
    def prepare(ctx, folder):
        path = folder / "request.inter"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
        return lambda: run_workflow(ctx.root, folder / "out", ctx.checkpoint, path, **overrides)
    return prepare


def good_run(checkpoint=None, root=None, model="VBPR", request_file=None, **overrides):
    """A valid request; ``checkpoint(ctx, folder)`` / ``root(ctx)`` make the bad part."""
    def prepare(ctx, folder):
        path = write_request(folder / "request.inter", [ctx.pair(0)])
        if request_file is not None:
            path = request_file(folder)
        ckpt = checkpoint(ctx, folder) if checkpoint else ctx.checkpoint
        data = root(ctx) if root else ctx.root
        return lambda: run_workflow(data, folder / "out", ckpt, path, model=model, **overrides)
    return prepare


def training_run(root):
    """A training run (no checkpoint) on the data folder ``root(ctx)``."""
    def prepare(ctx, folder):
        data = root(ctx)
        return lambda: run_recbole_tru(model="VBPR", dataset=TINY, config_dict=base_dict(data, folder / "out"),
                                       read_cmd_line=False)
    return prepare


def in_request(*extra):
    return lambda ctx, folder: [str(folder / "request.inter"), *extra]


def in_checkpoint(*extra):
    return lambda ctx, folder: [str(folder / "checkpoint.pth"), *extra]


def key(name, value, allowed):
    return lambda ctx, folder: [f"'{name}'", repr(value), allowed]


def truncated_checkpoint(ctx, folder):
    data = ctx.checkpoint.read_bytes()
    (folder / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    return folder / "checkpoint.pth"


def text_checkpoint(ctx, folder):
    (folder / "checkpoint.pth").write_text("not a checkpoint\n")
    return folder / "checkpoint.pth"


def plain_state_dict(ctx, folder):
    torch.save({"user_embedding.weight": torch.zeros(3, 2)}, folder / "checkpoint.pth")
    return folder / "checkpoint.pth"


CASES = [
    # --- the request file
    Case("unknown_users", "request names users the data set does not have",
         request(lambda ctx: [ctx.pair(0), ["nobody", ""], ["ghost", ""]]), RequestError,
         in_request("unknown user(s) ghost, nobody", "forget_unknown: skip")),
    Case("unknown_items", "request names an unknown item",
         request(lambda ctx: [ctx.pair(0), ["", "nothing"]]), RequestError,
         in_request("unknown item(s) nothing")),
    Case("many_unknown", "request names 7 unknown users (the first 5 are listed)",
         request([[f"x{i}", ""] for i in range(7)]), RequestError,
         in_request("unknown user(s) x0, x1, x2, x3, x4 ...")),
    Case("unknown_pair", "request names a user-item pair that is in no split",
         request(lambda ctx: [ctx.pair(0), ctx.never_pair()]), RequestError,
         lambda ctx, folder: [str(folder / "request.inter"),
                              "pair(s) with no interaction ({}, {})".format(*ctx.never_pair())]),
    Case("skip_leaves_nothing", "forget_unknown: skip, and every row is unknown",
         request([["nobody", ""]], forget_unknown="skip"), RequestError,
         in_request("empty forget set")),
    Case("header_field", "request header with a wrong field name (user:token)",
         request(lambda ctx: [ctx.pair(0)], header=("user:token", "item_id:token")), RequestError,
         in_request("line 1", "header must be")),
    Case("header_type", "request header with a wrong type (user_id:float)",
         request(lambda ctx: [ctx.pair(0)], header=("user_id:float", "item_id:token")), RequestError,
         in_request("line 1", "header must be")),
    Case("comma_separated", "request separated by commas, not tabs",
         request_text("user_id:token,item_id:token\nu1,i1\n"), RequestError, in_request("line 1")),
    Case("column_count", "request row with 3 cells under a 2-column header",
         request(lambda ctx: [ctx.pair(0), ctx.pair(1) + ["extra"]]), RequestError,
         in_request("line 3: expected 2 column(s), got 3")),
    Case("empty_request", "request with a header and no rows",
         request([]), RequestError, in_request("empty request")),
    Case("blank_rows", "request whose rows are all blank",
         request_text("user_id:token\titem_id:token\n\t\n\n"), RequestError, in_request("empty request")),
    Case("empty_file", "request file of 0 bytes",
         request_text(""), RequestError, in_request("line 1")),
    Case("binary_file", "request file that is not text",
         request_text(b"\xff\xfe\x00\x81binary"), RequestError, in_request("not a UTF-8 text file")),
    Case("every_user", "request deleting every user (every interaction of every user)",
         request(lambda ctx: [[ctx.splits.user_token[u], ""] for u in np.unique(ctx.splits.users)]), RequestError,
         in_request("every training interaction")),
    Case("every_item", "request deleting every item",
         request(lambda ctx: [["", ctx.splits.item_token[i]] for i in np.unique(ctx.splits.items)]), RequestError,
         in_request("every training interaction")),
    Case("missing_request", "forget_file that does not exist",
         good_run(request_file=lambda folder: folder / "nowhere" / "request.inter"), RequestError,
         lambda ctx, folder: [str(folder / "nowhere" / "request.inter"), "not found"]),
    Case("no_forget_file", "checkpoint given without forget_file",
         good_run(request_file=lambda folder: ""), RequestError,
         lambda ctx, folder: ["'forget_file'", "'checkpoint'"]),
    # --- the checkpoint
    Case("missing_checkpoint", "checkpoint file that does not exist",
         good_run(checkpoint=lambda ctx, folder: folder / "checkpoint.pth"), CheckpointError,
         in_checkpoint("not found")),
    Case("truncated_checkpoint", "checkpoint cut in half (an interrupted copy)",
         good_run(checkpoint=truncated_checkpoint), CheckpointError, in_checkpoint("not a readable")),
    Case("text_checkpoint", "checkpoint that is a text file",
         good_run(checkpoint=text_checkpoint), CheckpointError, in_checkpoint("not a readable")),
    Case("foreign_checkpoint", "checkpoint that is a plain torch state dict",
         good_run(checkpoint=plain_state_dict), CheckpointError, in_checkpoint("no state_dict/meta")),
    Case("other_model", "VBPR checkpoint, MMGCN run",
         good_run(model="MMGCN"), CheckpointError,
         lambda ctx, folder: [str(ctx.checkpoint), "model='VBPR'", "model='MMGCN'"]),
    Case("other_dataset", "checkpoint trained on another data set",
         good_run(checkpoint=lambda ctx, folder: ctx.other_dataset_checkpoint()), CheckpointError,
         lambda ctx, folder: [str(ctx.other_dataset_checkpoint()), "dataset='tiny-other'", f"dataset='{TINY}'"]),
    Case("other_feature_width", "checkpoint trained with 8-wide text features, data now 6 wide",
         good_run(root=lambda ctx: ctx.variant("wide", lambda r: write_tiny_dataset(r, dims=(6, 5)))),
         CheckpointError, lambda ctx, folder: [str(ctx.checkpoint), "width 8", f"{TINY}.textfeat has width 6"]),
    Case("other_data", "checkpoint trained on other contents of the data folder (one more file)",
         good_run(root=lambda ctx: ctx.copy("extra", lambda f: (f / "notes.txt").write_text("x\n"))),
         CheckpointError, lambda ctx, folder: [str(ctx.checkpoint), "data digest", "keep request files elsewhere"]),
    Case("other_settings", "checkpoint trained with other settings (embedding_size 8, run with 16)",
         good_run(embedding_size=16), CheckpointError,
         lambda ctx, folder: [str(ctx.checkpoint), "config digest", "--key=value"]),
    # --- the method
    Case("several_methods", "unlearn: tru,reverse (the workflow runs one)",
         good_run(unlearn="tru,reverse"), ValueError, lambda ctx, folder: ["'unlearn'", "tru, reverse"]),
    Case("sisa", "unlearn: sisa (needs shard models, not a checkpoint)",
         good_run(unlearn="sisa"), ValueError, lambda ctx, folder: ["'unlearn'", "sisa"]),
    Case("unknown_method", "unlearn: forgetall",
         good_run(unlearn="forgetall"), ValueError, lambda ctx, folder: ["'forgetall'", "Known unlearning methods"]),
    # --- config keys and values (checked when the Config is built)
    Case("unknown_key", "unknown plugin key tru_epochz",
         good_run(tru_epochz=3), KeyError, lambda ctx, folder: ["'tru_epochz'", "did you mean tru_epochs"]),
    Case("negative_share", "forget_share: -0.1",
         good_run(forget_share=-0.1), ValueError, key("forget_share", -0.1, "(0, 1)")),
    Case("share_above_one", "forget_share: 1.5",
         good_run(forget_share=1.5), ValueError, key("forget_share", 1.5, "(0, 1)")),
    Case("share_not_a_number", "forget_share: 'half'",
         good_run(forget_share="half"), ValueError, key("forget_share", "half", "(0, 1)")),
    Case("unknown_regime", "forget_regime: users",
         good_run(forget_regime="users"), ValueError, key("forget_regime", "users", "interaction, user, item, request")),
    Case("unknown_user_mode", "forget_user_mode: busy",
         good_run(forget_user_mode="busy"), ValueError, key("forget_user_mode", "busy", "random, core, edge")),
    Case("unknown_unknown_option", "forget_unknown: ignore",
         good_run(forget_unknown="ignore"), ValueError, key("forget_unknown", "ignore", "error, skip")),
    Case("zero_budget", "tru_budget: 0",
         good_run(tru_budget=0), ValueError, key("tru_budget", 0, "(0, 1]")),
    Case("unknown_stop", "tru_stop: never",
         good_run(tru_stop="never"), ValueError, key("tru_stop", "never", "guarded, epochs")),
    Case("unknown_stop_metric", "tru_stop_metric: mrr",
         good_run(tru_stop_metric="mrr"), ValueError, key("tru_stop_metric", "mrr", "ks, recall, auc")),
    Case("unknown_reference", "tru_reference: fixed",
         good_run(tru_reference="fixed"), ValueError, key("tru_reference", "fixed", "live, frozen")),
    Case("unknown_reset_items", "tru_reset_items: zero",
         good_run(tru_reset_items="zero"), ValueError, key("tru_reset_items", "zero", "init, cold")),
    Case("unknown_sparse_grad", "tru_sparse_grad: sometimes",
         good_run(tru_sparse_grad="sometimes"), ValueError, key("tru_sparse_grad", "sometimes", "True, False or auto")),
    Case("negative_push_project", "tru_push_project: -1",
         good_run(tru_push_project=-1), ValueError, key("tru_push_project", -1, "an integer >= 0")),
    Case("unknown_match", "tru_match: item",
         good_run(tru_match="item"), ValueError, key("tru_match", "item", "pooled, user")),
    Case("unknown_match_order", "tru_match_order: score",
         good_run(tru_match_order="score"), ValueError, key("tru_match_order", "score", "rank, support")),
    Case("zero_solve_passes", "tru_solve_passes: 0",
         good_run(tru_solve_passes=0), ValueError, key("tru_solve_passes", 0, "an integer > 0")),
    Case("zero_match_min_pairs", "tru_match_min_pairs: 0",
         good_run(tru_match_min_pairs=0), ValueError, key("tru_match_min_pairs", 0, "an integer > 0")),
    Case("unknown_solve", "tru_solve: all",
         good_run(tru_solve="all"), ValueError, key("tru_solve", "all", "none, rows")),
    Case("unknown_match_quantiles", "tru_match_quantiles: random",
         good_run(tru_match_quantiles="random"), ValueError, key("tru_match_quantiles", "random", "mid, drawn")),
    Case("zero_temperature", "tru_temperature: 0",
         good_run(tru_temperature=0), ValueError, key("tru_temperature", 0, "> 0")),
    Case("negative_repair_lr", "tru_repair_learning_rate: -0.001 (a number > 0, or ~ for the training rate)",
         good_run(tru_repair_learning_rate=-0.001), ValueError,
         key("tru_repair_learning_rate", -0.001, "> 0, or ~ (the model's training learning_rate)")),
    Case("negative_epochs", "tru_epochs: -1",
         good_run(tru_epochs=-1), ValueError, key("tru_epochs", -1, "integer >= 0")),
    Case("float_epochs", "reverse_epochs: 2.5",
         good_run(reverse_epochs=2.5), ValueError, key("reverse_epochs", 2.5, "integer >= 0")),
    Case("zero_batch_size", "finetune_batch_size: 0",
         good_run(finetune_batch_size=0), ValueError, key("finetune_batch_size", 0, "integer > 0")),
    Case("audit_share", "audit_shadow_share: 1.0",
         good_run(audit_shadow_share=1.0), ValueError, key("audit_shadow_share", 1.0, "(0, 1)")),
    Case("two_bad_values", "forget_share: 2 and tru_stop: never (both are listed)",
         good_run(forget_share=2, tru_stop="never"), ValueError,
         lambda ctx, folder: ["'forget_share'", "'tru_stop'"]),
    # --- feature files (the unit cases are in test_features.py)
    Case("feature_nan", "NaN in a feature file",
         good_run(root=lambda ctx: ctx.copy("nan", edit_text_features(
             lambda lines: lines[:5] + [set_value(lines[5], "nan")] + lines[6:]))),
         FeatureFileError, lambda ctx, folder: [f"{TINY}.textfeat", "NaN or infinite values for item(s) i4"]),
    Case("feature_inf", "inf in a feature file",
         good_run(root=lambda ctx: ctx.copy("inf", edit_text_features(
             lambda lines: lines[:5] + [set_value(lines[5], "-inf")] + lines[6:]))),
         FeatureFileError, lambda ctx, folder: [f"{TINY}.textfeat", "NaN or infinite values for item(s) i4"]),
    Case("feature_row_width", "a feature row with one value too few",
         good_run(root=lambda ctx: ctx.copy("short_row", edit_text_features(
             lambda lines: lines[:3] + [lines[3].rsplit(" ", 1)[0]] + lines[4:]))),
         FeatureFileError, lambda ctx, folder: [f"{TINY}.textfeat", "line 4", "inconsistent feature dimension"]),
    Case("feature_dims", "feature_dims: {text: 6} for an 8-wide file",
         good_run(feature_dims={"text": 6}), FeatureFileError,
         lambda ctx, folder: [f"{TINY}.textfeat", "dimension 8, expected 6"]),
    # --- the data set's atomic interaction file (RecBole reads it): training runs (a workflow run
    # on an edited file stops at the data digest)
    Case("inter_wrong_type", "interaction file with a non-number in a float column",
         training_run(lambda ctx: ctx.copy("inter_type", edit_inter(
             lambda lines: lines[:4] + [lines[4].rsplit("\t", 1)[0] + "\tabc"] + lines[5:]))),
         AtomicFileError, lambda ctx, folder: [f"{TINY}.inter", "line 5"]),
    Case("inter_header_type", "interaction file header with an unknown type (user_id:tokn)",
         training_run(lambda ctx: ctx.copy("inter_header", edit_inter(
             lambda lines: ["user_id:tokn\titem_id:token\ttimestamp:float"] + lines[1:]))),
         AtomicFileError, lambda ctx, folder: [f"{TINY}.inter", "line 1"]),
    Case("inter_extra_cell", "interaction file row with one cell too many",
         training_run(lambda ctx: ctx.copy("inter_extra", edit_inter(
             lambda lines: lines[:4] + [lines[4] + "\textra"] + lines[5:]))),
         AtomicFileError, lambda ctx, folder: [f"{TINY}.inter", "line 5"]),
    Case("inter_missing_cell", "interaction file row with one cell too few",
         training_run(lambda ctx: ctx.copy("inter_short", edit_inter(
             lambda lines: lines[:4] + [lines[4].rsplit("\t", 1)[0]] + lines[5:]))),
         AtomicFileError, lambda ctx, folder: [f"{TINY}.inter", "line 5"]),
]


# --------------------------------------------------------------------------- running a case once

@dataclass
class Outcome:
    folder: Path
    error: Optional[Exception]
    changed: list                                  # input files (checkpoints, request, data) whose bytes changed


_OUTCOMES = {}


def snapshot(ctx, folder):
    """sha256 of every input: the case's own files, the checkpoints, the data folders."""
    files = [p for p in folder.rglob("*") if p.is_file() and "out" not in p.relative_to(folder).parts]
    files += list(ctx.checkpoints)
    for root in ctx.roots:
        files += [p for p in Path(root).rglob("*") if p.is_file()]
    return {str(p): file_digest(p) for p in files}


def outcome(ctx, case):
    """Run ``case`` once (the test and the doc share the result)."""
    if case.name not in _OUTCOMES:
        folder = ctx.tmp / "cases" / case.name
        folder.mkdir(parents=True)
        run = case.run(ctx, folder)
        before = snapshot(ctx, folder)
        error = None
        try:
            run()
        except Exception as err:  # noqa: BLE001 -- the error is the result
            error = err
        after = snapshot(ctx, folder)
        _OUTCOMES[case.name] = Outcome(folder, error, sorted(k for k in before if after.get(k) != before[k]))
    return _OUTCOMES[case.name]


def message(error):
    return error.args[0] if isinstance(error, KeyError) and error.args else str(error)


@pytest.fixture(scope="module")
def ctx(tiny_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    old = os.getcwd()
    os.chdir(tmp)
    yield Context(tmp, tiny_root)
    os.chdir(old)


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_bad_input_stops_with_a_clear_error_and_loses_nothing(case, ctx):
    result = outcome(ctx, case)
    assert result.error is not None, "no error"
    assert isinstance(result.error, case.error), repr(result.error)
    text = message(result.error)
    for needle in case.names(ctx, result.folder):
        assert needle in text, f"{needle!r} not in {text!r}"
    assert result.changed == []                                # checkpoints, request, data unchanged
    assert tree(result.folder / "out") == []                   # nothing written


# --------------------------------------------------------------------------- the README table

DOC_INTRO = """# Bad inputs and the errors they give

Every input below was tried by `tests/test_bad_input.py`, and the message is the one it gave
(generated from the actual errors; the test fails when this table and the code disagree.
Regenerate: `RECBOLE_TRU_WRITE_DOCS=1 python -m pytest tests/test_bad_input.py -k doc`).
The runs are the deletion-request workflow (`--checkpoint=... --forget_file=...`), but for the
interaction-file rows, which are training runs (a workflow run on an edited interaction file
stops at the data digest). In every case with an error the run stops before writing anything:
the input checkpoint, the request and the data are unchanged and no output folder is created. `<request>`, `<checkpoint>` and `<data>`
stand for the request file, the checkpoint and the data folder, `<sha256>` for a digest.
Rows marked **open** do not meet the bar yet (tracked by strict xfail tests).

| input | error | message (excerpt) |
| --- | --- | --- |
"""
EXCERPT = 260


def normalise(ctx, folder, text):
    for path, placeholder in ctx.placeholders(folder):
        text = text.replace(path, placeholder)
    text = re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", text)
    text = " ".join(text.split())
    if len(text) > EXCERPT:
        text = text[:EXCERPT].rstrip() + " …"
    return text.replace("|", "\\|")


def doc_row(ctx, case):
    result = outcome(ctx, case)
    if result.error is None:
        kind, text = "none", "(no error)"
    else:
        kind, text = type(result.error).__name__, normalise(ctx, result.folder, message(result.error))
    if case.gap:
        text += f" — **open:** {case.gap}"
    return f"| {case.input} | {kind} | {text} |"


def test_doc_table_is_the_actual_errors(ctx):
    expected = DOC_INTRO + "\n".join(doc_row(ctx, case) for case in CASES) + "\n"
    if os.environ.get("RECBOLE_TRU_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(expected, encoding="utf-8")
    assert DOC.is_file(), f"{DOC} missing: run with RECBOLE_TRU_WRITE_DOCS=1"
    actual = DOC.read_text(encoding="utf-8")
    rows = [line for line in actual.splitlines() if line.startswith("| ") and not line.startswith("| input |")]
    want = [line for line in expected.splitlines() if line.startswith("| ") and not line.startswith("| input |")]
    assert rows == want
    assert actual == expected


# --------------------------------------------------------------------------- the command line

def run_cli(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "run_recbole_tru.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def cli_base(ctx, out):
    config = base_dict(ctx.root, out)
    return [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in config.items()]


def test_cli_missing_checkpoint_exits_non_zero_naming_it(ctx, tmp_path):
    request = write_request(tmp_path / "request.inter", [ctx.pair(0)])
    missing = tmp_path / "nope.pth"
    result = run_cli(["--model=VBPR", f"--dataset={TINY}", f"--checkpoint={missing}", f"--forget_file={request}",
                      *cli_base(ctx, tmp_path / "out")], tmp_path)
    assert result.returncode != 0
    assert f"CheckpointError: Checkpoint not found: {missing}" in result.stderr
    assert tree(tmp_path / "out") == []


def test_cli_invalid_value_exits_non_zero_naming_the_key(ctx, tmp_path):
    request = write_request(tmp_path / "request.inter", [ctx.pair(0)])
    result = run_cli(["--model=VBPR", f"--dataset={TINY}", f"--checkpoint={ctx.checkpoint}",
                      f"--forget_file={request}", *cli_base(ctx, tmp_path / "out"), "--forget_share=1.5"], tmp_path)
    assert result.returncode != 0
    assert "'forget_share' must be a number in (0, 1), got 1.5" in result.stderr
    assert tree(tmp_path / "out") == []
