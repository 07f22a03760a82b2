"""A progress line for a long, silent phase: the share done and the time left, every few seconds.

Used by decoding a dataset's images (:mod:`fedray.data.image_folder`) and by
extracting frozen-backbone features (:mod:`fedray.training.features`), each of
which can take minutes on a laptop. The time left is the elapsed time scaled
by the share remaining (a constant rate), printed at most every ``every_s``
seconds, and only once a phase has run that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

# Called when a long phase begins. A run sets it for its preparing thread and starts Ray only then (or once the
# preparation ends): every check that needs no long phase fails before Ray starts, and Ray's start-up still
# overlaps the decoding or the feature extraction.
LONG_PHASE_BEGINS: ContextVar[Callable[[], None] | None] = ContextVar("fedray_long_phase_begins", default=None)


class Progress:
    """Call it with (done, total) as work proceeds; it prints ``<what>: 40% after 20 s, about 30 s left``.

    Shares only, never counts: in a hospital's actor the console is forwarded to the driver's, and a hospital's
    record count is no declared release under DP; the time it takes is operational timing (outside the guarantee).
    """

    def __init__(self, what: str, *, every_s: float = 10.0):
        self.what, self.every_s = what, every_s
        self.started = self.last = time.perf_counter()
        begins = LONG_PHASE_BEGINS.get()
        if begins is not None:
            begins()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s or not 0 < done < total:
            return
        self.last = now
        elapsed = now - self.started
        print(f"{self.what}: {100 * done / total:.0f}% after {elapsed:.0f} s, about "
              f"{elapsed * (total - done) / done:.0f} s left", flush=True)
