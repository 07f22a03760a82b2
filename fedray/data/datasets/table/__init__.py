"""A user's own patient table, one CSV file: ``data=table`` (columns, consent, ids and ranges: :mod:`.loader`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from fedray.config.checks import free, path, text
from fedray.config.schema import DataCommon
from fedray.data.registry import Dataset, register_dataset


@dataclass
class TableData(DataCommon):
    path: str = path()
    label_column: str = text()
    consent_column: Optional[str] = free()
    id_column: Optional[str] = free()
    feature_ranges: Optional[Any] = free()  # {column: [low, high]}


TABLE = register_dataset(Dataset(
    name="table", settings=TableData, loader="fedray.data.datasets.table.loader:load_table",
    licence="the user's own table: its licence and consent are the user's to state"))
