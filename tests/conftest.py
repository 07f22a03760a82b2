"""Shared fixtures: one Ray for the whole session, configs composed from conf/ with tiny data."""

from __future__ import annotations

import os

# pytest-xdist runs a worker per core: one BLAS/torch thread each keeps the workers from oversubscribing the cores,
# now that an in-process run's parties use every thread their process has. Read when numpy and torch load.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fedray.config import CONF_DIR, Config, compose_config, replace
from fedray.config.schema import BackboneModel

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
    "audit.enabled=false",  # the audit costs a Ray task per experiment; tests of the audit turn it on
]


@contextmanager
def torch_threads(count: int | None = None):
    """Run the block with torch's thread count set to ``count`` (None: unchanged), then restore the caller's:
    parties pin it when they are built (fedray.training.device.configure_process)."""
    import torch

    threads = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def same_params(a: list[dict], b: list[dict]) -> bool:
    """Bit-identical model parameters, model by model."""
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def compose_typed(overrides: list[str], run_dir: Path) -> Config:
    """Compose conf/ like the CLI does: the typed, validated config actors receive."""
    return compose_config(overrides, run_dir=run_dir)


def with_changes(cfg: Config, **changes) -> Config:
    """A copy of ``cfg`` with dotted-path changes, e.g. ``with_changes(cfg, **{"fl.rounds": 1})``."""
    return replace(cfg, **changes)


# Dummy values for the keys a config option leaves as ??? (a path on the user's machine).


def required_values(overrides: list[str]) -> list[str]:
    """Dummy ``key=value`` overrides for every ``???`` key ``overrides`` leave unset (data=isic needs data.root):
    a path that need not exist, composition only resolves it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from fedray.config import normalise_overrides

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            raw = compose(config_name="config", overrides=normalise_overrides(list(overrides)))
    finally:
        GlobalHydra.instance().clear()
    return [f"{key}=/unused/{key}" for key in sorted(OmegaConf.missing_keys(raw))]


def data_cfg(name: str, **fields):
    """conf/data/<name>.yaml as its typed section, with ``fields`` replaced (a dict ``split`` becomes a Split)."""
    import dataclasses

    from fedray.config.schema import Split

    required = {"isic": ["data.root=/unused"], "table": ["data.path=/unused", "data.label_column=unused"]}
    section = compose_config([f"data={name}", *required.get(name, [])]).data
    if isinstance(fields.get("split"), dict):
        fields["split"] = Split(**fields["split"])
    return dataclasses.replace(section, **fields)


def run_summary(**fields):
    """A :class:`~fedray.results.RunSummary` for tests of its readers: plausible values, ``fields`` replacing them."""
    from fedray.results import DataSummary, RunSummary

    metrics = {"accuracy": 0.5, "balanced_accuracy": 0.5}
    defaults = dict(mode="federated", model="small_cnn", data=DataSummary(), rounds=2, final_test=dict(metrics),
                    final_val=dict(metrics), final_test_confusion_matrix=None, best_val_round=2,
                    best_val_round_test=dict(metrics), privacy={"mechanism": "none", "epsilon": float("inf")},
                    hospital_restarts=0, wall_seconds=1.0, seconds_per_round=0.5, gpu_hours=0.0)
    return RunSummary(**{**defaults, **fields})


def backbone(name: str, *, pretrained: bool = False, finetune: str = "all", finetune_last_n: int = 1) -> BackboneModel:
    """A ``model`` section for one backbone, as conf/model/<name>.yaml would give it."""
    return BackboneModel(name=name, pretrained=pretrained, finetune=finetune, finetune_last_n=finetune_last_n)


@pytest.fixture
def tiny_cfg(tmp_path):
    return compose_typed(TINY, tmp_path / "run")


@pytest.fixture(scope="session")
def tiny_run(ray_session, tmp_path_factory):
    """``run_experiment`` of :data:`TINY` on the session's Ray, run once: the plain reference several tests compare
    against (read it, never change it). The same config and seed give bit-identical models (test_federation checks
    that with a second run), so sharing this one changes no comparison; the run directory only says where to write."""
    from fedray.federation.experiment import run_experiment

    return run_experiment(compose_typed(TINY, tmp_path_factory.mktemp("tiny") / "run"))


def pytest_collection_modifyitems(items):
    """Every test that needs a Ray cluster (the session's, or its own in a subprocess) carries the ``ray``
    marker, so ``pytest -m "not ray"`` runs the pure tests alone."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) or item.get_closest_marker("spawns_ray"):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # One Ray session per pytest-xdist worker (the CI runs these tests in two). Logical CPUs above the 2
        # physical cores: actors here are light, and several
        # experiments' actors (hospitals + driver) must fit at once. No log_to_driver: Ray's
        # log thread would keep writing to the first test's captured (then closed) stdout.
        ray.init(num_cpus=8, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def reproducible_dp_runs(ray_session, tmp_path_factory):
    """(config, clean run, the run with hospital 2's actor killed during round 2) of :data:`TINY` under DP-SGD at
    ε = 3 with reproducible noise, run once: test_guarantee compares the two runs' models, test_dpsgd_e2e reads the
    killed run's ledger (the accountant's resumption after a restart does not depend on where the noise comes from)."""
    from fedray.federation.experiment import run_experiment

    cfg = compose_typed([*TINY, "privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true"],
                        tmp_path_factory.mktemp("dp_reproducible") / "run")
    return cfg, run_experiment(cfg), run_experiment(cfg, kill_hospital=(2, 2))

