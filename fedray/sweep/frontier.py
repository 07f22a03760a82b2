"""The sweep's privacy-utility frontier: one row per Tune trial, written as Parquet with a plot and a report.

``frontier_frame(records, axes=...)`` flattens each trial record (its swept
params and its run read back, :func:`fedray.results.read_run`: the resolved
config, the typed :class:`~fedray.results.RunSummary` and the run's
``rounds.parquet``) into one typed row; the columns are
``FRONTIER_SCHEMA`` with one ``param_<axis>`` column per swept axis inserted
after ``error`` (docs/frontier.md lists every column with its unit).
``write_frontier`` writes ``frontier.parquet``, ``trial_rounds.parquet`` (one row per trial and round;
a run directory's own ``rounds.parquet`` is per hospital, :mod:`fedray.results.run_dir`),
``frontier.png``, ``learning_curves.png``, ``tables.md`` and ``report.md``,
each to a temporary name renamed into place, the report last: a sweep
directory with a ``report.md`` has the whole frontier.

Summaries written before k-fold cross-validation, consent filtering or the
attack's std over folds lack those keys; their columns are then null. The
audit's block of columns is declared by :mod:`fedray.audit.columns`, which
says what each one holds.

Version 5 adds the guarantee and the selection. ``dp_guarantee`` says whether
a private trial's ε is a guarantee: False when its noise was reproducible
from the config (``privacy.reproducible_noise=true``: a simulation), read from
the ledger's ``guarantee`` flag or else its ``noise`` line (``dp_noise``).
``selected`` marks the rows the sweep chose (the best per target ε on the
utility; under a private selection the one released trial) and the
``selection_*`` columns say what that choice cost on the same private data
(:mod:`fedray.sweep.selection`): ε and δ, the trials compared, the rule,
whether it is a guarantee, and ``selection_scope``. Version 6 replaces
``dp_event`` (a DP-SGD schedule) by ``dp_rdp``, the ledger's RDP curve as
JSON whatever the mechanism, from which ``tables.md`` composes trials from
the Parquet alone. Version 7 adds the audit's f-DP bounds and its ceilings
(:mod:`fedray.audit.columns`). Version 8 adds the audit's step-level
view (:mod:`fedray.audit.step_view`) and ``audit_p_value``, each trial's
audits as one p-value, which the
report corrects over the sweep (:mod:`fedray.audit.family`). Older frontiers
read back with the columns they lack null (no ``dp_rdp``: basic composition
only). Version 9 adds the federation's sampling beside ``hospitals`` (K):
``clients_per_round``, the expected participants per round m
(``fl.clients_per_round``, K where it is null: every hospital), and
``client_sampling_rate``, q = m/K, each hospital's chance of taking part in a
round (:func:`fedray.strategies.sampling.client_sampling_rate`), on which
client-level DP's amplification by sampling rests.

``write_frontier`` is a privacy boundary like the run directory: a trial
whose summary carries a field its own ledger does not declare
(:func:`fedray.results.run_dir.check_outputs`) stops the frontier before any
file is written. (Its rounds are the run's ``rounds.parquet``, which the
run-directory writer checked before writing it.)

Values missing from a record (a failed trial, an audit that was not run) are
null/NaN, never guessed. The one derived default is a noise multiplier of 0.0
for a non-private trial, which adds no noise by construction.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedray.audit.columns import COLUMNS as AUDIT_COLUMNS, derived_values
from fedray.metrics import SCALAR_METRICS
from fedray.results.run_dir import check_outputs
from fedray.strategies.sampling import client_sampling_rate
from fedray.sweep.pareto import mark_pareto
from fedray.sweep.plots import plot_frontier, plot_learning_curves
from fedray.sweep.report import DEFAULT_AUDIT_CONFIDENCE, DEFAULT_UTILITY, HEADLINE_METRICS, PARAM_PREFIX, \
    best_per_target_epsilon, federation_keys, render_report
from fedray.sweep.selection import (SCOPES, SELECTION_COLUMNS, PrivateSelection, combined_guarantee, curve_json,
                                    ledger_curve, with_selection)
from fedray.sweep.tables import render_tables

# 3: validation metrics beside test; strategy, secure aggregation. 4: the audit's one-run bounds, flags.
# 5: dp_guarantee, dp_noise, dp_event; selected and the selection_* columns. 6: dp_rdp replaces dp_event.
# 7: the audit's f-DP bounds and ceilings. 8: the audit's step-level view, audit_p_value.
# 9: clients_per_round and client_sampling_rate beside hospitals.
SCHEMA_VERSION = 9

_FINAL_TEST = ("summary", "final_test")
_FINAL_TEST_STD = ("summary", "final_test_std")
_AUDIT = ("summary", "audit")

# (column, Arrow type, where the value lives in {"config": ..., "summary": ...}; None: set by this module).
# Each block of std-over-folds columns follows the block of its means, so v1's means keep their relative order.
_COLUMNS = [
    ("schema_version", pa.int32(), None),
    ("sweep", pa.string(), None),
    ("trial_id", pa.string(), None),
    ("status", pa.string(), None),
    ("error", pa.string(), None),
    ("data", pa.string(), ("config", "data", "name")),
    ("image_size", pa.int64(), ("config", "data", "image_size")),
    ("records_without_consent", pa.int64(), ("summary", "data", "without_consent")),
    ("partition", pa.string(), ("config", "fl", "partition", "scheme")),
    ("alpha", pa.float64(), ("config", "fl", "partition", "alpha")),
    ("rounds", pa.int64(), ("config", "fl", "rounds")),
    ("local_epochs", pa.int64(), ("config", "fl", "local_epochs")),
    ("hospitals", pa.int64(), ("config", "fl", "num_hospitals")),
    ("clients_per_round", pa.int64(), None),
    ("client_sampling_rate", pa.float64(), None),
    ("strategy", pa.string(), ("config", "strategy", "name")),
    ("secure_aggregation", pa.bool_(), ("config", "fl", "secure_aggregation")),
    ("cv_folds", pa.int64(), ("summary", "cv", "folds")),
    ("seed", pa.int64(), ("config", "seed")),
    ("mode", pa.string(), ("config", "mode")),
    ("backbone", pa.string(), ("config", "model", "name")),
    ("lr", pa.float64(), ("config", "train", "lr")),
    ("batch_size", pa.int64(), ("config", "train", "batch_size")),
    *((f"test_{m}", pa.float64(), (*_FINAL_TEST, m)) for m in HEADLINE_METRICS),
    ("test_loss", pa.float64(), (*_FINAL_TEST, "loss")),
    *((f"test_{m}_std", pa.float64(), (*_FINAL_TEST_STD, m)) for m in HEADLINE_METRICS),
    *((f"val_{m}", pa.float64(), ("summary", "final_val", m)) for m in HEADLINE_METRICS),
    ("best_val_round", pa.int64(), ("summary", "best_val_round")),
    ("best_val_test_balanced_accuracy", pa.float64(), ("summary", "best_val_round_test", "balanced_accuracy")),
    ("mechanism", pa.string(), ("summary", "privacy", "mechanism")),
    ("target_epsilon", pa.float64(), ("summary", "privacy", "target_epsilon")),
    ("epsilon_spent", pa.float64(), ("summary", "privacy", "epsilon")),
    ("delta", pa.float64(), ("summary", "privacy", "delta")),
    ("privacy_unit", pa.string(), ("summary", "privacy", "unit")),
    ("noise_multiplier", pa.float64(), None),
    ("accountant", pa.string(), None),
    ("dp_guarantee", pa.bool_(), None),
    ("dp_noise", pa.string(), ("summary", "privacy", "noise")),
    ("dp_rdp", pa.string(), None),
    # the audit's block (fedray.audit.columns): its paths lie inside summary["audit"]
    *((name, type_, None if path is None else (*_AUDIT, *path)) for name, type_, path in AUDIT_COLUMNS),
    ("wall_seconds", pa.float64(), ("summary", "wall_seconds")),
    ("gpu_hours", pa.float64(), ("summary", "gpu_hours")),
    ("seconds_per_round", pa.float64(), ("summary", "seconds_per_round")),
    ("pareto_overall", pa.bool_(), None),
    ("pareto_per_backbone", pa.bool_(), None),
    ("selected", pa.bool_(), None),
    ("selection_scope", pa.string(), None),
    ("selection_trials", pa.int64(), None),
    ("selection_epsilon", pa.float64(), None),
    ("selection_delta", pa.float64(), None),
    ("selection_rule", pa.string(), None),
    ("selection_dp_guarantee", pa.bool_(), None),
]
# A summary without a "cv" block still ran with the folds its config asked for.
_FALLBACKS = {"cv_folds": ("config", "cv", "folds")}
_REQUIRED = {"schema_version", "trial_id", "status", "pareto_overall", "pareto_per_backbone", "selected"}
_TYPES = {name: type_ for name, type_, _ in _COLUMNS}
FRONTIER_SCHEMA = pa.schema([pa.field(name, type_, nullable=name not in _REQUIRED) for name, type_, _ in _COLUMNS])
_PARAMS_AFTER = "error"
_ROUNDS_FIXED = pa.schema([("trial_id", pa.string()), ("round", pa.int64()), ("round_seconds", pa.float64())])
_FOLD = pa.field("fold", pa.int64())
# Arrow int64 with nulls would become float64 in pandas; nullable Int keeps failed trials' ints integral.
_NULLABLE_INTS = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}.get


def frontier_frame(
    records: list[dict], *, axes: list[str], sweep_name: str | None = None, utility: str = DEFAULT_UTILITY,
    scope: str = "target_epsilon", private: PrivateSelection | None = None,
) -> pd.DataFrame:
    """One typed row per trial record; Pareto flags computed on ``utility`` against ``epsilon_spent``.

    The chosen rows (``selected``) and what choosing them cost: the grid
    composition over the trials compared (``scope``: ``target_epsilon`` for
    grid or random search, ``sweep`` for adaptive search), or, under a
    ``private`` selection, its Papernot-Steinke ε on the one released trial.
    """
    _check_utility(utility)
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
    param_fields = _param_fields(records, axes)
    schema = _with_params(FRONTIER_SCHEMA, param_fields, after=_PARAMS_AFTER)
    rows = [{**_trial_row(record, param_fields, sweep_name), "selection_scope": scope} for record in records]
    frame = pa.Table.from_pylist(rows, schema=schema).to_pandas(types_mapper=_NULLABLE_INTS)
    frame["pareto_overall"] = mark_pareto(frame, utility=utility)
    frame["pareto_per_backbone"] = mark_pareto(frame, utility=utility, group="backbone")
    _mark_selection(frame, records, utility=utility, scope=scope, private=private)
    return frame


def _mark_selection(frame: pd.DataFrame, records: list[dict], *, utility: str, scope: str,
                    private: PrivateSelection | None) -> None:
    """Set ``selected`` and the selection columns of the chosen rows, in place."""
    completed = frame[frame["status"] == "completed"]
    scored = completed[completed[utility].notna()]
    if scored.empty:
        return
    if private is None:
        keys = federation_keys(completed)  # one choice per K where the trials ran federations of several sizes
        chosen = with_selection(best_per_target_epsilon(completed, utility, by=keys), completed, utility=utility,
                                by=keys, scope=scope)
    else:  # the one trial released: the best of all K
        chosen = scored.loc[[scored[utility].idxmax()]].copy()
        realized = [ledger_curve(r["summary"].privacy) for r in records if r.get("status") == "completed"]
        selection = private.selection(realized, trials=len(records),
                                      guarantee=combined_guarantee(completed["dp_guarantee"]))
        for column, value in selection.columns().items():
            chosen[column] = [value]
    frame.loc[chosen.index, "selected"] = True
    for column in SELECTION_COLUMNS:
        values = chosen[column]
        for index in chosen.index:
            value = values.at[index]
            frame.at[index, column] = None if value is None or (not isinstance(value, str) and pd.isna(value)) \
                else value


def sweep_rounds_frame(records: list[dict], *, axes: list[str] | None = None) -> pd.DataFrame:
    """One row per trial x round: ``trial_id``, ``param_*``, [``fold``], ``round``, ``round_seconds``, metrics.

    Read from each trial's run ``rounds`` (:func:`fedray.results.run_dir.rounds_frame`'s long format, the one
    flattener of round records): the metrics, ``val_*`` and ``test_*``, are the global model's scalar metrics
    of each evaluated round; a metric one trial lacks, or a round ``fl.eval_every`` skipped, is NaN. ``fold``
    (nullable int) is there only when some trial was cross-validated. ``axes`` defaults to every param name
    found in the records.
    """
    if axes is None:
        axes = list(dict.fromkeys(axis for r in records for axis in (r.get("params") or {})))
    param_fields = _param_fields(records, axes)
    with_rounds = [(r, r["rounds"]) for r in records if r.get("rounds") is not None and len(r["rounds"])]
    folded = any(frame["fold"].max() > 0 for _, frame in with_rounds)
    rows = []
    for record, frame in with_rounds:
        params = {f.name: _param_value(record, f) for f in param_fields}
        trial_folded = frame["fold"].max() > 0
        metrics = _global_metrics(frame)
        for (fold, round_), seconds in frame.groupby(["fold", "round"], sort=False)["round_seconds"].first().items():
            row = {"trial_id": str(record["trial_id"]), **params}
            if folded:
                row["fold"] = int(fold) if trial_folded else None
            row.update(round=int(round_), round_seconds=_cast(seconds, pa.float64()),
                       **metrics.get((int(fold), int(round_)), {}))
            rows.append(row)
    fixed = _with_params(_ROUNDS_FIXED, param_fields, after="trial_id")
    if folded:
        fixed = fixed.insert(fixed.get_field_index("round"), _FOLD)
    metrics = [name for name in dict.fromkeys(k for row in rows for k in row) if name not in fixed.names]
    schema = pa.schema([*fixed, *(pa.field(name, pa.float64()) for name in metrics)])
    return pa.Table.from_pylist(rows, schema=schema).to_pandas(types_mapper=_NULLABLE_INTS)


def _global_metrics(long: pd.DataFrame) -> dict[tuple[int, int], dict[str, float]]:
    """``{(fold, round): {"val_<metric>": ..., "test_<metric>": ...}}`` from a run's "global" rows."""
    names = [m for m in SCALAR_METRICS if m in long.columns]
    found: dict[tuple[int, int], dict[str, float]] = {}
    for _, row in long[long["scope"] == "global"].iterrows():
        found.setdefault((int(row["fold"]), int(row["round"])), {}).update(
            {f"{row['split']}_{m}": float(row[m]) for m in names if pd.notna(row[m])})
    return found


