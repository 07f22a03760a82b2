"""Where a run's wall time went: consecutive phases on one monotonic clock.

``summary.timing`` breaks ``summary.wall_seconds`` down, in seconds:

- ``startup``: a CLI run only: from fedray's first line (the interpreter's own
  start, ~0.1 s, is not seen) to the experiment: imports, Ray and the actors'
  start, and decoding the data, which overlaps them (under k-fold CV also
  writing each fold's directory: what the CLI spent outside the experiments);
- ``setup``: the experiment builds its parties: the shards reach the
  hospitals, models are built, frozen features are extracted or read;
- ``rounds``: the training rounds, evaluation included;
- ``audit``: the privacy audit (zero when ``audit.enabled`` is false);
- ``wrap_up``: collecting the models and the ledger, placement, and for a CLI
  run stopping Ray and writing the run's other files;
- ``before_resume``: a resumed sweep trial only: the time its checkpointed
  attempt had spent.

The phases add up to ``wall_seconds`` (within rounding). Under k-fold
cross-validation each phase is summed over the folds.
"""

from __future__ import annotations

import time

PHASES = ("before_resume", "startup", "setup", "rounds", "audit", "wrap_up")


class Stopwatch:
    """Laps on :func:`time.perf_counter`: each :meth:`lap` charges the time since the last one to a phase."""

    def __init__(self, *, before_resume: float = 0.0):
        self.last = time.perf_counter()
        self.started = self.last - before_resume
        self.seconds: dict[str, float] = {"before_resume": before_resume} if before_resume else {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def total(self) -> float:
        return self.last - self.started


def with_process_time(timing: dict[str, float], *, experiments_seconds: float, process_seconds: float,
                      after_seconds: float) -> dict[str, float]:
    """A CLI run's phases: the experiments' own, ``startup`` (the process's time outside them, before the last
    one ended) and ``after_seconds`` (stopping Ray, writing) added to ``wrap_up``."""
    phases = dict(timing)
    phases["startup"] = process_seconds - after_seconds - experiments_seconds
    phases["wrap_up"] = phases.get("wrap_up", 0.0) + after_seconds
    return {phase: round(phases[phase], 3) for phase in PHASES if phase in phases}
