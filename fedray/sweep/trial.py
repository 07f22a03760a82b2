"""One Ray Tune trial = one complete federated experiment inside the trial's placement group.

Every ``tune.checkpoint_every`` rounds the trial reports a Tune ``Checkpoint``
holding its :class:`~fedray.federation.study.StudyState` (models, the
hospitals' accountant steps, the server optimizer's state, the fitted input
map); so does the last round of every cross-validation fold (the state at
the fold boundary) and the final report (the finished study). A resumed
sweep restarts an unfinished trial from its last checkpoint, not from round
1, with the same ledger; a trial resumed from its final checkpoint reruns
nothing and reports the same result again.

The result. A trial writes its run directory (:func:`fedray.results.write_run`)
and its final report names it (``run_dir``); that report's checkpoint holds
a copy of the run's record (config, summary, rounds), so the sweep reads
each trial's :class:`~fedray.results.RunRecord` through Tune's storage
(:func:`finished_run`), on a laptop or from a trial on another node.

Resume and release. A resumed trial reruns the rounds after its last
checkpoint, and under DP a rerun round draws fresh noise: a second release
of the same records. If the first run had already reported that round (its
metrics reach Tune's results, the live table and the frontier), both
releases would be out while the ledger counts one. So under a DP claim (a
mechanism other than ``none`` with a finite ε) every reported round is
checkpointed: the trial runs with ``tune.checkpoint_every = 1`` (the
resolved config it writes says so), and :func:`run_trial` never reports a
round without its checkpoint. A crash can then only lose rounds nobody saw,
and their rerun is the only release of them. The alternative, charging the
ledger for every round released twice, was not taken: it would make a run's ε
depend on when its machine failed, and a checkpoint per round costs only
Tune's time to write it: the sweep keeps a trial's latest two
(:mod:`fedray.sweep.runner`), so its storage holds two pickles of the models,
not one a round (checkpoints are as sensitive as the data). Without a DP claim the configured interval stands;
a rerun round then releases nothing private, it only repeats a report.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import shutil
import tempfile
from pathlib import Path

from ray import tune
from ray.util import get_current_placement_group

from fedray.config import replace
from fedray.federation.study import StudyState, run_study
from fedray.privacy.mechanisms import claims_dp
from fedray.results import RunRecord, read_run, write_run
from fedray.results.run_dir import RECORD_FILES
from fedray.sweep.resources import DRIVER_BUNDLE
from fedray.sweep.space import trial_config
from fedray.tracking import privacy_scalars, round_scalars, summary_scalars

CHECKPOINT_FILE = "study.pkl"
RUN_RECORD = "run"  # the final checkpoint's copy of the run directory's record (read_run)
RUN_DIR = "run_dir"  # the final report's metric: where the trial wrote its run directory


def round_metrics(record: dict) -> dict:
    """The flat per-round metrics reported to Tune (shown live, kept in each trial's history, and a tracker's)."""
    return {"round": record["round"], "total_rounds": record["total_rounds"], "round_seconds": record["round_seconds"],
            "fold": record.get("fold", 0), **round_scalars(record)}


def run_trial(params: dict, *, overrides: list[str], paths: dict, out_dir: str) -> None:
    """Tune's function trainable: compose the trial's config, run it, report every round and the summary.

    Under a DP claim every report carries a checkpoint (module docstring).
    """
    # A DP trial checkpoints every round; Tune's INFO line for each would bury the progress table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(overrides, params, paths, run_dir=Path(out_dir) / "trials" / trial_id)
    private = claims_dp(cfg)
    if private:
        cfg = replace(cfg, **{"tune.checkpoint_every": 1})
    folds = cfg.cv.folds
    resume = _last_checkpoint()
    finished: list[StudyState] = [resume] if resume is not None and resume.fold >= folds else []

    def on_round(record: dict) -> None:
        # Only rounds between checkpoints come here. Under DP there are none; should one come, it is
        # not reported: a resume would rerun it with fresh noise.
        if not private:
            tune.report(round_metrics(record))

    def on_checkpoint(record: dict, state: StudyState) -> None:
        if state.fold >= folds:
            finished.append(state)  # the finished study: the final report below carries it
            return
        with _checkpoint(state) as checkpoint:
            tune.report(round_metrics(record), checkpoint=checkpoint)

    result = run_study(cfg, on_round=on_round, run_dir=Path(cfg.run_dir), resume=resume,
                       on_checkpoint=on_checkpoint, placement_group=get_current_placement_group(),
                       bundle_offset=DRIVER_BUNDLE)
    summary, run_dir = result.summary, Path(cfg.run_dir)
    write_run(run_dir, resolved_cfg=cfg, rounds=result.rounds, summary=summary,
              models=(result.final_params, result.best_params))
    # The last report names the trial's run directory and its checkpoint carries a copy of the run's record
    # (config, summary, rounds), so the frontier reads what the run wrote, wherever the trial ran (Tune moves
    # checkpoints to its storage), also after a resume, without rerunning finished trials. Its test metrics are
    # the summary's: under k-fold CV the mean over folds, not the last fold's.
    final = summary_scalars(summary)
    # Its checkpoint is also the finished study: a trial restarted after this report (killed before Tune
    # marked it done) resumes to the same result and reports it again, without rerunning a round.
    with _checkpoint(finished[-1], run_dir=run_dir) as checkpoint:
        tune.report({**round_metrics(result.rounds[-1]), **final, **privacy_scalars(summary),
                     "epsilon_spent": _finite_or_none(summary.epsilon), RUN_DIR: str(run_dir)}, checkpoint=checkpoint)


def finished_run(result) -> RunRecord | None:
    """A Tune result's finished run, read from its last checkpoint; None unless the trial finished."""
    if result.error is not None or RUN_DIR not in (result.metrics or {}) or result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as folder:
        return read_run(Path(folder) / RUN_RECORD)


@contextlib.contextmanager
def _checkpoint(state: StudyState, *, run_dir: Path | None = None):
    """A Tune checkpoint of ``state`` (with a copy of ``run_dir``'s record), valid inside the block (Tune
    persists it when it is reported)."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / CHECKPOINT_FILE).write_bytes(pickle.dumps(state))
        if run_dir is not None:
            (Path(folder) / RUN_RECORD).mkdir()
            for name in RECORD_FILES:
                shutil.copy2(run_dir / name, Path(folder) / RUN_RECORD / name)
        yield tune.Checkpoint.from_directory(folder)


def _last_checkpoint() -> StudyState | None:
    """The state this trial last checkpointed, when Tune restarts it (a resumed sweep), else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return pickle.loads((Path(folder) / CHECKPOINT_FILE).read_bytes())


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None
