"""``tracking=tensorboard``: every single run and every sweep trial as TensorBoard scalars (tensorboardX, which
Ray Tune brings).

A single run writes ``<tracking.log_dir>/<experiment>/<run name>/``: each round's global validation and test
metrics (tags ``val/<metric>``, ``test/<metric>``; step: the round), then the final metrics, the ledger's ε and δ
and the audit's lower bounds (``final/<name>``, at the last round's step). A sweep's trials are logged by Tune's
:class:`~ray.tune.logger.TBXLoggerCallback` into ``<tracking.log_dir>/<sweep>/<trial>/``: every report's scalars
(``ray/tune/<metric>``, step: the report). ``tensorboard --logdir outputs/tensorboard`` shows both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedray.tracking.base import RunLog, Tracker, final_scalars, round_scalars, round_step


class TensorBoardTracker(Tracker):
    def open_run(self, cfg, *, experiment: str, run_name: str) -> RunLog:
        from tensorboardX import SummaryWriter

        return _TensorBoardRun(SummaryWriter(str(Path(self.settings.log_dir) / experiment / run_name)))

    def tune_callbacks(self, *, experiment: str, run_dir_key: str) -> list:
        from ray.tune.logger import TBXLoggerCallback

        log_dir = Path(self.settings.log_dir) / experiment

        class TrialsToTensorBoard(TBXLoggerCallback):
            """Tune's TensorBoard logger, writing under ``tracking.log_dir`` instead of each trial's Tune folder."""

            def log_trial_start(self, trial):
                if trial in self._trial_writer:
                    self._trial_writer[trial].close()
                self._trial_writer[trial] = self._summary_writer_cls(str(log_dir / str(trial)), flush_secs=30)
                self._trial_result[trial] = {}

        return [TrialsToTensorBoard()]


class _TensorBoardRun(RunLog):
    def __init__(self, writer):
        self.writer, self.last_step = writer, 0

    def round(self, record: Mapping[str, Any]) -> None:
        self.last_step = round_step(record)
        for name, value in round_scalars(record).items():
            split, _, metric = name.partition("_")
            self.writer.add_scalar(f"{split}/{metric}", value, self.last_step)
        self.writer.flush()

    def finish(self, summary, run_dir: Path) -> None:
        for name, value in final_scalars(summary).items():
            self.writer.add_scalar(f"final/{name.removeprefix('final_')}", value, self.last_step)
        self.writer.close()

    def fail(self, status: str) -> None:
        self.writer.close()
