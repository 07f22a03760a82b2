"""Where an actor runs: used to record placement in every run's summary."""

import ray


def placement_of_this_actor() -> dict:
    """The Ray node and placement group this actor runs in (recorded in every run's summary)."""
    context = ray.get_runtime_context()
    return {"node": context.get_node_id(), "placement_group": context.get_placement_group_id()}
