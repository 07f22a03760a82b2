"""Ray helpers of the federation: where an actor runs, and a task's own errors as one line."""

import ray

from fedray.errors import FedrayError


def placement_of_this_actor() -> dict:
    """The Ray node and placement group this actor runs in (recorded in every run's summary)."""
    context = ray.get_runtime_context()
    return {"node": context.get_node_id(), "placement_group": context.get_placement_group_id()}


def get_in_one_line(refs, *, causes: tuple[type[BaseException], ...], siblings=()):
    """``ray.get(refs)``; a task that failed with one of ``causes`` (a user-fixable error it names itself)
    becomes one :class:`FedrayError` line instead of Ray's wrapped traceback.

    ``siblings`` are the other tasks of the same step: before raising, their
    results are collected (and dropped), or Ray would print each of their
    failures as an "Unhandled error" traceback.
    """
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, causes):
            for sibling in [*(refs if isinstance(refs, list) else []), *siblings]:
                try:
                    ray.get(sibling)
                except Exception:  # noqa: BLE001 - their failure is the same story, already told
                    pass
            raise FedrayError(err.cause.args[0]) from None
        raise
