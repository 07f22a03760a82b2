"""The sweep's console progress: one plain line when something changes, never a redrawn table.

Tune's ``CLIReporter`` reprints its whole status table every few seconds,
whether or not anything changed, and a log of it fills with repeats. This
reporter (a Tune ``ProgressReporter``) prints a line only on a change:

- a trial starts: ``[trial 2/12] started: lr=0.05 epsilon=1``;
- a running trial reports a new round, at most every ``round_every_s``
  seconds per trial (a round's metrics are public only as Tune reports them):
  ``[trial 2/12] round 3/10: test bal acc 0.412 | eps spent 0.51``;
- a trial ends: ``[trial 2/12] finished in 41 s: test bal acc 0.523, eps spent
  0.99`` or ``[trial 2/12] failed`` (Tune's error line and fedray's follow);
- and, with each start or end, the sweep's tally:
  ``sweep: 3 of 12 finished, 2 running, 0 failed, 7 pending``.

Plain text, no ANSI escapes, so it reads the same in a terminal and in a
log. Trials are numbered in the order Tune created them.
"""

from __future__ import annotations

import math
import time

from ray.tune import ProgressReporter

PENDING, RUNNING, TERMINATED, ERROR = "PENDING", "RUNNING", "TERMINATED", "ERROR"


class ChangeReporter(ProgressReporter):
    """Prints a line per trial event (module docstring); ``columns`` maps a reported metric to its label."""

    def __init__(self, *, params: list[str], columns: dict[str, str], round_every_s: float = 30.0):
        self.params, self.columns, self.round_every_s = params, columns, round_every_s
        self.total = 0  # Tune's count of the trials it will run, given in setup()
        self.numbers: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self.rounds: dict[str, tuple[int, float]] = {}  # trial -> (last round printed, when)
        self.lines: list[str] = []

    def setup(self, start_time=None, total_samples=None, metric=None, mode=None, **kwargs) -> None:
        self.total = int(total_samples or 0)

    def should_report(self, trials, done: bool = False) -> bool:
        self.lines = []
        changed = False
        for trial in trials:
            number = self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)
            tag = f"[trial {number}/{max(self.total, len(self.numbers))}]"
            before, now = self.status.get(trial.trial_id, PENDING), trial.status
            if now != before:
                self.status[trial.trial_id] = now
                if now == RUNNING and before == PENDING:
                    self.lines.append(f"{tag} started: {self._params(trial)}")
                elif now == TERMINATED:
                    self.lines.append(f"{tag} finished{self._elapsed(trial)}: {self._metrics(trial.last_result)}")
                elif now == ERROR:
                    self.lines.append(f"{tag} failed{self._elapsed(trial)}: {self._params(trial)}")
                changed = changed or now in (RUNNING, TERMINATED, ERROR)
            elif now == RUNNING:
                self._round_line(trial, tag)
        if changed:
            self.lines.append(self._tally())
        return bool(self.lines)

    def report(self, trials, done: bool, *sys_info: str) -> None:
        for line in self.lines:
            print(line, flush=True)
        self.lines = []

    def _round_line(self, trial, tag: str) -> None:
        result = trial.last_result or {}
        round_idx = result.get("round")
        if round_idx is None:
            return
        printed, when = self.rounds.get(trial.trial_id, (0, 0.0))
        if round_idx > printed and time.monotonic() - when >= self.round_every_s:
            self.rounds[trial.trial_id] = (round_idx, time.monotonic())
            total = result.get("total_rounds")
            self.lines.append(f"{tag} round {round_idx}{f'/{total}' if total else ''}: {self._metrics(result)}")

    def _params(self, trial) -> str:
        config = trial.config or {}
        return " ".join(f"{name}={_text(config[name])}" for name in self.params if name in config)

    def _metrics(self, result: dict | None) -> str:
        shown = [f"{label} {_text(result[key])}" for key, label in self.columns.items()
                 if result and result.get(key) is not None and key != "round"]  # None: not measured (eps of ∞)
        return ", ".join(shown) or "no metrics reported"

    @staticmethod
    def _elapsed(trial) -> str:
        seconds = (trial.last_result or {}).get("time_total_s")
        return f" in {seconds:.0f} s" if seconds else ""

    def _tally(self) -> str:
        counts = {state: sum(1 for s in self.status.values() if s == state)
                  for state in (TERMINATED, RUNNING, ERROR)}
        pending = max(self.total, len(self.numbers)) - sum(counts.values())
        return (f"sweep: {counts[TERMINATED]} of {max(self.total, len(self.numbers))} finished, "
                f"{counts[RUNNING]} running, {counts[ERROR]} failed, {pending} pending")


def _text(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
