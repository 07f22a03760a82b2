"""Federated strategies: pure aggregation objects, no transport."""

from fedray.errors import FedrayError
from fedray.strategies.base import ClientResult, Params, Strategy
from fedray.strategies.fedavg import FedAvg

STRATEGIES = {"fedavg": FedAvg}


def build_strategy(fl_cfg: dict) -> Strategy:
    """Instantiate the strategy named by ``fl.strategy`` with its options."""
    name = fl_cfg.get("strategy", "fedavg")
    if name not in STRATEGIES:
        raise FedrayError(f"unknown strategy {name!r}: set fl.strategy to one of {sorted(STRATEGIES)}")
    weighting = fl_cfg.get("weighting", "samples")
    if weighting not in ("samples", "uniform"):
        raise FedrayError(f"unknown fl.weighting {weighting!r}: use 'samples' or 'uniform'")
    return STRATEGIES[name](weighting=weighting)


__all__ = ["ClientResult", "FedAvg", "Params", "Strategy", "build_strategy", "STRATEGIES"]
