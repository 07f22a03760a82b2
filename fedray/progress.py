"""Progress of a long, silent phase, with tqdm: the share done, its rate and the time left.

Used by decoding a dataset's images (:mod:`fedray.data.image_folder`), extracting frozen-backbone features
(:mod:`fedray.training.features`) and training the audit's reference models (:mod:`fedray.audit.auditor`), each
of which can take minutes on a laptop. The bar appears only once a phase has run ``every_s`` seconds and is
redrawn at most that often (a log file gets one update per interval, not a stream); it goes to stdout, which a
hospital's or the driver's actor forwards to the command's console (stderr is for errors).

Shares only, never counts: the bar counts percent (its rate is percent per second), because a hospital's record
count is no declared release under DP. The time it takes is operational timing, outside the guarantee.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar

from tqdm import tqdm

# Called when a long phase begins. A run sets it for its preparing thread and starts Ray only then (or once the
# preparation ends): every check that needs no long phase fails before Ray starts, and Ray's start-up still
# overlaps the decoding or the feature extraction.
LONG_PHASE_BEGINS: ContextVar[Callable[[], None] | None] = ContextVar("fedray_long_phase_begins", default=None)

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {elapsed} elapsed, {remaining} left, {rate_fmt}"


class Progress:
    """Call it with ``(done, total)`` as work proceeds; the bar shows ``done / total`` as a percentage."""

    def __init__(self, what: str, *, every_s: float = 10.0):
        begins = LONG_PHASE_BEGINS.get()
        if begins is not None:
            begins()
        self.bar = tqdm(total=100, desc=what, unit="%", bar_format=BAR_FORMAT, mininterval=every_s, delay=every_s,
                        file=sys.stdout, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        share = 100.0 * done / total if total else 100.0
        self.bar.update(share - self.bar.n)
        if done >= total:
            self.bar.close()
