"""The run's results contract: one typed :class:`RunSummary`, built once, read by every consumer.

A finished experiment's summary is built once, by the experiment
(:func:`fedray.federation.experiment.run_experiment`); k folds' summaries are
combined once (:func:`fedray.results.crossval.combine_fold_summaries`). The
same object is then written (:func:`fedray.results.run_dir.write_run`, as
``summary.json``), printed by the CLI, reported by a sweep trial and read by
the frontier (:mod:`fedray.sweep.frontier`), which reads the trial's run
directory back through :func:`fedray.results.run_dir.read_run`.

Shape. ``summary.json`` is :meth:`RunSummary.to_dict` with ``"status":
"completed"`` first; the frontier's columns name paths in that shape
(``docs/frontier.md``). The blocks other modules own stay their owners'
mappings: ``privacy`` is the run's ledger (:mod:`fedray.privacy.ledger`),
``audit`` the audit's report (:func:`fedray.audit.auditor.audit_summary`).
:class:`DataSummary` holds what the run may say about its data; a field no
output release of the ledger covers is None, i.e. withheld, and is left out
of the published shape.

JSON has no ∞ or NaN: they are written as the strings ``"inf"``, ``"-inf"``
and ``"nan"`` (the file stays standard JSON) and read back as floats.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPLETED = "completed"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class Fields(Mapping):
    """A read-only view of one of the summary's JSON blocks whose keys read as attributes too: ``ledger.epsilon``
    is ``ledger["epsilon"]``; nested blocks (and lists of them) come back as views of their own."""

    def __init__(self, block: Mapping[str, Any]):
        object.__setattr__(self, "_block", block)

    def __getitem__(self, key: str) -> Any:
        return _view(self._block[key])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never a field: copy and pickle probe these before _block exists
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no field {name!r}: the fields are {', '.join(self._block)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a summary's fields are read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._block)

    def __len__(self) -> int:
        return len(self._block)

    def __repr__(self) -> str:
        return f"Fields({dict(self._block)!r})"


def _view(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Fields(value)
    if isinstance(value, list):
        return [_view(item) for item in value]
    return value


@dataclass(frozen=True)
class DataSummary:
    """What the run publishes about its data (None: withheld, or not applicable)."""

    source: str | None = None
    licence: str | None = None
    classes: list[str] | None = None
    train: int | None = None
    val: int | None = None
    test: int | None = None
    hospital_train_sizes: list[int] | None = None
    hospital_sites: list[str] | None = None  # each hospital's site under a natural partition
    dropped_by_partition: int | None = None
    skipped_files: list[str] | None = None
    without_consent: int | None = None
    fold: list[int] | None = None  # (this fold, k) under k-fold CV
    per_fold_sizes: list[dict] | None = None  # the combined CV summary: each fold's train/val/test sizes


@dataclass(frozen=True)
class RunSummary:
    """One finished run (or k folds combined): its held-out metrics, its ledger, its audit and its costs.

    ``final_*`` are the last round's global-model metrics (under ``mode=local``
    the mean over the hospitals' models; under k-fold CV the mean over folds,
    with ``final_test_std`` and ``cv`` beside them); ``best_val_round`` is the
    round the driver chose on validation (None once folds are combined, each
    fold chose its own) and ``best_val_round_test`` that round's test metrics;
    ``validation_choices`` the config values it chose on validation besides
    the round, as dotted overrides (the prototype head's shrinkage; None once
    folds are combined).
    """

    mode: str
    model: str
    data: DataSummary
    rounds: int
    final_test: dict[str, Any]
    final_val: dict[str, Any]
    final_test_confusion_matrix: list | None
    best_val_round: int | None
    best_val_round_test: dict[str, Any]
    privacy: dict[str, Any]  # the run's ledger
    hospital_restarts: int
    wall_seconds: float  # a CLI run: from the process's start to its results; a sweep trial: the trial's experiment
    seconds_per_round: float
    gpu_hours: float
    timing: dict[str, float] | None = None  # wall_seconds broken down by phase (results.timing.PHASES)
    audit: dict[str, Any] | None = None
    feature_cache: dict | None = None
    placement: dict | None = None
    resumed_after_round: int | None = None
    provenance: dict | None = None  # fedray's version and commit, the libraries, the device (results.provenance)
    final_test_std: dict[str, float] | None = None
    cv: dict[str, Any] | None = None
    validation_choices: dict[str, Any] | None = None

    @property
    def epsilon(self) -> float:
        """The ledger's ε (∞ for a run that makes no DP claim)."""
        return float(self.privacy["epsilon"])

    @property
    def test(self) -> Fields:
        """``final_test`` by attribute: ``summary.test.balanced_accuracy``."""
        return Fields(self.final_test)

    @property
    def val(self) -> Fields:
        """``final_val`` by attribute: ``summary.val.balanced_accuracy``."""
        return Fields(self.final_val)

    @property
    def folds(self) -> int:
        return int(self.cv["folds"]) if self.cv else 1

    def to_dict(self) -> dict:
        """The published shape: ``status`` first, then every field; ``data`` without its withheld (None) fields."""
        published = dataclasses.asdict(self)
        published["data"] = {k: v for k, v in published["data"].items() if v is not None}
        return {"status": COMPLETED, **published}

    @classmethod
    def from_dict(cls, published: dict) -> RunSummary:
        """The inverse of :meth:`to_dict`, also for a ``summary.json`` read back (∞ and NaN as strings)."""
        fields = revive(dict(published))
        status = fields.pop("status", COMPLETED)
        if status != COMPLETED:
            raise ValueError(f"a {status} run has no summary: {fields.get('error') or fields.get('signal')}")
        return cls(**{**fields, "data": DataSummary(**(fields.get("data") or {}))})

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), indent=2)

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def jsonable(value):
    """JSON has no inf/nan: write them as strings so the file stays standard JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def revive(value):
    """:func:`jsonable`'s inverse: the strings it wrote for ∞ and NaN are floats again."""
    if isinstance(value, dict):
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value
