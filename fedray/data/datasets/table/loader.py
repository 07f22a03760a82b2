"""A user's own table, "table": one CSV file, one row per patient.

Columns. ``label_column`` holds the outcome; ``consent_column`` (optional)
the patient's informed consent; ``id_column`` (optional) a record
identifier. Every other column is a feature and must be numeric (booleans
count as 0/1), with no empty cells: fedray does not guess an encoding or an
imputation, since either would change what the model and the privacy audit see.

Labels. The class names are the distinct label values, sorted (numerically
for a numeric column, else as text), as strings; label ``c`` is the ``c``-th.
So a 0/1 outcome gives ``("0", "1")`` with label 1 = 1.

Consent. A cell reading ``1``, ``true``, ``yes`` or ``y`` (any case, spaces
ignored) is consent; anything else, an empty cell included, is not: consent
must be affirmative. Without the column, ``Loaded.consent`` is None.

Ids. The ``id_column``'s values (as text, unique, none empty), or
``table/000123`` for data row 123 (0-based, header excluded).

Feature ranges. :class:`~fedray.data.feature_scaling.FeatureScaling` maps
each feature's range ``[low, high]`` onto ``[0, 1]``. Give ranges fixed
before seeing the data (clinical knowledge, a data dictionary) in
``data.feature_ranges: {column: [low, high]}`` (:mod:`fedray.data.declared_ranges`); values
outside are clipped when the rows are scaled, the records themselves keep
them. The table is ``ranges_public=True`` only when every feature column has
a declared range. A feature without one gets the data's own min and max,
which are single patients' exact values, and then the whole table is flagged
``ranges_public=False``: a run without DP still works, a DP mechanism refuses
it (the loader's ``source`` line names the undeclared columns).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedray.data.datasets.table import TableData
from fedray.data.declared_ranges import feature_ranges, ranges_note
from fedray.data.types import Loaded, Records
from fedray.errors import FedrayError

TRUTHY = frozenset({"1", "true", "yes", "y"})


def load_table(data_cfg: TableData, seed: int) -> Loaded:
    """Every row of ``data_cfg.path``; ``seed`` is unused (the split draws from it later)."""
    path = _existing_file(data_cfg.path)
    label = data_cfg.label_column
    if not label:
        raise FedrayError("data.label_column is not set: name the CSV column that holds the outcome")
    consent_column, id_column = data_cfg.consent_column, data_cfg.id_column
    # Read as text so that "yes"/"1" and ids like "007" survive pandas' type guessing.
    as_text = {column: str for column in (consent_column, id_column) if column is not None}
    try:
        # index_col=False and an error for ParserWarning: a row with extra cells must not
        # silently turn the first column into an index or lose cells.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=as_text, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise FedrayError(
            f"cannot read {path} as CSV ({reason}): "
            "give a comma-separated file with a header row and as many cells in every row"
        ) from None
    columns = ", ".join(map(str, frame.columns))
    for key, column in (("label_column", label), ("consent_column", consent_column), ("id_column", id_column)):
        if column is not None and column not in frame.columns:
            raise FedrayError(f"{path} has no column '{column}' (columns: {columns}): fix data.{key}")
    labels, class_names = _labels(frame[label], label)
    names = tuple(c for c in frame.columns if c not in {label, consent_column, id_column})
    inputs = _features(frame, names, path)
    given = data_cfg.feature_ranges or {}
    ranges, public = feature_ranges(inputs, names, given)
    n = len(frame)
    if id_column is None:
        ids = np.array([f"table/{i:06d}" for i in range(n)], dtype=object)
    else:
        ids = _ids(frame[id_column], id_column)
    consent = None
    if consent_column is not None:
        consent = frame[consent_column].fillna("").str.strip().str.lower().isin(TRUTHY).to_numpy(dtype=bool)
    records = Records(
        inputs=torch.from_numpy(inputs),
        labels=labels,
        ids=ids,
        class_names=class_names,
        feature_names=names,
        feature_ranges=ranges,
        ranges_public=public,
    )
    return Loaded(
        records=records,
        consent=consent,
        skipped_files=(),
        source=f"table {path} ({n} rows, {len(names)} features, label '{label}', {ranges_note(names, given)})",
    )


def _existing_file(path: str | None) -> Path:
    if not path:
        raise FedrayError("data.path is not set: point it at the CSV file to load")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FedrayError(f"table '{resolved}' does not exist: set data.path to an existing CSV file")
    return resolved


def _labels(column: pd.Series, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    missing = int(column.isna().sum())
    if missing:
        raise FedrayError(f"label column '{name}' has {missing} empty cell(s): label every row or drop those rows")
    values, labels = np.unique(column.to_numpy(), return_inverse=True)
    if len(values) < 2:
        found = f"only '{values[0]}'" if len(values) else "no rows"
        raise FedrayError(f"label column '{name}' has {found}: a classifier needs at least 2 classes")
    return labels.astype(np.int64), tuple(str(v) for v in values)


def _features(frame: pd.DataFrame, names: tuple[str, ...], path: Path) -> np.ndarray:
    """The feature columns as float32 ``[N, D]``, after checking each is numeric and complete."""
    if not names:
        raise FedrayError(f"{path} has no feature columns besides the label, consent and id columns: add some")
    columns = []
    for name in names:
        # pandas leaves a boolean column with empty cells as objects; to_numeric recovers it.
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        text = frame[name].notna().to_numpy() & np.isnan(values)
        if text.any():
            row = int(np.argmax(text))
            raise FedrayError(
                f"feature column '{name}' is not numeric (data row {row}: {frame[name].iloc[row]!r}): "
                "encode it as numbers or remove it"
            )
        bad = ~np.isfinite(values)
        if bad.any():
            raise FedrayError(
                f"feature column '{name}' has {int(bad.sum())} empty or infinite cell(s) (first in data row "
                f"{int(np.argmax(bad))}): fill them or drop those rows"
            )
        columns.append(values)
    return np.stack(columns, axis=1).astype(np.float32)


def _ids(column: pd.Series, name: str) -> np.ndarray:
    ids = column.fillna("").str.strip()
    empty, repeated = ids == "", ids[ids.duplicated()]
    if empty.any():
        raise FedrayError(f"id column '{name}' is empty in data row {int(np.argmax(empty))}: give every row an id")
    if len(repeated):
        raise FedrayError(f"id column '{name}' repeats '{repeated.iloc[0]}': ids must be unique")
    return ids.to_numpy(dtype=object)
