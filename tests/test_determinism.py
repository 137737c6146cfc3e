"""Determinism: the same command with the same seed gives the same checkpoint when training, and
the same forget set, metrics, audit and unlearned checkpoint (tensor by tensor) when applying a
deletion request, twice in a row. Equal runs give byte-identical checkpoint files."""
import json
from pathlib import Path

import pytest
import torch

from recbole_tru.checkpoint import read_checkpoint
from test_workflow import Splits, run_workflow, train_checkpoint, write_request

# what may differ between two identical runs: wall times and where the outputs went
VOLATILE = {"timings", "seconds", "seconds_per_epoch", "folder", "checkpoint", "output_dir"}


def stable(value):
    """``value`` without the :data:`VOLATILE` keys (at any depth)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def assert_same_tensors(a, b):
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("model", ["VBPR", "MMGCN"])
def test_training_twice_gives_identical_checkpoints(model, tiny_root, workdir):
    first = read_checkpoint(train_checkpoint(tiny_root, workdir / f"train-{model}-1", model))
    second = read_checkpoint(train_checkpoint(tiny_root, workdir / f"train-{model}-2", model))
    assert_same_tensors(first["state_dict"], second["state_dict"])
    assert stable(first["meta"]) == stable(second["meta"])


@pytest.mark.parametrize("model,method", [("VBPR", "tru"), ("MMGCN", "tru"), ("VBPR", "reverse")])
def test_the_same_request_twice_gives_identical_outputs(model, method, tiny_root, workdir):
    checkpoint = train_checkpoint(tiny_root, workdir / f"ckpt-{model}-{method}", model)
    rows = Splits(tiny_root, workdir / "splits").request_rows(n_users=1, n_items=1, n_pairs=3)
    request = write_request(workdir / f"request-{model}-{method}.inter", rows)
    reports = [run_workflow(tiny_root, workdir / f"run-{model}-{method}-{n}", checkpoint, request, model=model,
                            unlearn=method) for n in (1, 2)]
    folders = [Path(r["output_dir"]) for r in reports]
    assert folders[0] != folders[1]
    # the same forget set
    for name in ("forget.inter", "forget_stats.json"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    # the same metrics, audit, proof and input hashes (all but wall times, paths and the
    # output file's hash, compared in the next test)
    on_disk = [json.loads((f / "report.json").read_text()) for f in folders]
    for report in on_disk:
        report["output"].pop("sha256")
    assert stable(on_disk[0]) == stable(on_disk[1])
    assert on_disk[0]["audit"]["output"]["mia"] and on_disk[0]["utility"]["output"]
    # the same unlearned checkpoint, tensor by tensor, with the same meta
    states = [read_checkpoint(f / "unlearned.pth") for f in folders]
    assert_same_tensors(states[0]["state_dict"], states[1]["state_dict"])
    assert states[0]["meta"] == states[1]["meta"]


def test_the_same_tensors_give_the_same_checkpoint_bytes(tiny_root, workdir):
    """The unlearned checkpoint's meta holds no time, so equal runs could give equal files."""
    checkpoint = train_checkpoint(tiny_root, workdir / "bytes-ckpt")
    rows = Splits(tiny_root, workdir / "splits").request_rows(n_users=0, n_items=0, n_pairs=2)
    request = write_request(workdir / "bytes-request.inter", rows)
    outs = [run_workflow(tiny_root, workdir / f"bytes-{n}", checkpoint, request, audit_enabled=False)
            for n in (1, 2)]
    states = [read_checkpoint(Path(out["output_dir"]) / "unlearned.pth") for out in outs]
    assert_same_tensors(states[0]["state_dict"], states[1]["state_dict"])
    assert states[0]["meta"] == states[1]["meta"]
    assert outs[0]["output"]["sha256"] == outs[1]["output"]["sha256"]
