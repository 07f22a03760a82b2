"""After an experiment's rounds: what the driver hands back, the privacy audit, and the run's summary.

The same for every runner (:func:`~fedray.federation.experiment.run_experiment` over Ray,
:func:`~fedray.federation.experiment.run_in_process`): :func:`collect` asks the driver for the models it exports,
the round it chose on validation and the ledger of the steps each hospital took; :func:`audit` runs the auditor
task where the runner says (over Ray, in the driver's freed actor: the only process that sees members);
:func:`summarise` builds the :class:`~fedray.results.summary.RunSummary` once, withholding every data field that no
output release of the ledger covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedray.data.registry import dataset
from fedray.federation.driver_proxy import DriverProxy
from fedray.results.provenance import provenance
from fedray.results.summary import DataSummary, RunSummary
from fedray.results.timing import Stopwatch

if TYPE_CHECKING:  # annotations only: the runners' module imports this one
    from fedray.federation.experiment import Prepared


@dataclass
class Collected:
    """What the driver hands back after the rounds."""

    final_params: list[dict]
    best_params: list[dict]
    best_round: int  # chosen once, by the driver, on validation
    validation_choices: dict  # the config values the driver chose on validation before the rounds
    ledger: dict  # from the steps each hospital actually took
    observer_reports: dict


def collect(prep: Prepared, driver: DriverProxy) -> Collected:
    final_params, best_params = driver.exported_params()
    return Collected(final_params, best_params, driver.best_round(), driver.validation_choices(),
                     prep.privacy.ledger(driver.hospital_privacy_states()), driver.observer_reports())


def audit(prep: Prepared, collected: Collected, driver_res: dict, *, run: Callable) -> dict | None:
    """``summary["audit"]`` (None when ``audit.enabled`` is false); ``run(task, kwargs)`` runs the auditor task."""
    if not prep.cfg.audit.enabled:
        return None
    # scipy and dp_accounting (about 1 s): imported by the runs that audit
    from fedray.audit.auditor import audit_inputs, audit_summary, run_auditor

    auditor = run(run_auditor, audit_inputs(prep, collected.final_params, driver_res,
                                            validation_choices=collected.validation_choices))
    return audit_summary(prep.cfg, prep.audit, auditor, collected.observer_reports, ledger=collected.ledger,
                         num_records=sum(len(s) for s in prep.training_shards))


def summarise(prep: Prepared, rounds, collected: Collected, clock: Stopwatch, driver_res, hospital_res, *,
               audit: dict | None,
               feature_cache: dict, placement: dict, resumed_after_round: int | None, device: str) -> RunSummary:
    """The run's summary, built here once: a data field no output release of the ledger covers is withheld (None),
    and the run-directory writer checks every other field against the releases."""
    cfg, dealt, outputs = prep.cfg, prep.dealt, prep.privacy.output_releases()
    final = rounds[-1]
    best = next(r for r in rounds if r["round"] == collected.best_round)  # the driver's choice
    scalar = lambda m: {k: v for k, v in m.items() if not isinstance(v, list)}  # noqa: E731
    gpu_share = driver_res["num_gpus"] + hospital_res["num_gpus"] * len(dealt.train_shards)  # all reserved
    data = {
        "source": dealt.splits.source,
        "licence": dataset(cfg.data.name).licence,
        "classes": list(dealt.splits.train.class_names),
        "train": len(dealt.splits.train), "val": len(dealt.splits.val), "test": len(dealt.splits.test),
        "hospital_train_sizes": [len(s) for s in dealt.train_shards],
        "hospital_sites": list(dealt.hospital_sites) or None,
        "dropped_by_partition": dealt.dropped,
        "skipped_files": list(dealt.splits.skipped_files),
        "without_consent": dealt.splits.without_consent,
        "fold": list(dealt.splits.fold) if dealt.splits.fold else None,
    }
    return RunSummary(
        mode=cfg.mode,
        model=cfg.model.name,
        data=DataSummary(**{key: value for key, value in data.items() if outputs.covers(f"summary.data.{key}")}),
        rounds=len(rounds),
        final_test=scalar(final["test"]),
        final_val=scalar(final["val"]),
        final_test_confusion_matrix=final["test"].get("confusion_matrix"),
        best_val_round=best["round"],
        best_val_round_test=scalar(best["test"]),
        validation_choices=collected.validation_choices or None,
        privacy=collected.ledger,
        hospital_restarts=final["restarts"],
        wall_seconds=clock.total(),
        seconds_per_round=float(np.mean([r["round_seconds"] for r in rounds])),
        gpu_hours=clock.total() / 3600 * gpu_share,
        timing={phase: round(value, 3) for phase, value in clock.seconds.items()},
        audit=audit,
        feature_cache=feature_cache or None,
        placement=placement,
        resumed_after_round=resumed_after_round,
        provenance=provenance(device=device),
    )
