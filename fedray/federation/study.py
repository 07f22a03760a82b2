"""A study: one federated experiment, or one per fold under k-fold cross-validation (``cv.folds`` = k > 1).

Each fold is a complete, independent :func:`run_experiment` (its own split,
partition, hospitals, driver and audit); the fold summaries are combined by
:func:`fedray.results.crossval.combine_fold_summaries` (mean ± std).

A study can be checkpointed and resumed (:class:`StudyState`): the folds it
finished, and the experiment state of the fold in progress (None at a fold
boundary, when the next fold starts afresh).

Checkpoints. With ``on_checkpoint``, the rounds :func:`run_experiment` hands
to it (every ``tune.checkpoint_every``-th round before the fold's last) come
with the study's state; so does the last round of every fold, held back from
``on_round`` until the fold is finished and then handed to ``on_checkpoint``
with the state at the fold boundary (``experiment`` None, the fold among
``done``). After the last fold that state is the finished study (``fold`` =
``cv.folds``): resuming it reruns nothing and returns the same result. So
the last round of a fold is never reported without a state that skips it:
run_experiment gives no checkpoint at a fold's last round, and rerunning a
reported round under DP would release its records a second time with fresh
noise (see :mod:`fedray.sweep.trial`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedray.config import Config, replace
from fedray.federation.experiment import ExperimentResult, ExperimentState, Prepared, run_experiment
from fedray.results import write_run
from fedray.results.crossval import combine_fold_summaries


@dataclass
class StudyState:
    """A study stopped inside fold ``fold``: the folds before it, finished, and that fold's experiment state.

    ``experiment`` is None when fold ``fold`` has not started (a fold
    boundary); ``fold == cv.folds`` with every fold in ``done`` is a finished study.
    """

    fold: int
    done: list[ExperimentResult]  # without their data (``dealt=None``)
    experiment: ExperimentState | None


def run_study(
    cfg: Config,
    *,
    prepared: Prepared | None = None,
    on_round: Callable[[dict], None] | None = None,
    run_dir: Path | None = None,
    resume: StudyState | None = None,
    on_checkpoint: Callable[[dict, StudyState], None] | None = None,
    runner: Callable[..., ExperimentResult] | None = None,
    **placement,
) -> ExperimentResult:
    """Run ``cfg`` once, or once per fold; with ``run_dir``, each fold's run is written to ``run_dir/fold_<i>``.

    ``prepared`` (a fold-0 preparation, e.g. from the caller's input checks) is
    reused for the first fold. Each fold runs on ``runner``: :func:`run_experiment` over Ray (None), or
    :func:`~fedray.federation.experiment.run_in_process`. ``placement`` is passed on to it;
    ``resume`` and ``on_checkpoint`` as there, with the study's state; with
    ``on_checkpoint``, each fold's last round goes to it, with the state after
    that fold, instead of to ``on_round`` (module docstring).
    """
    folds = cfg.cv.folds
    done: list[ExperimentResult] = list(resume.done) if resume else []
    for fold in range(len(done), folds):
        fold_cfg = replace(cfg, **{"cv.fold": fold}) if folds > 1 else cfg

        def tagged(record: dict, fold: int = fold) -> None:
            if folds > 1:
                record["fold"] = fold
            if on_checkpoint is not None and record["round"] == record["total_rounds"]:
                return  # the fold's last round: reported below, with the state after the fold
            if on_round is not None:
                on_round(record)

        def checkpoint(record: dict, state: ExperimentState, fold: int = fold) -> None:
            if folds > 1:
                record["fold"] = fold
            on_checkpoint(record, StudyState(fold, _without_data(done), state))

        result = (runner or run_experiment)(
            fold_cfg, prepared=prepared if fold == 0 and resume is None else None, on_round=tagged,
            resume=resume.experiment if resume is not None and fold == resume.fold else None,
            on_checkpoint=checkpoint if on_checkpoint is not None else None, **placement)
        if run_dir is not None and folds > 1:
            write_run(run_dir / f"fold_{fold}", resolved_cfg=fold_cfg, rounds=result.rounds, summary=result.summary,
                      models=(result.final_params, result.best_params))
        done.append(result)
        if on_checkpoint is not None:
            on_checkpoint(result.rounds[-1], StudyState(fold + 1, _without_data(done), None))
    if folds == 1:
        return done[0]
    return ExperimentResult(
        rounds=[record for result in done for record in result.rounds],
        summary=combine_fold_summaries([result.summary for result in done]),
        final_params=done[0].final_params,
        best_params=done[0].best_params,
        dealt=done[0].dealt,
    )


def _without_data(done: list[ExperimentResult]) -> list[ExperimentResult]:
    """The finished folds as a checkpoint keeps them: without their data."""
    return [dataclasses.replace(result, dealt=None) for result in done]
