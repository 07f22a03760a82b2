"""Federated strategies: pure aggregation objects, no transport."""

from fedray.errors import FedrayError
from fedray.strategies.aggregate import WEIGHTINGS
from fedray.strategies.base import ClientResult, Params, Strategy
from fedray.strategies.fedavg import FedAvg

STRATEGIES = {"fedavg": FedAvg}


def build_strategy(fl_cfg: dict, privacy_cfg: dict | None = None, *, trees: bool = False,
                   seed: int = 0) -> Strategy:
    """Instantiate the strategy named by ``fl.strategy``; ``privacy=dpfedavg`` makes it client-level DP.

    ``trees=True`` (a tree model): trees cannot be averaged parameter by
    parameter, so the hospitals' trees are merged into one forest instead
    (:class:`~fedray.strategies.ensemble.TreeEnsemble`).
    """
    privacy_cfg = privacy_cfg or {}
    weighting = fl_cfg.get("weighting", "samples")
    if weighting not in WEIGHTINGS:
        raise FedrayError(f"unknown fl.weighting {weighting!r}: use 'samples' or 'uniform'")
    if trees:
        from fedray.strategies.ensemble import TreeEnsemble

        return TreeEnsemble(weighting=weighting)
    if privacy_cfg.get("name") == "dpfedavg" and privacy_cfg.get("noise_multiplier", 0) > 0:
        from fedray.strategies.dp_fedavg import DPFedAvg  # pulls in Opacus' accountant: only when asked for

        return DPFedAvg(clip_norm=privacy_cfg["clip_norm"], noise_multiplier=privacy_cfg["noise_multiplier"], seed=seed)
    name = fl_cfg.get("strategy", "fedavg")
    if name not in STRATEGIES:
        raise FedrayError(f"unknown strategy {name!r}: set fl.strategy to one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](weighting=weighting)


__all__ = ["ClientResult", "FedAvg", "Params", "Strategy", "build_strategy", "STRATEGIES"]
