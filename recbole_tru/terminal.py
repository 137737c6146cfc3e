"""What a run shows on the terminal: the known-harmless warnings of RecBole and torch filtered
out (:func:`quiet_warnings`), plain numbers in result lines (:func:`plain`), and one progress
line as each stage of a long run starts and ends, with its time (:class:`Progress`).

Only the warnings listed in :data:`KNOWN_WARNINGS` are filtered, each by its category and the
start of its message; every other warning is shown as Python shows it.
"""
import contextlib
import time
import warnings
from logging import getLogger

import numpy as np
from recbole.utils import set_color

# (category, regular expression matched at the start of the message): harmless on this stack,
# printed by every run
KNOWN_WARNINGS = (
    # torch, on MMGCN's and LightGCN's sparse adjacency (CSR works for what they do with it)
    (UserWarning, r"Sparse CSR tensor support is in beta"),
    # RecBole 1.2.1's trainer builds torch.cuda.amp.GradScaler (disabled on CPU: nothing to scale)
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated"),
    # RecBole's Dataset turns read-only numpy arrays into tensors it never writes to
    (UserWarning, r"The given NumPy array is not writable, and PyTorch does not support non-writable tensors"),
    # RecBole's Config eval()s every string value first: a path such as request-MMGCN-20261205-191418
    # makes Python warn while compiling it, before RecBole keeps the string as it is
    (SyntaxWarning, r"invalid decimal literal"),
)


def filter_known_warnings():
    """Ignore :data:`KNOWN_WARNINGS` from now on in this process (idempotent)."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextlib.contextmanager
def quiet_warnings():
    """:func:`filter_known_warnings` for the duration of the block; the caller's warning
    filters are restored afterwards."""
    with warnings.catch_warnings():
        filter_known_warnings()
        yield


def plain(value):
    """``value`` with numpy scalars (also inside dicts, lists and tuples) as Python numbers, so
    a result prints ``0.25``, not ``np.float64(0.25)``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


class Stage:
    """A running stage: ``note`` (set by the caller) is added to its closing line; ``seconds``
    is its time once it has ended."""

    def __init__(self):
        self.note = ""
        self.seconds = None


class Progress:
    """Logs (INFO, RecBole's logger) a line as each of ``stages`` stages starts and ends::

        progress [2/5] retrained reference ...
        progress [2/5] retrained reference: 117.2 s (run 130.4 s) loaded from the cache

    The second figure is the time since the Progress was made."""

    def __init__(self, stages, logger=None):
        self.stages, self.done = stages, 0
        self.logger = logger or getLogger()
        self.start = time.perf_counter()

    def _line(self, label, text):
        self.logger.info(set_color("progress", "blue") + f" {label}{text}")

    @contextlib.contextmanager
    def stage(self, name):
        self.done += 1
        label = f"[{self.done}/{self.stages}] {name}"
        self._line(label, " ...")
        stage, tick = Stage(), time.perf_counter()
        yield stage
        stage.seconds = time.perf_counter() - tick
        note = f" {stage.note}" if stage.note else ""
        self._line(label, f": {stage.seconds:.1f} s (run {time.perf_counter() - self.start:.1f} s){note}")

    def skip(self, name, why):
        """Count a stage that does not run this time, saying why."""
        self.done += 1
        self._line(f"[{self.done}/{self.stages}] {name}", f": skipped ({why})")
