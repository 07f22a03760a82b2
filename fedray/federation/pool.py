"""Long-lived Ray actors that host one experiment's parties after another.

Starting a Ray actor costs a process and its imports (torch, fedray): about
3-5 s each on a laptop, for the driver and every hospital of every
experiment. A :class:`Host` is an actor that outlives an experiment: it
holds the driver (:class:`~fedray.federation.driver.Driver`), or the
hospitals whose turns it runs (:mod:`fedray.federation.residency`: any
number of virtual hospitals on a fixed number of actors), and builds the
next experiment's parties from scratch. An :class:`ActorPool` keeps the hosts of one
process (a CLI run's folds, the trials a reused Tune trial actor runs, a test
session) and hands them to each experiment.

Nothing of one experiment survives into the next: a party is built anew from
its own set-up (the accountant, the optimizer, the model, its noise source
and the seeded torch generator are all created in its constructor), and the
old party is dropped first. ``tests/federation/test_pool.py`` checks that an experiment
on reused hosts equals the same experiment on fresh ones.

The pool is keyed by what the actors were created with (placement group and
bundles, resources, restart budget): an experiment that needs other actors
gets fresh ones, and the old ones are killed. An experiment that fails closes
the pool, so the next one never inherits a half-finished party.
"""

from __future__ import annotations

import gc
import importlib
from dataclasses import dataclass

import ray

from fedray.config import Config
from fedray.config.schema import Resources
from fedray.federation.runtime import free_resources_line, placement_of_this_actor, wait_within


def actor_resources(resources: Resources, *, gpus_present: bool) -> tuple[dict, dict]:
    """(driver, hospital) resource requests; GPU fractions only where the cluster has GPUs; ``memory`` in bytes
    where a reservation is set."""
    def one(section) -> dict:
        memory = {} if section.memory_gb is None else {"memory": int(section.memory_gb * 2**30)}
        return {"num_cpus": float(section.num_cpus), "num_gpus": float(section.num_gpus) if gpus_present else 0.0,
                **memory}
    return one(resources.driver), one(resources.hospital)


class Host:
    """A Ray actor hosting the parties of one experiment: the driver (:meth:`start`, :meth:`apply`), or hospitals
    that take turns here (:meth:`visit`, :mod:`fedray.federation.residency`). Methods are passed as the class's
    function (``Driver.run_round``, ``Hospital.fit``), so callers name methods that exist, never strings. Ray
    runs an actor's tasks one at a time, so the hospitals queued on one host train one after another."""

    def __init__(self):
        from fedray.federation.residency import Residency, from_object_store

        self.party = None
        self.residency = Residency(get=from_object_store)

    def start(self, factory, kwargs: dict) -> None:
        """Drop the party held and build ``factory(**kwargs)`` here; object references in ``kwargs`` are fetched.

        The pool's :meth:`ActorPool.release` already collected the previous experiment's parties; a host Ray
        restarted holds none.
        """
        self.party = None
        self.party = factory(**{k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in kwargs.items()})

    def warm(self, *modules: str) -> None:
        """Import ``modules`` (a party's) now, while the caller is still preparing the data."""
        for module in modules:
            importlib.import_module(module)
        gc.freeze()  # the modules live as long as the process: :meth:`clear`'s collection need not walk them

    def apply(self, method, *args):
        """``method(party, *args)`` on the party built by :meth:`start`: a method of its class."""
        return method(self.party, *args)

    def visit(self, ticket, method, *args, capacity: int, advances: bool = False, pin: bool | None = None,
              held_only: bool = False):
        """``method(hospital, *args)`` on the hospital of ``ticket`` (:func:`~fedray.federation.residency.run_turn`):
        its copy held here if current, else built from the ticket."""
        from fedray.federation.residency import run_turn

        return run_turn(self.residency, ticket, method, args, capacity=capacity, advances=advances, pin=pin,
                        held_only=held_only)

    def visit_together(self, tickets: list, method, params: list, *args, capacity: int, advances: bool = False):
        """``method(hospitals, params, *args)`` on the hospitals of ``tickets`` at once
        (:func:`~fedray.federation.residency.run_turn_together`); ``params`` (one model per hospital) may hold
        object references."""
        from fedray.federation.residency import from_object_store, run_turn_together

        return run_turn_together(self.residency, tickets, method, ([from_object_store(p) for p in params], *args),
                                 capacity=capacity, advances=advances)

    def run(self, function, kwargs: dict):
        """Drop the parties and run ``function(**kwargs)`` here (the auditor, after the rounds and the release)."""
        self.clear()
        return function(**kwargs)

    def clear(self) -> None:
        self.party = None
        self.residency.clear()
        gc.collect()

    def ping(self) -> bool:
        return True

    def where(self) -> dict:
        return placement_of_this_actor()


