"""Placement bundles for one trial, and whether a trial can fit the cluster at all.

A trial reserves, as one placement group:

- bundle 0: the Tune trial process (``tune.trial_cpus``),
- bundle 1: the driver actor (``resources.driver``),
- bundles 2…N+1: one per hospital (``resources.hospital``).

So five hospitals at 0.1 GPU each and a driver at 0.1 GPU pack 1/0.6 trials
per GPU, and trials spread over the nodes of a cluster. Tune starts a trial
only when its whole group can be placed, so a full cluster queues trials
instead of deadlocking half-started ones. Ray does not cap a fractional GPU's
memory, so :func:`fedray.federation.memory_plan.check_memory_plan` also
refuses a share too small for the backbone's training step. A single run
checks the same, and its own fit (:mod:`fedray.federation.feasibility`).
"""

from __future__ import annotations

from fedray.config import Config
from fedray.federation.feasibility import check_fits, run_bundles

DRIVER_BUNDLE = 1  # the driver's bundle index; hospital k is DRIVER_BUNDLE + 1 + k


def trial_bundles(cfg: Config, *, gpus_present: bool, cluster_cpus: float | None = None,
                  cluster_gpus: float | None = None) -> list[dict[str, float]]:
    """The placement bundles of one trial of ``cfg``: exactly what its actors will request."""
    return [{"CPU": float(cfg.tune.trial_cpus)},
            *run_bundles(cfg, gpus_present=gpus_present, cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus)]


def check_trial_fits(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> None:
    """Refuse a trial that no placement could ever satisfy, naming the short resource
    (:func:`fedray.federation.feasibility.check_fits`)."""
    check_fits(bundles, nodes, what="a trial")
