"""The deletion-request workflow: a trained checkpoint + a request file -> a NEW unlearned
checkpoint and an audit report. The input checkpoint is read, never written::

    python run_recbole_tru.py --model=MMGCN --unlearn=tru --checkpoint=PATH --forget_file=REQ

Steps (:func:`run_request`): check the checkpoint against this run (model, data set, feature
widths, data digest, config digest, tensor shapes); resolve the request on the training split
(``forget_regime: request``, see :mod:`recbole_tru.data.forget`); delete the forget set from
everything the model reads (:class:`~recbole_tru.data.retained.UnlearnData`); run ONE method
from the checkpoint (``retrain`` trains from scratch on the retained data); evaluate the input
and the output model with RecBole's evaluator (utility: the test pairs the request does not
cover; forgetting: the forget set as ground truth); run the membership audit; prove the
deletion (:mod:`recbole_tru.unlearn.proof`); list the files on disk still derived from the
deleted data, and remove the rebuildable ones with ``unlearn_purge``
(:mod:`recbole_tru.unlearn.artifacts`). No retrained reference is trained: a real
operator has none (TRU.md, the no-oracle rule).

The checkpoint must come from this data set AND this split: a different data digest (another
content of the data folder) or config digest (another split, seed, filtering or model size) is
an error naming both digests, since the forget set would be resolved on a training split the
model was not trained on and a requested pair could stay learned. Plugin keys (``tru_*``,
``forget_*``, ``audit_*``, ...) and output keys do not count in the config digest.

Output: a new folder ``<output_dir>/request-<model>-<time>/`` with ``unlearned.pth`` (tensors +
meta: the input checkpoint's meta, the hashes of the input and the request, the method and its
settings, the cumulative forget set), ``report.json``, ``report.md``, ``forget.inter`` and
``forget_stats.json``. Every file is written under a temporary name and renamed; the folder
itself is assembled under a hidden temporary name and renamed when complete, so an interrupted
or failed run leaves nothing behind. Nothing existing is overwritten.

An unlearned checkpoint can be the input of a later request: its meta carries the forget set so
far, which is deleted again together with the new request (otherwise the retained data would
still hold -- and a repair or retrain would re-learn -- the earlier request's pairs).
"""
import json
import os
import shutil
import tempfile
import time
from logging import getLogger
from pathlib import Path

from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_tru.audit import Audit
from recbole_tru.checkpoint import file_digest, load_into, read_checkpoint, save_checkpoint
from recbole_tru.data.forget import RequestError, new_part, read_request, save_forget_set, union
from recbole_tru.data.retained import UnlearnData, with_overrides
from recbole_tru.files import unique_path, write_text
from recbole_tru.model.ranking import drop_score_cache
from recbole_tru.provenance import environment
from recbole_tru.registry import UNLEARNERS
from recbole_tru.serving import check_checkpoint, forgotten_set
from recbole_tru.terminal import Progress
from recbole_tru.training import build_model
from recbole_tru.unlearn.artifacts import derived_artifacts, markdown_lines, purge
from recbole_tru.unlearn.pipeline import METRIC_ORDER, unlearn_method
from recbole_tru.unlearn.proof import deletion_proof, proof_passed

DEFAULT_METHOD = "tru"
# methods that start from one trained checkpoint (SISA needs its own shard models)
WORKFLOW_METHODS = tuple(m for m in UNLEARNERS if m != "sisa")
# what retrain reads (it has no keys of its own: the original training settings)
RETRAIN_SETTINGS = ("epochs", "learning_rate", "stopping_step", "train_batch_size", "valid_metric", "seed")


def choose_method(methods):
    """The workflow's one method: ``tru`` when none is named."""
    methods = list(methods) or [DEFAULT_METHOD]
    if len(methods) != 1 or methods[0] not in WORKFLOW_METHODS:
        raise ValueError(f"The deletion-request workflow (config key 'checkpoint') runs exactly one method; "
                         f"config key 'unlearn' names {', '.join(methods)}. Choose one of: {', '.join(WORKFLOW_METHODS)}.")
    return methods[0]


def method_settings(config, method):
    """The config keys the method reads, ``{key: value}``."""
    keys = RETRAIN_SETTINGS if method == "retrain" else sorted(
        k for k in config.final_config_dict if k.startswith(f"{method}_"))
    return {k: config[k] for k in keys}


# --------------------------------------------------------------------------- the checkpoint

