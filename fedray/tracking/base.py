"""What every tracker does (:class:`Tracker`, :class:`RunLog`) and the scalars each one logs.

The base classes track nothing: they are ``tracking=none``. The scalars are what the run already publishes
(:mod:`fedray.tracking`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedray.metrics import SCALAR_METRICS

# The run directory's files a tracker keeps (fedray/results/run_dir.py writes them); checkpoints never.
RUN_FILES = ("config.yaml", "summary.json", "rounds.parquet", "learning_curve.png", "final_model.pt",
             "best_val_model.pt")


class RunLog:
    """One run's log in a tracker; this one keeps nothing."""

    def round(self, record: Mapping[str, Any]) -> None:
        """A round ended: ``record`` as the run's ``on_round`` receives it."""

    def finish(self, summary, run_dir: Path) -> None:
        """The run ended and wrote ``run_dir``; ``summary`` is its :class:`~fedray.results.RunSummary`."""

    def fail(self, status: str) -> None:
        """The run ended without results: ``status`` is ``failed`` or ``interrupted``."""


class Tracker:
    """A tracking back end; this one (``tracking=none``) tracks nothing."""

    def __init__(self, settings):
        self.settings = settings

    def check(self) -> None:
        """Refuse, before Ray starts, a tracker that cannot work here (one :class:`~fedray.errors.FedrayError`)."""

    def open_run(self, cfg, *, experiment: str, run_name: str) -> RunLog:
        return RunLog()

    def tune_callbacks(self, *, experiment: str, run_dir_key: str) -> list:
        """Tune callbacks logging a sweep's trials (each trial's last report names its run directory under
        ``run_dir_key``)."""
        return []

    def after_sweep(self, *, experiment: str, files: Mapping[str, str]) -> None:
        """The sweep wrote its frontier ``files`` (:func:`fedray.sweep.frontier.write_frontier`'s paths)."""


def round_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A round's global validation and test metrics, flat: ``val_balanced_accuracy``, ``test_auc``, ... (any
    mapping of ``val`` and ``test`` metrics: :func:`summary_scalars` passes a summary's final ones)."""
    return {f"{split}_{name}": float(value) for split in ("val", "test")
            for name, value in (record.get(split) or {}).items() if name in SCALAR_METRICS}


def round_step(record: Mapping[str, Any]) -> int:
    """A round's step on a tracker's axis: rounds of later cross-validation folds follow the earlier folds'."""
    return int(record.get("fold", 0)) * int(record["total_rounds"]) + int(record["round"])


def privacy_scalars(summary) -> dict[str, float]:
    """The ledger's ε and δ and the audit's lower bounds, as flat finite scalars (a non-private run has no ε)."""
    from fedray.audit.columns import bound_values  # pyarrow: not with the config, which imports this package

    scalars = {"epsilon": summary.epsilon, "delta": summary.privacy.get("delta"),
               **{f"audit_{name}": value for name, value in bound_values(summary.audit).items()}}
    return {name: float(value) for name, value in scalars.items()
            if isinstance(value, (int, float)) and math.isfinite(value)}


def summary_scalars(summary) -> dict[str, float]:
    """The finished run's final validation and test metrics, named as a round's (``val_*``, ``test_*``); under
    k-fold CV the means over folds."""
    return round_scalars({"val": summary.final_val, "test": summary.final_test})


def final_scalars(summary) -> dict[str, float]:
    """:func:`summary_scalars` as ``final_val_*``, ``final_test_*`` (the finite ones), and :func:`privacy_scalars`."""
    finals = {f"final_{name}": value for name, value in summary_scalars(summary).items() if math.isfinite(value)}
    return {**finals, **privacy_scalars(summary)}
