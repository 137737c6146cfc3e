"""What on disk still derives from the deleted data after a deletion request, and an opt-in purge.

The deletion itself is a **ledger**: the unlearned checkpoint carries the cumulative forget set
(every request so far), and every plugin load of that checkpoint deletes it again from the data
the model reads (:mod:`recbole_tru.serving`, the workflow's next request). The atomic files are
not rewritten: a new version of them would get a new split and a new data digest, which no
existing checkpoint fits. What else on disk was made from the deleted data is listed in the
request's report (:func:`derived_artifacts`), each with what it is and whether the purge removes
it:

* ``source``: the data set's interaction file(s), which still hold the deleted rows (the ledger
  deletes them on every load); never purged;
* ``model``: the input checkpoint and earlier requests' checkpoints and forget sets of this model
  and data set (trained on, or naming, the deleted data); never purged: serve the new checkpoint
  and remove them by hand when no longer needed;
* ``cache``: the checkpoint cache of unlearning runs and sweeps (``<output_dir>/cache/``: originals,
  retrained references, shadow models of this data set), RecBole's saved data sets and
  dataloaders of this data set in ``checkpoint_dir`` (the plugin's own fits use a temporary
  folder, removed after each fit), and the feature caches ``*.cache.npz`` beside the feature
  files; all rebuilt on demand, so ``unlearn_purge: True`` removes them.
"""
import re
from pathlib import Path

from recbole_tru.checkpoint import DERIVED_SUFFIXES

KINDS = ("source", "model", "cache")


def _entry(path, kind, what):
    return {"path": str(Path(path).resolve()), "kind": kind, "what": what, "purge": kind == "cache",
            "removed": False}


def derived_artifacts(config, input_checkpoint):
    """Every file on disk derived from this data set's interactions that the request leaves
    behind (see the module): a list of ``{"path", "kind", "what", "purge", "removed"}``."""
    dataset, model = config["dataset"], config["model"]
    data = Path(config["data_path"])
    out = []
    for path in sorted(data.glob(f"{dataset}.inter")):
        out.append(_entry(path, "source", "interaction file: still holds the deleted rows; the ledger in the "
                                          "unlearned checkpoint deletes them on every load"))
    out.append(_entry(input_checkpoint, "model", "the input checkpoint: trained before this request"))
    output_dir = Path(config["output_dir"])
    # this request's own folder does not exist yet (it is renamed into place once written)
    for folder in sorted(output_dir.glob(f"request-{model}-*")):
        if not folder.is_dir():
            continue
        for name, what in (("unlearned.pth", "an earlier request's checkpoint: does not include this deletion"),
                           ("forget.inter", "an earlier request's forget set: names deleted data")):
            if (folder / name).is_file() and (folder / name).resolve() != Path(input_checkpoint).resolve():
                out.append(_entry(folder / name, "model", what))
    # the cache's names: <model>-<dataset>-<tag>-<16 hex digits>.pth (recbole_tru.training.cached_fit)
    cached = re.compile(rf"^[^-]+-{re.escape(dataset)}-[a-z_]+-[0-9a-f]{{16}}\.pth$")
    for path in sorted((output_dir / "cache").glob("*.pth")):
        if cached.match(path.name):
            out.append(_entry(path, "cache", "cached model of an unlearning run or sweep (trained on this data set)"))
    # RecBole's saved data sets and dataloaders (save_dataset / save_dataloaders): <dataset>-*.pth
    checkpoint_dir = Path(config["checkpoint_dir"])
    for path in sorted(checkpoint_dir.glob(f"{dataset}-*.pth")) if checkpoint_dir.is_dir() else ():
        out.append(_entry(path, "cache", "RecBole's saved data set or dataloaders (checkpoint_dir)"))
    for path in sorted(p for p in data.iterdir() if p.is_file() and p.name.endswith(DERIVED_SUFFIXES)):
        out.append(_entry(path, "cache", "feature-file cache (rebuilt from the feature file when needed)"))
    return out


def purge(artifacts):
    """Remove the artifacts marked ``purge`` (files that are gone already count as removed).
    Returns the same list with ``removed`` set."""
    for entry in artifacts:
        if entry["purge"]:
            Path(entry["path"]).unlink(missing_ok=True)
            entry["removed"] = True
    return artifacts


def markdown_lines(artifacts, purged):
    """The report's section on derived artifacts."""
    lines = ["## Derived artifacts on disk", "",
             "The deletion is a ledger: `unlearned.pth` carries every request's forget set and every load "
             "through recbole_tru deletes it again from the data the model reads (graph, samplers, history "
             "masks). These files were made from the deleted data and are not covered by the proof of deletion"
             + (" (`unlearn_purge: True` removed the caches)." if purged else
                "; `unlearn_purge: True` removes the caches (they are rebuilt on demand)."), "",
             "| kind | file | what | removed |", "| --- | --- | --- | --- |"]
    for entry in artifacts:
        lines.append(f"| {entry['kind']} | `{entry['path']}` | {entry['what']} | "
                     f"{'yes' if entry['removed'] else 'no'} |")
    return lines + [""]