def load_checkpoint(config, train_dataset):
    """``(model, meta, sha256)`` of config ``checkpoint``, checked and loaded into a model
    built on the training split."""
    path = Path(config["checkpoint"])
    meta = read_checkpoint(path)["meta"]
    model = build_model(config, train_dataset)
    check_checkpoint(config, meta, model, path)
    load_into(model, path, expect={"model": config["model"], "dataset": config["dataset"]})
    return model, meta, file_digest(path)


# --------------------------------------------------------------------------- the request

def resolve_request(config, meta, train_dataset, heldout):
    """``(forget set, this request's forget set, the earlier requests' forget set or None)``:
    the request resolved on the training split, united with the forget set an unlearned input
    checkpoint carries."""
    path = config["forget_file"]
    try:
        request = read_request(path, train_dataset, on_unknown=config["forget_unknown"], heldout=heldout)
    except RequestError as err:                     # every message names the request file
        if str(path) in str(err):
            raise
        raise RequestError(f"{path}: {err}") from None
    except UnicodeDecodeError as err:
        raise RequestError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    earlier = forgotten_set(meta, train_dataset, heldout)     # parsed once
    if earlier is None:
        return request, request, None
    return union(earlier, request, train_dataset), request, earlier


def method_target(config, data, forget, request, earlier):
    """What the method unlearns: the whole forget set, or on an unlearned input checkpoint with
    ``unlearn_chain_targets: new`` only the interactions no earlier request deleted
    (:meth:`~recbole_tru.data.retained.UnlearnData.focused`); the data stays the whole set's."""
    if earlier is None or config["unlearn_chain_targets"] == "all":
        return data
    return data.focused(new_part(forget, earlier.rows, request))


def request_summary(request):
    stats = request.stats()
    return {"users": int(len(request.requested_users)), "items": int(len(request.requested_items)),
            "pairs": int(len(request.requested_pairs)), **stats}


# --------------------------------------------------------------------------- evaluation

NOT_EVALUATED = {"retain": None, "forget": None}      # a model the request did not score (unlearn_evaluate)


def evaluate(host, model, loaders):
    """``{part: {metric: value}}`` with RecBole's evaluator (``host``: a Trainer)."""
    host.model = model
    out = {}
    for part, loader in loaders.items():
        drop_score_cache(model)
        out[part] = {k: float(v) for k, v in host.evaluate(loader, load_best_model=False).items()}
    return out


# --------------------------------------------------------------------------- the run

