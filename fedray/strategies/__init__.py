"""Federated strategies: pure aggregation objects, no transport."""

from fedray.config.schema import Federation
from fedray.errors import FedrayError
from fedray.privacy.randomness import NoiseSource
from fedray.strategies.base import ClientResult, Params, Strategy
from fedray.strategies.fedavg import FedAvg

STRATEGIES = {"fedavg": FedAvg}


def build_strategy(fl: Federation, plan: dict | None = None, *, noise: NoiseSource | None = None,
                   trees: bool = False) -> Strategy:
    """Instantiate the strategy named by ``fl.strategy``; a ``dpfedavg`` plan makes it client-level DP.

    ``trees=True`` (a tree model): trees cannot be averaged parameter by
    parameter, so the hospitals' trees are merged into one forest instead
    (:class:`~fedray.strategies.ensemble.TreeEnsemble`). ``noise`` is the
    driver's source of DP randomness (DP-FedAvg only).
    """
    if trees:
        from fedray.strategies.ensemble import TreeEnsemble

        return TreeEnsemble(weighting=fl.weighting)
    if plan and plan["name"] == "dpfedavg" and plan.get("noise_multiplier", 0) > 0:
        from fedray.strategies.dp_fedavg import DPFedAvg  # pulls in Opacus' accountant: only when asked for

        return DPFedAvg(clip_norm=plan["clip_norm"], noise_multiplier=plan["noise_multiplier"], noise=noise,
                        expected_clients=plan["clients_per_round"])
    if fl.strategy not in STRATEGIES:
        raise FedrayError(f"unknown strategy {fl.strategy!r}: set fl.strategy to one of {sorted(STRATEGIES)}")
    return STRATEGIES[fl.strategy](weighting=fl.weighting)


__all__ = ["ClientResult", "FedAvg", "Params", "Strategy", "build_strategy", "STRATEGIES"]
