"""The datasets ``data=<name>`` can name: one folder each under :mod:`fedray.data.datasets` (FLamby-style).

A dataset folder holds, in its ``__init__.py``, its typed settings (a
:class:`~fedray.config.schema.DataCommon` subclass) and its public metadata,
registered with :func:`register_dataset`; its loader module
(``loader.py``), imported only when the data is loaded (PIL, pandas and
scikit-learn cost about a second per process, and every actor imports
:mod:`fedray.data`); and, beside it, ``conf/data/<name>.yaml``, which names
``/schema/data@_here_: <name>`` and sets every field. Nothing else branches
on a dataset's name.

Public metadata, fixed before any record is read: the licence the results
must carry (written to ``summary.data.licence``), and, where the dataset
fixes them, its class names and its declared feature ranges (``(column, low,
high)``; a range a loader derived from the rows would be a patient's value,
:mod:`fedray.data.declared_ranges`). A field holding a file or folder is
declared with :func:`fedray.config.checks.path`, so composition resolves it to
an absolute path and a sweep pins it for its trials.

The loader is ``loader(settings, seed) -> Loaded`` (:mod:`fedray.data.types`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedray.errors import FedrayError

if TYPE_CHECKING:
    from fedray.config.schema import DataCommon


@dataclass(frozen=True)
class Dataset:
    name: str
    settings: type[DataCommon]
    loader: str  # "module:function", imported when the data is loaded
    licence: str
    class_names: tuple[str, ...] | None = None  # None: read from the data (folder names, a label column)
    feature_ranges: tuple[tuple[str, float, float], ...] | None = None  # a table's declared public ranges

    def load(self, data_cfg: DataCommon, seed: int):
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)(data_cfg, seed)


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    """Make ``dataset`` the meaning of ``data.name=<its name>`` and its settings ``schema/data/<name>``."""
    known = DATASETS.get(dataset.name)
    if known is not None and known.loader != dataset.loader:
        raise ValueError(f"dataset {dataset.name!r} is already {known.loader}; pick another name")
    # imported here: importing fedray.config loads every registered component, the datasets among them, which import
    # this module; a plugin whose first import is this module would otherwise meet it half-initialised
    from fedray.config.schema import register_schema

    register_schema("data", dataset.name)(dataset.settings)
    DATASETS[dataset.name] = dataset
    return dataset


def dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise FedrayError(f"unknown dataset data.name={name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]