def run_request(config, dataset, train_data, valid_data, test_data, methods):
    """Apply the deletion request ``forget_file`` to checkpoint ``checkpoint`` (see module).
    Returns the report (a dict) with ``output_dir`` added."""
    logger = getLogger()
    start = time.perf_counter()
    method = choose_method(methods)
    if not config["forget_file"]:
        raise RequestError("config key 'checkpoint' (the deletion-request workflow) needs config key "
                           "'forget_file': the deletion-request atomic file")
    asked = getattr(config, "external_config_dict", {}).get("forget_regime")
    if asked not in (None, "request"):
        logger.warning(f"forget_regime {asked!r} ignored: a checkpoint run deletes forget_file")
    config = with_overrides(config, forget_regime="request")
    request_path = Path(config["forget_file"])
    train, valid, test = train_data.dataset, valid_data.dataset, test_data.dataset
    timings = {}
    progress = Progress(6 if config["audit_enabled"] else 5, logger)

    with progress.stage("checkpoint") as stage:
        original, meta, input_sha = load_checkpoint(config, train)
    timings["load_checkpoint"] = stage.seconds

    with progress.stage("deletion request") as stage:
        forget, request, earlier = resolve_request(config, meta, train, (valid, test))
        request_sha = file_digest(request_path)
        data = UnlearnData(config, train, valid, test, forget)
        target = method_target(config, data, forget, request, earlier)
        stage.note = f"{forget.stats()['interactions']} interactions to forget"
    timings["delete_data"] = stage.seconds
    logger.info(set_color("forget set", "yellow") + f": {forget.stats()}")

    scored = config["unlearn_evaluate"]              # both | output | none
    host, loaders, before = None, None, NOT_EVALUATED
    if scored != "none":
        host = Trainer(config, original)
        loaders = {"retain": data.eval_loader("test"), "forget": data.eval_loader("forget")}
    timings["evaluate"] = 0.0
    if scored == "both":
        with progress.stage("evaluation of the input") as stage:
            before = evaluate(host, original, loaders)
        timings["evaluate"] = stage.seconds
    else:
        progress.skip("evaluation of the input", f"unlearn_evaluate: {scored}")

    audit = None
    if config["audit_enabled"]:
        with progress.stage("audit of the input") as stage:
            # the shadow is trained for this request, not cached: a request writes its own folder only
            audit = Audit(with_overrides(config, unlearn_cache=False), data, original)
            audit_before = audit.run(original)
        timings["audit"] = stage.seconds

    with progress.stage(f"unlearning with {method}") as stage:
        model, trainer, _ = unlearn_method(config, method, target, original)
        stage.note = f"of which {method} itself {trainer.seconds:.1f} s"
    timings["unlearn"] = trainer.seconds

    parts = (["evaluation"] if scored != "none" else []) + (["audit"] if audit is not None else [])
    with progress.stage(f"{', '.join(parts)} and proof of the output" if parts else "proof of the output"):
        after = NOT_EVALUATED
        if scored != "none":
            tick = time.perf_counter()
            after = evaluate(host, model, loaders)
            timings["evaluate"] += time.perf_counter() - tick
        if audit is not None:
            tick = time.perf_counter()
            audit_after = audit.run(model)
            timings["audit"] += time.perf_counter() - tick
        proof = deletion_proof(data, model)
    if not proof_passed(proof):
        failed = {k: v["detail"] for k, v in proof.items() if not v["passed"]}
        raise RuntimeError(f"proof of deletion failed, nothing written: {failed}")
    artifacts = derived_artifacts(config, config["checkpoint"])
    if config["unlearn_purge"]:
        purge(artifacts)

    report = {
        "environment": environment(),
        "model": config["model"], "dataset": config["dataset"], "seed": config["seed"],
        "request": {"file": str(request_path), "sha256": request_sha, "names": request_summary(request),
                    "earlier_requests": len((meta.get("unlearning") or {}).get("history", []))},
        "deleted": {**forget.stats(),
                    "heldout_rows_dropped": {"valid": len(valid) - len(data.valid_dataset),
                                             "test": len(test) - len(data.test_dataset)}},
        "method": {"name": method, "settings": method_settings(config, method),
                   "targets": {"chain_targets": None if earlier is None else config["unlearn_chain_targets"],
                               "interactions": len(target.forget)},
                   "stop_reason": getattr(trainer, "stop_reason", None), "log": trainer.log},
        "input": {"checkpoint": str(Path(config["checkpoint"]).resolve()), "sha256": input_sha,
                  "trained": {k: meta.get(k) for k in ("summary", "test_result")}},
        "utility": {"input": before["retain"], "output": after["retain"]},
        "forgetting": {"input": before["forget"], "output": after["forget"]},
        "audit": None if audit is None else {"info": audit.info(), "input": audit_before, "output": audit_after},
        "proof_of_deletion": {"passed": True, "checks": proof},
        "derived_artifacts": {"purged": bool(config["unlearn_purge"]), "files": artifacts},
        "config_digest": meta.get("config_digest"), "data_digest": meta.get("data_digest"),
    }
    history = (meta.get("unlearning") or {}).get("history", []) + [
        {"input_sha256": input_sha, "request_sha256": request_sha, "method": method}]
    out = write_outputs(config, report, model, meta, forget, train, history, start, timings)
    logger.info(set_color("unlearned checkpoint", "yellow") + f": {out / 'unlearned.pth'}")
    print(format_markdown(report))
    print(f"deletion request written to {out}")
    return {**report, "output_dir": str(out)}


# --------------------------------------------------------------------------- outputs

def new_folder_name(config):
    base = Path(config["output_dir"]) / f"request-{config['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    return unique_path(base)


