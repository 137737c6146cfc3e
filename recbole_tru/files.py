"""Writing outputs: whole or not at all, never over an existing file.

:func:`atomic_write` is the one way the plugin writes a file (checkpoints, reports, atomic data
files, benchmark results), :func:`write_text`, :func:`write_texts` and :func:`save_png` its
shorthands for text files and figures; :func:`unique_path` the one way it names a new output (a
run folder, a checkpoint) next to earlier ones.
"""
import os
import uuid
from pathlib import Path


def atomic_write(path, write, replace=False):
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    By default an existing ``path`` is refused (``FileExistsError``; also when another process
    creates it meanwhile); ``replace=True`` swaps a regenerated file in atomically (derived
    files such as caches and benchmark tables). A failing ``write`` leaves nothing behind.
    The temporary file ``.<name>.<random>.tmp`` exists (empty) when ``write`` is called; the
    result has the permissions of a plain ``open(path, "w")``."""
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} exists; recbole_tru never overwrites an output")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
    # created empty and exclusively, with the permissions a plain open() gives (mkstemp's 0600
    # would make every output private to its writer)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)          # fails if someone created ``path`` meanwhile
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path, text, replace=False):
    """``text`` (UTF-8) to ``path`` with :func:`atomic_write`; returns the path."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), replace=replace)


def write_texts(folder, name, texts):
    """``<folder>/<name>.<suffix>`` for each ``(suffix, text)`` (a benchmark's json / csv / md),
    each regenerated in place with :func:`atomic_write`: whole or not at all."""
    folder = Path(folder)
    for suffix, text in texts:
        write_text(folder / f"{name}.{suffix}", text, replace=True)


def save_png(fig, path, replace=True, dpi=110):
    """A matplotlib figure to ``path`` as PNG with :func:`atomic_write` (by default regenerated
    in place: plots are derived files); returns the path."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), replace=replace)


def unique_path(base, suffix=""):
    """``<base><suffix>``, or ``<base>-1<suffix>``, ``<base>-2<suffix>``, ... : the first that
    does not exist yet (``base`` without the suffix, e.g. a time-stamped name)."""
    base = str(base)
    path, n = Path(f"{base}{suffix}"), 1
    while path.exists():
        path, n = Path(f"{base}-{n}{suffix}"), n + 1
    return path
