"""What a run shows on the terminal: RecBole's and torch's known-harmless warnings are filtered
(exactly those: any other warning still shows), result lines print plain numbers, and an
unlearning run or a deletion request logs one progress line per stage with its time."""
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from recbole_tru.terminal import KNOWN_WARNINGS, Progress, plain, quiet_warnings
from test_workflow import run_workflow, train_checkpoint, write_request

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the start of each filtered message, as RecBole / torch print it
KNOWN = ("Sparse CSR tensor support is in beta state",
         "`torch.cuda.amp.GradScaler(args...)` is deprecated",
         "The given NumPy array is not writable, and PyTorch does not support non-writable tensors",
         "invalid decimal literal")
UNRELATED = "an unrelated warning raised by the test"
STAGE = r"progress \[(\d+)/(\d+)\] {}: \d+\.\d s \(run \d+\.\d s\)"

# the command line, with two hooks: "unfiltered" empties KNOWN_WARNINGS (the control), and the
# unlearning run raises an unrelated warning just before it writes its results
DRIVER = f"""
import sys, warnings
import recbole_tru.terminal as terminal
import recbole_tru.unlearn.pipeline as pipeline
if sys.argv[1] == "unfiltered":
    terminal.KNOWN_WARNINGS = ()
write_results = pipeline.write_results
def noisy(folder, results):
    warnings.warn({UNRELATED!r}, UserWarning)
    return write_results(folder, results)
pipeline.write_results = noisy
from recbole_tru.cli import main
sys.argv = ["run_recbole_tru", *sys.argv[2:]]
main()
"""


def tiny_args(tiny_root):
    return [f"--dataset={TINY}", f"--data_path={tiny_root}", "--epochs=1",
            "--modalities={'text':'textfeat','meta':'metafeat'}",
            "--load_col={'inter':['user_id','item_id','timestamp']}",
            "--embedding_size=8", "--latent_dim=8", "--train_batch_size=256", "--show_progress=False",
            "--use_gpu=False", "--state=INFO", "--seed=7", "--audit_pairs=500",
            "--audit_attacks=['rank','score','logistic','shadow']",
            # a folder name whose eval() by RecBole's Config makes Python warn "invalid decimal literal"
            "--checkpoint_dir=saved/run-1.input"]