def write_outputs(config, report, model, meta, forget, train, history, start, timings):
    """Assemble the outputs in a hidden temporary folder, then rename it into place."""
    final = new_folder_name(config)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)           # mkdtemp's 0700 -> what a plain mkdir gives
        inter = save_forget_set(forget, train, tmp)
        forgotten = inter.read_text(encoding="utf-8")
        ckpt_meta = {**{k: v for k, v in meta.items() if k != "unlearning"},
                     "test_result": report["utility"]["output"],      # None with unlearn_evaluate: none
                     "unlearning": {"input_sha256": report["input"]["sha256"],
                                    "request_sha256": report["request"]["sha256"],
                                    "method": report["method"]["name"], "settings": report["method"]["settings"],
                                    "history": history, "forgotten": forgotten}}
        save_checkpoint(tmp / "unlearned.pth", model, ckpt_meta)
        timings["total"] = time.perf_counter() - start
        report["output"] = {"folder": str(final.resolve()), "checkpoint": str((final / "unlearned.pth").resolve()),
                            "sha256": file_digest(tmp / "unlearned.pth"), "forget_inter_sha256": file_digest(inter)}
        report["timings"] = timings
        text = json.dumps(report, indent=2, default=float)
        write_text(tmp / "report.json", text)
        write_text(tmp / "report.md", format_markdown(report))
        if final.exists():
            raise FileExistsError(f"{final} exists; recbole_tru never overwrites an output")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_markdown(report):
    """The short human-readable report."""
    names, deleted = report["request"]["names"], report["deleted"]
    method = report["method"]
    settings = ", ".join(f"{k}={v}" for k, v in method["settings"].items())
    lines = [
        f"# Deletion request: {report['model']} on {report['dataset']}", "",
        f"- request: `{report['request']['file']}` (sha256 `{report['request']['sha256']}`)",
        f"- input checkpoint: `{report['input']['checkpoint']}` (sha256 `{report['input']['sha256']}`)",
    ]
    if "output" in report:
        lines.append(f"- output checkpoint: `{report['output']['checkpoint']}` (sha256 `{report['output']['sha256']}`)")
    lines += [f"- method: {method['name']} ({settings})" + (f"; stop: {method['stop_reason']}" if method["stop_reason"] else "")]
    targets = method.get("targets") or {}
    if targets.get("chain_targets") == "new":
        lines.append(f"- unlearned now: the {targets['interactions']} interactions no earlier request deleted "
                     f"(unlearn_chain_targets: new; every request's interactions stay deleted from the data)")
    if "timings" in report:
        t = report["timings"]
        lines.append(f"- time: {t['unlearn']:.2f} s unlearning, {t['total']:.2f} s in all "
                     f"(evaluation {t['evaluate']:.2f} s, audit {t.get('audit', 0.0):.2f} s)")
    lines += ["", "## What was deleted", "",
              f"The request names {names['users']} user(s), {names['items']} item(s) and {names['pairs']} pair(s)"
              + (f", on top of {report['request']['earlier_requests']} earlier request(s)"
                 if report["request"]["earlier_requests"] else "") + ". "
              f"{deleted['interactions']} training interactions were forgotten ({100 * deleted['share_of_train']:.2f}% "
              f"of training), touching {deleted['users_touched']} users and {deleted['items_touched']} items; "
              f"{deleted['fully_deleted_users']} user(s) and {deleted['fully_deleted_items']} item(s) lost every "
              f"training interaction. {deleted['heldout_rows_dropped']['valid']} validation and "
              f"{deleted['heldout_rows_dropped']['test']} test rows the request covers were dropped from evaluation. "
              "The exact set is `forget.inter`.", "",
              "## Utility and forgetting", "",
              "| metric | input | output |", "| --- | ---: | ---: |"]
    for part, label in (("utility", "test"), ("forgetting", "forget set")):
        for metric in METRIC_ORDER:
            cells = [_fmt(None if report[part][side] is None else report[part][side][metric])
                     for side in ("input", "output")]
            lines.append(f"| {label} {metric} | {cells[0]} | {cells[1]} |")
    lines += ["", "Test: the held-out pairs the request does not cover; forget set: the forgotten pairs as "
              "ground truth (retained history masked). No retrained model is trained, so there is no target "
              "value here: a retrained model usually still recommends part of the forgotten pairs.", ""]
    audit = report["audit"]
    lines += ["## Membership audit", ""]
    if audit is None:
        lines += ["Not run (audit_enabled: False).", ""]
    else:
        lines += ["| attack | input | output |", "| --- | ---: | ---: |"]
        for attack in audit["input"]["mia"]:
            head = " (headline)" if attack == audit["info"]["headline"] else ""
            lines.append(f"| {attack}{head} | {_fmt(audit['input']['mia'][attack], 3)} | "
                         f"{_fmt(audit['output']['mia'][attack], 3)} |")
        lines += ["", "AUC of telling forgotten pairs from never-seen pairs: about 0.5 means the attack cannot "
                  "tell them apart.", ""]
    lines += ["## Proof of deletion", "",
              "What the unlearned model reads at run time, checked pair by pair. Not covered: what its "
              "parameters remember (the membership audit's question) and the files listed below.", "",
              "| check | passed | detail |", "| --- | --- | --- |"]
    for name, check in report["proof_of_deletion"]["checks"].items():
        lines.append(f"| {name} | {'yes' if check['passed'] else 'NO'} | {check['detail']} |")
    if report.get("derived_artifacts") is not None:
        lines += [""] + markdown_lines(report["derived_artifacts"]["files"], report["derived_artifacts"]["purged"])
    return "\n".join(lines) + "\n"
