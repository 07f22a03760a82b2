"""Ray helpers of the federation: where an actor runs, waits with deadlines, and a task's own errors as one line.

Every wait on a Ray object polls (:func:`wait_within`): a blocking
``ray.get`` does not return to Python until its objects are ready, so
SIGINT and SIGTERM handlers would not run while an actor that can never be
placed is awaited, and the process could only be killed. Polling every
:data:`POLL_SECONDS` lets the handlers run, and a deadline turns a wait that
cannot end into one line saying what was awaited and the fix.
"""

from collections.abc import Callable

import time

import ray

from fedray.errors import FedrayError, Interrupted

POLL_SECONDS = 0.25  # how long a wait may block before signal handlers get a turn


def placement_of_this_actor() -> dict:
    """The Ray node and placement group this actor runs in (recorded in every run's summary)."""
    context = ray.get_runtime_context()
    return {"node": context.get_node_id(), "placement_group": context.get_placement_group_id()}


def alive_nodes() -> list[dict]:
    """The total resources of each alive node of the connected cluster (Ray's ``Resources`` per node)."""
    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def free_resources_line() -> str:
    """What the cluster has free now, of what it has: CPUs, GPUs and memory."""
    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{free.get(key, 0.0):g} of {total.get(key, 0.0):g} {key}s" for key in ("CPU", "GPU") if total.get(key)]
    memory = [f"{free.get('memory', 0.0) / 2**30:.0f} of {total.get('memory', 0.0) / 2**30:.0f} GiB memory"]
    return ", ".join(parts + memory) + " free"


def overdue_line(what: str, seconds: float) -> str:
    """The one line for work of the driver or the hospitals that overran ``cluster.round_timeout_s``."""
    return (f"{what} did not finish within {seconds:g} s (cluster.round_timeout_s); the cluster has "
            f"{free_resources_line()}: raise cluster.round_timeout_s for slower work, or check the cluster "
            "(`ray status`) for lost nodes")


def wait_within(refs, *, seconds: float | None, overdue: Callable[[], str]) -> None:
    """Return once every object of ``refs`` (one or a list) is ready; raise ``FedrayError(overdue())`` after
    ``seconds`` (None: no deadline). Never blocks longer than :data:`POLL_SECONDS` at a time."""
    pending = list(dict.fromkeys(refs if isinstance(refs, list) else [refs]))  # ray.wait refuses duplicates
    deadline = None if seconds is None else time.monotonic() + seconds
    while pending:
        if deadline is not None and time.monotonic() >= deadline:
            raise FedrayError(overdue())
        try:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_SECONDS)
        except SystemError as err:  # Ray runs signal handlers inside its C++ wait; their exception comes wrapped
            if isinstance(err.__cause__, Interrupted):
                raise err.__cause__ from None
            raise


def first_ready(refs: list) -> list:
    """The objects of ``refs`` that are ready, once at least one is. Never blocks longer than :data:`POLL_SECONDS`
    at a time (the driver's deadline is its caller's, :class:`~fedray.federation.driver_proxy.RayDriver`)."""
    while True:
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)
        except SystemError as err:  # as in wait_within: a signal handler's exception comes wrapped
            if isinstance(err.__cause__, Interrupted):
                raise err.__cause__ from None
            raise
        if ready:
            return ready


def get_in_one_line(refs, *, causes: tuple[type[BaseException], ...], siblings=(), seconds: float | None = None,
                    overdue: Callable[[], str] = lambda: "a Ray task did not finish in time"):
    """``ray.get(refs)`` within ``seconds`` (:func:`wait_within`); a task that failed with one of ``causes`` (a
    user-fixable error it names itself) becomes one :class:`FedrayError` line instead of Ray's wrapped traceback.

    ``siblings`` are the other tasks of the same step: before raising, their
    results are collected (and dropped), or Ray would print each of their
    failures as an "Unhandled error" traceback.
    """
    wait_within(refs, seconds=seconds, overdue=overdue)
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, causes):
            for sibling in [*(refs if isinstance(refs, list) else []), *siblings]:
                try:
                    wait_within(sibling, seconds=seconds, overdue=overdue)
                    ray.get(sibling)
                except Exception:  # noqa: BLE001 - their failure is the same story, already told
                    pass
            raise FedrayError(err.cause.args[0]) from None
        raise