def run_driver(mode, args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", DRIVER, mode, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)


# --------------------------------------------------------------------------- the filter itself

def test_exactly_the_known_warnings_are_filtered():
    assert len(KNOWN_WARNINGS) == len(KNOWN)
    known = [(category, text) for (category, _), text in zip(KNOWN_WARNINGS, KNOWN)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_warnings():
            for category, text in known:
                warnings.warn(text + " (and the rest of the message)", category)
            warnings.warn(UNRELATED, UserWarning)
            warnings.warn("Sparse CSR tensor support is in beta state", DeprecationWarning)   # other category
            warnings.warn("This NumPy array is not writable", UserWarning)      # other message
        for category, text in known:        # the caller's filters are back after the block
            warnings.warn(text, category)
    shown = [str(w.message) for w in caught]
    assert shown == [UNRELATED, "Sparse CSR tensor support is in beta state", "This NumPy array is not writable",
                     *[text for _, text in known]]


def test_plain_turns_numpy_scalars_into_python_numbers():
    value = plain({"recall@10": np.float64(0.25), "n": np.int64(3), "list": [np.float32(0.5)],
                   "pair": (np.float64(1.0), "x"), "text": "y", "none": None})
    assert value == {"recall@10": 0.25, "n": 3, "list": [0.5], "pair": (1.0, "x"), "text": "y", "none": None}
    assert type(value["recall@10"]) is float and type(value["n"]) is int and type(value["list"][0]) is float
    assert "np.float64(" not in str(value)


def test_progress_lines_carry_the_stage_and_the_times(caplog):
    progress = Progress(2, logging.getLogger("recbole_tru.test"))
    with caplog.at_level(logging.INFO, logger="recbole_tru.test"):
        with progress.stage("first") as stage:
            stage.note = "a note"
        with pytest.raises(RuntimeError), progress.stage("second"):
            raise RuntimeError("boom")
    lines = [ANSI.sub("", r.getMessage()) for r in caplog.records]
    assert lines[0] == "progress [1/2] first ..."
    assert re.fullmatch(STAGE.format("first") + " a note", lines[1])
    assert stage.seconds >= 0
    assert lines[2:] == ["progress [2/2] second ..."]         # a failed stage has no closing line


def test_a_skipped_stage_is_counted_and_says_why(caplog):
    progress = Progress(3, logging.getLogger("recbole_tru.test"))
    with caplog.at_level(logging.INFO, logger="recbole_tru.test"):
        progress.skip("evaluation of the input", "unlearn_evaluate: none")
        with progress.stage("unlearning"):
            pass
    lines = [ANSI.sub("", r.getMessage()) for r in caplog.records]
    assert lines[0] == "progress [1/3] evaluation of the input: skipped (unlearn_evaluate: none)"
    assert lines[1] == "progress [2/3] unlearning ..."


# --------------------------------------------------------------------------- a real run, in a fresh process

def test_a_run_shows_no_known_warning_plain_numbers_and_its_stages(tiny_root, tmp_path):
    # the control: without the filter, a run of MMGCN prints all three
    status, out, err = run_driver("unfiltered", ["--model=MMGCN", *tiny_args(tiny_root)], tmp_path)
    assert status == 0, err[-3000:]
    assert all(text in err for text in KNOWN), err[-3000:]
    assert "np.float64(" not in out + err                 # the test result line (plain training)
    assert re.search(r"test result\s*: \{'recall@10': 0\.\d+", err), err[-2000:]

    status, out, err = run_driver("filtered", ["--model=MMGCN", "--unlearn=finetune,retrain",
                                               *tiny_args(tiny_root)], tmp_path)
    assert status == 0, err[-3000:]
    assert not [text for text in KNOWN if text in err + out], err[-3000:]
    assert f"UserWarning: {UNRELATED}" in err              # any other warning still shows
    assert "np.float64(" not in out + err
    assert re.search(r"^finetune\s+0\.\d{4}\s+0\.\d{4}", out, re.M), out
    stages = ["original model", "deletion request", "retrained reference",
              "audit of the original and the reference", "unlearning with finetune"]
    for n, name in enumerate(stages, 1):
        assert f"progress [{n}/5] {name} ..." in err, (name, err[-3000:])
        found = re.search(STAGE.format(re.escape(name)), err)
        assert found and found.groups() == (str(n), "5"), (name, err[-3000:])
    assert re.search(STAGE.format("original model") + " trained 1 epoch", err)


# --------------------------------------------------------------------------- the deletion-request workflow

def test_a_deletion_request_logs_its_stages(tiny_root, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    checkpoint = train_checkpoint(tiny_root, tmp_path / "trained", epochs=1)
    request = write_request(tmp_path / "request.inter", [("u1",)], header=("user_id:token",))
    caplog.set_level(logging.INFO)
    report = run_workflow(tiny_root, tmp_path / "out", checkpoint, request, unlearn="finetune", epochs=1)
    text = ANSI.sub("", caplog.text)
    stages = ["checkpoint", "deletion request", "evaluation of the input", "audit of the input",
              "unlearning with finetune", "evaluation, audit and proof of the output"]
    for n, name in enumerate(stages, 1):
        found = re.search(STAGE.format(re.escape(name)), text)
        assert found and found.groups() == (str(n), "6"), (name, text[-3000:])
    assert re.search(STAGE.format("unlearning with finetune") + r" of which finetune itself \d+\.\d s", text)
    assert set(report["timings"]) == {"load_checkpoint", "delete_data", "evaluate", "audit", "unlearn", "total"}
