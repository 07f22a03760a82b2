"""The trackers' typed settings (``tracking.*``), registered as ``schema/tracking/<name>`` for ``conf/tracking/``.

Light on purpose (no MLflow, no torch): :mod:`fedray.config.schema` imports it, through ``COMPONENT_PACKAGES``,
before any config is composed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fedray.config.checks import free, path, text
from fedray.config.schema import ReadOnly, register_schema


@register_schema("tracking", "none")
@dataclass
class NoTracking(ReadOnly):
    name: str = text()


@register_schema("tracking", "mlflow")
@dataclass
class MLflowTracking(ReadOnly):
    name: str = text()
    uri: Optional[str] = free()  # a tracking server (http://host:5000); None: the embedded SQLite store below
    store: str = path()  # the embedded store's SQLite file
    artifacts: str = path()  # where an experiment the embedded store creates keeps its artifacts
    experiment: Optional[str] = free()  # None: "fedray" for single runs, the sweep's name for a sweep


@register_schema("tracking", "tensorboard")
@dataclass
class TensorBoardTracking(ReadOnly):
    name: str = text()
    log_dir: str = path()  # one sub-folder per run, per sweep trial
