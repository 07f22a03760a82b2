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
refuses a share too small for the backbone's training step (a single run
checks the same).
"""

from __future__ import annotations

from fedray.config import Config
from fedray.errors import FedrayError
from fedray.federation.pool import actor_resources, hospital_actor_count

DRIVER_BUNDLE = 1  # the driver's bundle index; hospital k is DRIVER_BUNDLE + 1 + k


def trial_bundles(cfg: Config, *, gpus_present: bool) -> list[dict[str, float]]:
    """The placement bundles of one trial of ``cfg``: exactly what its actors will request."""
    def bundle(request: dict) -> dict[str, float]:
        return {"CPU": request["num_cpus"], **({"GPU": request["num_gpus"]} if request["num_gpus"] > 0 else {})}

    driver, hospital = actor_resources(cfg.resources, gpus_present=gpus_present)
    hospitals = hospital_actor_count(cfg)
    return [{"CPU": float(cfg.tune.trial_cpus)}, bundle(driver)] + [bundle(hospital) for _ in range(hospitals)]


def check_trial_fits(bundles: list[dict[str, float]], nodes: list[dict[str, float]]) -> None:
    """Refuse a trial that no placement could ever satisfy, naming the short resource.

    ``nodes`` are the alive nodes' total resources. Every bundle must fit on
    some node, and the bundles together must fit the cluster.
    """
    if not nodes:
        raise FedrayError("the Ray cluster has no alive nodes: start one (ray up cluster.yaml) or use cluster=local")
    for bundle in bundles:
        for resource, amount in bundle.items():
            largest = max(node.get(resource, 0.0) for node in nodes)
            if amount > largest + 1e-9:
                raise FedrayError(
                    f"a trial needs a bundle with {resource}={amount:g} but the largest node has {resource}={largest:g}: "
                    f"lower resources.hospital.num_{resource.lower()}s / resources.driver.num_{resource.lower()}s or add bigger nodes"
                )
    for resource in {r for b in bundles for r in b}:
        need = sum(b.get(resource, 0.0) for b in bundles)
        have = sum(node.get(resource, 0.0) for node in nodes)
        if need > have + 1e-9:
            raise FedrayError(
                f"one trial needs {resource}={need:g} in all but the cluster has {resource}={have:g}: "
                f"lower the per-actor {resource} in resources.hospital / resources.driver, fewer hospitals, or a bigger cluster"
            )