@dataclass(frozen=True)
class PoolKey:
    """What a pool's hosts were created with; an experiment that needs anything else gets new hosts."""

    ray_job: str  # a new Ray session (ray.shutdown, ray.init) invalidates every handle
    placement_group: str | None
    bundle_offset: int
    driver: tuple
    hospital: tuple
    max_restarts: int


class ActorPool:
    """The driver host and hospital hosts of this process, reused by consecutive experiments."""

    def __init__(self):
        self.key: PoolKey | None = None
        self.driver = None
        self.hospitals: list = []
        self.placed = False  # every host has answered once (wait_placed)

    def hosts(self, *, count: int, driver_res: dict, hospital_res: dict, max_restarts: int,
              placement_group=None, bundle_offset: int = 0) -> tuple[object, list]:
        """(the driver host, ``count`` hospital hosts): the pooled ones when they fit, else new ones."""
        group = None if placement_group is None else placement_group.id.hex()
        key = PoolKey(ray.get_runtime_context().get_job_id(), group, bundle_offset,
                      tuple(sorted(driver_res.items())), tuple(sorted(hospital_res.items())), max_restarts)
        # Under a placement group the bundles are numbered per hospital actor: the trial's group fixes the count.
        if key != self.key or (placement_group is not None and len(self.hospitals) != count) or not self._alive():
            self.close()
            self.key = key
        actor = ray.remote(Host)

        def scheduling(index: int) -> dict:
            if placement_group is None:
                return {}
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=placement_group, placement_group_bundle_index=bundle_offset + index)}

        if self.driver is None:
            self.driver = actor.options(**driver_res, **scheduling(0)).remote()
        for surplus in self.hospitals[count:]:
            ray.kill(surplus, no_restart=True)
        self.hospitals = self.hospitals[:count]
        self.placed = self.placed and len(self.hospitals) == count
        self.hospitals += [actor.options(max_restarts=max_restarts, **hospital_res, **scheduling(1 + k)).remote()
                           for k in range(len(self.hospitals), count)]
        return self.driver, list(self.hospitals)

    def wait_placed(self, seconds: float) -> None:
        """Return once every host answers; after ``seconds``, one line: what was asked, what is free, the fix.

        Ray queues an actor until a node has its resources free, without
        limit: a cluster busy with other jobs (or an autoscaler that never
        adds the node) would hold the run forever. The wait polls, so that
        SIGINT and SIGTERM stop it at any moment.
        """
        hosts = [self.driver, *self.hospitals]

        def overdue() -> str:
            actors = f"{len(self.hospitals)} hospital actor{'s' if len(self.hospitals) != 1 else ''}"
            asked = ", ".join(f"{name} {_request_text(request)}" for name, request in
                              (("the driver", self.key.driver), (actors, self.key.hospital)))
            return (f"the run's actors were not all placed within {seconds:g} s (cluster.placement_timeout_s): asked "
                    f"for {asked} each; the cluster has {free_resources_line()} (other jobs may hold the rest): "
                    "wait for them, lower resources.hospital / resources.driver, or raise cluster.placement_timeout_s")

        wait_within([host.ping.remote() for host in hosts], seconds=seconds, overdue=overdue)
        self.placed = True

    def release(self) -> None:
        """The experiment is over: drop its parties (their models and shards), keep the processes."""
        cleared = [host.clear.remote() for host in [self.driver, *self.hospitals]]
        wait_within(cleared, seconds=120, overdue=lambda: "the pooled actors did not drop their parties within 120 s")
        ray.get(cleared)

    def close(self) -> None:
        for host in [self.driver, *self.hospitals]:
            if host is not None:
                try:
                    ray.kill(host, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone, or from an earlier Ray session
                    pass
        self.key, self.driver, self.hospitals, self.placed = None, None, [], False

    def _alive(self) -> bool:
        """Whether the placed hosts still answer (hosts not yet placed are left to :meth:`wait_placed`)."""
        if not self.placed:
            return True
        hosts = [self.driver, *self.hospitals]
        try:
            pings = [host.ping.remote() for host in hosts]
            wait_within(pings, seconds=60, overdue=lambda: "pooled actors not answering")
            ray.get(pings)
            return True
        except Exception:  # noqa: BLE001 - dead, unreachable or from an earlier Ray session: start afresh
            return False


def _request_text(request: tuple) -> str:
    """A pool key's resource request, e.g. ``(("num_cpus", 0.25), ("num_gpus", 0.0))`` -> ``CPU=0.25``."""
    named = {"num_cpus": "CPU", "num_gpus": "GPU"}
    return " ".join(f"memory={value / 2**30:g} GiB" if key == "memory" else f"{named.get(key, key)}={value:g}"
                    for key, value in request if value)


_PROCESS_POOL = ActorPool()


def process_pool() -> ActorPool:
    """This process's pool: every experiment run here (folds, trials of one Tune actor, tests) shares it."""
    return _PROCESS_POOL


def hospital_actor_count(cfg: Config, *, gpus_present: bool = False, cluster_cpus: float | None = None,
                         cluster_gpus: float | None = None) -> int:
    """How many hospital actors ``cfg`` runs on a cluster with ``cluster_cpus`` CPUs and ``cluster_gpus`` GPUs
    (None: not known).

    One holds every shard under ``mode=centralized``. Otherwise ``fl.actors``
    (at most one per hospital; the hospitals take turns on them), or by default: one per hospital on a cluster
    with GPUs (each actor caps its own GPU memory share) or when the CPU count
    is not known, and on a CPU-only cluster as many as it has CPUs. Each actor
    is a process that imports torch (and, at its first optimiser step,
    torch._dynamo: about 2 CPU-seconds in all), and more training processes
    than cores cannot run at once: on a 2-core laptop, five hospitals on two
    actors give the same results (``tests/federation/test_pool.py``) in 0.69x
    the wall time of five actors (``benchmarks/single_run.py``). With GPUs, a
    federation larger than the cluster's GPU shares (``resources.hospital.num_gpus``
    each, beside the driver's) gets as many actors as those shares, and its
    hospitals take turns on them, rather than actors that could never be placed.
    """
    hospitals = cfg.fl.num_hospitals
    if cfg.mode == "centralized":
        return 1
    if cfg.fl.actors is not None:
        return min(hospitals, cfg.fl.actors)
    if gpus_present and cluster_gpus is not None and cfg.resources.hospital.num_gpus > 0:
        shares = (cluster_gpus - cfg.resources.driver.num_gpus) / cfg.resources.hospital.num_gpus
        return max(1, min(hospitals, int(shares + 1e-9)))
    if gpus_present or cluster_cpus is None:
        return hospitals
    return min(hospitals, max(1, int(cluster_cpus)))


DEFAULT_RESIDENT_HOSPITALS = 8


def resident_hospitals(cfg: Config, actors: int) -> int:
    """How many hospitals one process keeps built between turns (:mod:`fedray.federation.residency`).

    ``fl.resident_hospitals``, or by default an actor's share of the
    hospitals, ceil(K / A), up to :data:`DEFAULT_RESIDENT_HOSPITALS`: a small
    federation is built once and stays (as with one actor per hospital),
    while a large one keeps a process's memory at O(that many models). A
    hospital not kept is rebuilt from its ticket at its next turn: about 2-7 ms
    for the EHR MLP, against 50-60 ms for its training turn (2-core CPU).
    """
    if cfg.fl.resident_hospitals is not None:
        return cfg.fl.resident_hospitals
    return min(DEFAULT_RESIDENT_HOSPITALS, -(-cfg.fl.num_hospitals // max(1, actors)))


def warm_actors(cfg: Config, pool: ActorPool | None = None) -> None:
    """Create the pooled actors ``cfg`` will need and have them import their party's modules, without waiting.

    A single run calls this as soon as Ray is up, while its data are still being decoded: the actors'
    imports then overlap the decoding instead of following it. scikit-learn's metrics come too for the
    parties that will evaluate: the driver always, the hospitals only in a non-private run. The hospitals also
    import ``torch._dynamo``, which torch's optimizers import at their first step (about 1 s).
    """
    cluster = ray.cluster_resources()
    gpus_present = cluster.get("GPU", 0) > 0
    driver_res, hospital_res = actor_resources(cfg.resources, gpus_present=gpus_present)
    driver, hospitals = (pool or process_pool()).hosts(
        count=hospital_actor_count(cfg, gpus_present=gpus_present, cluster_cpus=cluster.get("CPU"),
                                   cluster_gpus=cluster.get("GPU")),
        driver_res=driver_res,
        hospital_res=hospital_res, max_restarts=cfg.fl.max_restarts)
    driver.warm.remote("fedray.federation.driver", "sklearn.metrics")
    from fedray.privacy.mechanisms import claims_dp

    evaluating = () if claims_dp(cfg) else ("sklearn.metrics",)
    for host in hospitals:
        host.warm.remote("fedray.federation.hospital", "torch._dynamo", *evaluating)
