"""Whether a run's actors can ever be placed on the cluster, checked before Ray is asked to place them.

Ray queues an actor whose request no node can hold and waits for it forever:
five hospitals asking for 4 CPUs each on a 2-core laptop would hang the run
with no output. So once the cluster is known, every request is checked
against the alive nodes' totals (each request must fit on some node, all of
them together on the cluster), and an impossible plan is refused in one line
naming the short resource and the knob to turn. A single run checks its
driver and hospitals; a sweep checks each trial's placement group
(:mod:`fedray.sweep.resources`), which adds the trial's own bundle.

CPUs, GPUs and the memory a party reserves (``resources.<party>.memory_gb``)
are checked alike. GPU requests count only where the cluster has GPUs
(:func:`~fedray.federation.pool.actor_resources`): on a CPU-only cluster the
parties train on the CPU, and :func:`gpu_request_line` says so rather than
letting a ``num_gpus`` setting pass silently.
"""

from __future__ import annotations

from fedray.config import Config
from fedray.errors import FedrayError
from fedray.federation.pool import actor_resources, hospital_actor_count


def run_bundles(cfg: Config, *, gpus_present: bool, cluster_cpus: float | None = None,
                cluster_gpus: float | None = None) -> list[dict[str, float]]:
    """What one experiment's actors request: the driver, then one bundle per hospital actor
    (:func:`~fedray.federation.pool.hospital_actor_count`)."""
    def bundle(request: dict) -> dict[str, float]:
        return {"CPU": request["num_cpus"], **({"GPU": request["num_gpus"]} if request["num_gpus"] > 0 else {}),
                **({"memory": float(request["memory"])} if "memory" in request else {})}

    driver, hospital = actor_resources(cfg.resources, gpus_present=gpus_present)
    actors = hospital_actor_count(cfg, gpus_present=gpus_present, cluster_cpus=cluster_cpus, cluster_gpus=cluster_gpus)
    return [bundle(driver)] + [bundle(hospital) for _ in range(actors)]


def check_fits(bundles: list[dict[str, float]], nodes: list[dict[str, float]], *, what: str = "this run") -> None:
    """Refuse ``bundles`` (``what`` needs them) when no placement could ever satisfy them, naming the short resource
    (CPU, GPU, or memory in bytes, as Ray counts it).

    ``nodes`` are the alive nodes' total resources. Every bundle must fit on
    some node, and the bundles together must fit the cluster.
    """
    if not nodes:
        raise FedrayError("the Ray cluster has no alive nodes: start one (ray up cluster.yaml) or use cluster=local")
    for bundle in bundles:
        for resource, amount in bundle.items():
            largest = max(node.get(resource, 0.0) for node in nodes)
            if amount > largest * (1 + 1e-9) + 1e-9:
                knob = KNOBS.get(resource, resource)
                raise FedrayError(
                    f"{what} needs a bundle with {_amount(resource, amount)} but the largest node has "
                    f"{_amount(resource, largest)}: lower resources.hospital.{knob} / resources.driver.{knob} "
                    "or add bigger nodes"
                )
    for resource in {r for b in bundles for r in b}:
        need = sum(b.get(resource, 0.0) for b in bundles)
        have = sum(node.get(resource, 0.0) for node in nodes)
        if need > have * (1 + 1e-9) + 1e-9:
            raise FedrayError(
                f"{what} needs {_amount(resource, need)} in all but the cluster has {_amount(resource, have)}: "
                f"lower resources.hospital.{KNOBS.get(resource, resource)} / resources.driver's, fewer hospitals, "
                "or a bigger cluster"
            )


KNOBS = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory_gb"}  # the config key behind each Ray resource


def _amount(resource: str, amount: float) -> str:
    return f"memory={amount / 2**30:.3g} GiB" if resource == "memory" else f"{resource}={amount:g}"


def asks_for_gpus(overrides: list[str]) -> bool:
    """Whether the command line set a GPU request: only then is a GPU-less cluster worth a line (the default
    fractions are for GPU clusters and go unsaid on a laptop)."""
    return any("num_gpus" in override for override in overrides)


def gpu_request_line(cfg: Config, *, gpus_present: bool) -> str | None:
    """One line when the config asks for GPUs the cluster does not have (the parties then use the CPU)."""
    asked = {f"resources.{party}.num_gpus": getattr(cfg.resources, party).num_gpus for party in ("hospital", "driver")}
    asked = {key: value for key, value in asked.items() if value > 0}
    if gpus_present or not asked:
        return None
    settings = ", ".join(f"{key}={value:g}" for key, value in asked.items())
    return f"resources: the cluster has no GPU, so the hospitals and the driver train on the CPU ({settings} unused)"
