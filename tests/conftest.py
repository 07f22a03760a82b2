"""Shared fixtures: one Ray for the whole session, configs composed from conf/ with tiny data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fedray.config import to_plain

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Small enough for a 2-core CPU, large enough that every hospital gets every class.
TINY = [
    "data=synthetic",
    "data.image_size=16",
    "data.num_classes=3",
    "data.samples_per_class=50",
    "model=small_cnn",
    "fl.rounds=2",
    "fl.num_hospitals=5",
    "train.batch_size=8",
]


def same_params(a: list[dict], b: list[dict]) -> bool:
    """Bit-identical model parameters, model by model."""
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def compose_plain(overrides: list[str], run_dir: Path) -> dict:
    """Compose conf/ like the CLI does and resolve it to the plain dict actors receive."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return to_plain(cfg, run_dir=run_dir)


@pytest.fixture
def tiny_cfg(tmp_path):
    return compose_plain(TINY, tmp_path / "run")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # Logical CPUs above the 2 physical cores: actors here are light, and several
        # experiments' actors (hospitals + driver) must fit at once. No log_to_driver: Ray's
        # log thread would keep writing to the first test's captured (then closed) stdout.
        ray.init(num_cpus=8, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()