def write_frontier(
    out_dir: Path, records: list[dict], *, axes: list[str], sweep_name: str, utility: str = DEFAULT_UTILITY,
    scope: str = "target_epsilon", private: PrivateSelection | None = None,
) -> dict[str, Path]:
    """Write the sweep's frontier files into ``out_dir`` atomically, ``report.md`` last; return their paths.

    Keys: ``frontier``, ``trial_rounds``, ``plot``, ``learning_curves``, ``tables``, ``report``. ``scope`` and
    ``private`` as in :func:`frontier_frame`.
    """
    _check_utility(utility)
    for record in records:  # a privacy boundary: each trial's fields must be declared by its own ledger
        if record.get("summary") is not None:
            check_outputs(record["summary"].to_dict(), [], models=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = frontier_frame(records, axes=axes, sweep_name=sweep_name, utility=utility, scope=scope, private=private)
    rounds = sweep_rounds_frame(records, axes=axes)
    metadata = {"fedray.schema_version": str(SCHEMA_VERSION), "fedray.sweep": sweep_name, "fedray.utility": utility}
    paths = {name: out_dir / file for name, file in
             (("frontier", "frontier.parquet"), ("trial_rounds", "trial_rounds.parquet"), ("plot", "frontier.png"),
              ("learning_curves", "learning_curves.png"), ("tables", "tables.md"), ("report", "report.md"))}
    rounds_schema = _arrow_schema(rounds, _ROUNDS_FIXED.append(_FOLD))
    _atomic(paths["frontier"], lambda p: _write_parquet(frame, _arrow_schema(frame, FRONTIER_SCHEMA), metadata, p))
    _atomic(paths["trial_rounds"], lambda p: _write_parquet(rounds, rounds_schema, metadata, p))
    # K for the chance line: summary.data.classes is withheld where no release covers it, or trials may differ
    classes = {len(r["summary"].data.classes) for r in records if r.get("summary") and r["summary"].data.classes}
    _atomic(paths["plot"], lambda p: plot_frontier(frame, p, utility=utility, title=f"sweep {sweep_name}",
                                                   num_classes=classes.pop() if len(classes) == 1 else None))
    _atomic(paths["learning_curves"], lambda p: plot_learning_curves(frame, rounds, p, title=f"sweep {sweep_name}"))
    # From the Parquet just written, so tables.md is exactly what `python -m fedray.sweep.tables` regenerates.
    tables = render_tables(pd.read_parquet(paths["frontier"]), utility=utility)
    _atomic(paths["tables"], lambda p: p.write_text(tables, encoding="utf-8"))
    report = render_report(frame, sweep_name=sweep_name, utility=utility, audit_confidence=_audit_confidence(records))
    _atomic(paths["report"], lambda p: p.write_text(report, encoding="utf-8"))
    return paths


def _audit_confidence(records: list[dict]) -> float:
    """The confidence the trials' audits ran at (``audit.confidence``); the strictest where they differ."""
    confidences = [_dig(r.get("config") or {}, ("audit", "confidence")) for r in records]
    return max((float(c) for c in confidences if c is not None), default=DEFAULT_AUDIT_CONFIDENCE)


def _trial_row(record: dict, param_fields: list[pa.Field], sweep_name: str | None) -> dict:
    summary = record.get("summary")
    sources = {"config": record.get("config") or {}, "summary": summary.to_dict() if summary is not None else {}}
    return {
        "schema_version": SCHEMA_VERSION, "sweep": sweep_name, "trial_id": str(record["trial_id"]),
        "status": str(record["status"]), "error": _cast(record.get("error"), pa.string()),
        **{f.name: _param_value(record, f) for f in param_fields},
        **{name: _cast(_lookup(sources, name, path), type_) for name, type_, path in _COLUMNS if path is not None},
        **_sampling_columns(sources["config"].get("fl")),
        **_ledger_columns(sources["summary"].get("privacy")),
        **_guarantee_columns(sources["summary"].get("privacy")),
        **{name: _cast(value, _TYPES[name]) for name, value in derived_values(_dig(sources, _AUDIT)).items()},
        "pareto_overall": False, "pareto_per_backbone": False, "selected": False,
    }


def _sampling_columns(fl: dict | None) -> dict:
    """m, the expected participants per round (K where every hospital takes part), and q = m/K; null without a
    config (a failed trial) or where its ``fl`` lacks the number of hospitals."""
    hospitals = _cast((fl or {}).get("num_hospitals"), pa.int64())
    if hospitals is None:
        return {"clients_per_round": None, "client_sampling_rate": None}
    per_round = _cast(fl.get("clients_per_round"), pa.int64())
    return {"clients_per_round": hospitals if per_round is None else per_round,
            "client_sampling_rate": client_sampling_rate(hospitals, per_round)}


def _guarantee_columns(privacy: dict | None) -> dict:
    """Whether the ε is a DP guarantee, and the trial's RDP curve (JSON) for composing trials.

    ``dp_guarantee`` is the ledger's ``guarantee`` flag when it has one, else
    read from its ``noise`` line: secret noise (True) or noise reproducible
    from the config (False: a simulation). Null for a non-private trial (it
    claims nothing) and for a ledger that says neither.
    """
    from fedray.privacy.randomness import REPRODUCIBLE_DESCRIPTION, SECRET_DESCRIPTION

    if not privacy:
        return {"dp_guarantee": None, "dp_rdp": None}
    guarantee = privacy.get("guarantee")
    if not isinstance(guarantee, bool):
        guarantee = {SECRET_DESCRIPTION: True, REPRODUCIBLE_DESCRIPTION: False}.get(privacy.get("noise"))
    if _cast(privacy.get("epsilon"), pa.float64()) == math.inf:
        guarantee = None
    return {"dp_guarantee": guarantee, "dp_rdp": curve_json(ledger_curve(privacy))}


def _ledger_columns(privacy: dict | None) -> dict:
    """Largest noise multiplier and the accountant(s) over hospitals, from the run's privacy ledger.

    The ledger's per-hospital list is ``hospitals`` (or ``entries`` in older
    summaries). A non-private run (spent epsilon inf, no ledger) added no noise.
    """
    if not privacy:
        return {"noise_multiplier": None, "accountant": None}
    ledger = privacy.get("hospitals") or privacy.get("entries") or []
    noise = _cast(privacy.get("max_noise_multiplier"), pa.float64())
    if noise is None:
        per_hospital = [_cast(h.get("noise_multiplier"), pa.float64()) for h in ledger]
        known = [z for z in per_hospital if z is not None]
        noise = max(known) if known else None
    if noise is None and not ledger and _cast(privacy.get("epsilon"), pa.float64()) == math.inf:
        noise = 0.0
    accountant = privacy.get("accountant")
    if accountant is None and ledger:
        names = sorted({str(h["accountant"]) for h in ledger if h.get("accountant") is not None})
        accountant = "+".join(names) or None
    return {"noise_multiplier": noise, "accountant": _cast(accountant, pa.string())}


def _param_fields(records: list[dict], axes: list[str]) -> list[pa.Field]:
    """float64 for an axis whose every value is a number, string otherwise: one type per axis."""
    fields = []
    for axis in axes:
        values = [(r.get("params") or {}).get(axis) for r in records]
        numeric = all(v is None or _is_number(v) for v in values)
        fields.append(pa.field(PARAM_PREFIX + axis, pa.float64() if numeric else pa.string()))
    return fields


def _param_value(record: dict, field: pa.Field):
    value = (record.get("params") or {}).get(field.name[len(PARAM_PREFIX):])
    return _cast(value, field.type)


def _arrow_schema(frame: pd.DataFrame, fixed: pa.Schema) -> pa.Schema:
    """The Arrow schema of a frame built here: declared columns keep their type, a param column is
    float64 or string as it was built, every other column (a round metric) is float64."""
    def field(column: str) -> pa.Field:
        if column in fixed.names:
            return fixed.field(column)
        numeric = not column.startswith(PARAM_PREFIX) or pd.api.types.is_float_dtype(frame[column])
        return pa.field(column, pa.float64() if numeric else pa.string())
    return pa.schema([field(column) for column in frame.columns])


def _with_params(base: pa.Schema, param_fields: list[pa.Field], *, after: str) -> pa.Schema:
    fields = list(base)
    at = base.get_field_index(after) + 1
    return pa.schema([*fields[:at], *param_fields, *fields[at:]])


def _check_utility(utility: str) -> None:
    numeric = [f.name for f in FRONTIER_SCHEMA if pa.types.is_floating(f.type)]
    if utility not in numeric:
        raise ValueError(f"utility {utility!r} is not a numeric frontier column: use one of {', '.join(numeric)}")


def _lookup(sources: dict, column: str, path: tuple[str, ...]):
    value = _dig(sources, path)
    return _dig(sources, _FALLBACKS[column]) if value is None and column in _FALLBACKS else value


def _dig(sources: dict, path: tuple):
    """The value at ``path`` (dict keys, or an int index into a list such as an interval); None if absent."""
    value = sources
    for key in path:
        if isinstance(key, int) and isinstance(value, (list, tuple)):
            value = value[key] if -len(value) <= key < len(value) else None
        elif isinstance(value, dict) and not isinstance(key, int):
            value = value.get(key)
        else:
            return None
    return value


def _cast(value, type_: pa.DataType):
    """``value`` as a Python value of Arrow ``type_``; None when missing or not convertible (never guessed)."""
    if value is None:
        return None
    try:
        if pa.types.is_string(type_):
            return str(value)
        if pa.types.is_boolean(type_):
            return value if isinstance(value, bool) else None
        number = float(value)  # also parses "inf"/"Infinity", which JSON round-trips may leave as strings
    except (TypeError, ValueError):
        return None
    if pa.types.is_integer(type_):
        return int(number) if number.is_integer() else None
    return number


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _write_parquet(frame: pd.DataFrame, schema: pa.Schema, metadata: dict[str, str], path: Path) -> None:
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    merged = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
    pq.write_table(table.replace_schema_metadata(merged), path)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a hidden temporary sibling and rename it into place, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
