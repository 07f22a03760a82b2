"""A study: one federated experiment, or one per fold under k-fold cross-validation (``cv.folds`` = k > 1).

Each fold is a complete, independent :func:`run_experiment` (its own split,
partition, hospitals, driver and audit); the fold summaries are combined by
:func:`fedray.results.crossval.combine_fold_summaries` (mean ± std).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedray.config import Config, replace
from fedray.federation.experiment import ExperimentResult, Prepared, run_experiment
from fedray.results import write_run
from fedray.results.crossval import combine_fold_summaries


def run_study(
    cfg: Config,
    *,
    prepared: Prepared | None = None,
    on_round: Callable[[dict], None] | None = None,
    run_dir: Path | None = None,
    **placement,
) -> ExperimentResult:
    """Run ``cfg`` once, or once per fold; with ``run_dir``, each fold's run is written to ``run_dir/fold_<i>``.

    ``prepared`` (a fold-0 preparation, e.g. from the caller's input checks) is
    reused for the first fold. ``placement`` is passed on to :func:`run_experiment`.
    """
    folds = cfg.cv.folds
    if folds == 1:
        return run_experiment(cfg, prepared=prepared, on_round=on_round, **placement)
    results = []
    for fold in range(folds):
        fold_cfg = replace(cfg, **{"cv.fold": fold})

        def tagged(record: dict, fold: int = fold) -> None:
            record["fold"] = fold
            if on_round is not None:
                on_round(record)

        result = run_experiment(fold_cfg, prepared=prepared if fold == 0 else None, on_round=tagged, **placement)
        if run_dir is not None:
            write_run(run_dir / f"fold_{fold}", resolved_cfg=fold_cfg, rounds=result.rounds, summary=result.summary,
                      models=(result.final_params, result.best_params))
        results.append(result)
    return ExperimentResult(
        rounds=[record for result in results for record in result.rounds],
        summary=combine_fold_summaries([result.summary for result in results]),
        final_params=results[0].final_params,
        best_params=results[0].best_params,
        dealt=results[0].dealt,
    )
