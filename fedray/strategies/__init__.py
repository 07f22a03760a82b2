"""Federated strategies: pure aggregation objects, no transport."""

from fedray.config.schema import Federation
from fedray.privacy.randomness import NoiseSource
from fedray.strategies.base import ClientResult, Params, Strategy
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.fedprox import FedProx
from fedray.strategies.server_optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi")


def build_strategy(fl: Federation, plan: dict | None = None, *, noise: NoiseSource | None = None,
                   trees: bool = False, canary_clients=None) -> Strategy:
    """Instantiate the strategy named by ``fl.strategy``; a ``dpfedavg`` plan makes it client-level DP.

    ``trees=True`` (a tree model): trees cannot be averaged parameter by
    parameter, so the hospitals' trees are merged into one forest instead
    (:class:`~fedray.strategies.ensemble.TreeEnsemble`). ``noise`` is the
    driver's source of DP randomness (DP-FedAvg only). Under DP-FedAvg a server
    optimizer (``fedavgm``, ``fedadam``, ...) steps on the noised mean update. ``canary_clients``
    (:class:`~fedray.privacy.canaries.IncludedCanaryClients`, DP-FedAvg only) are an audit's canary clients.
    """
    if trees:
        from fedray.strategies.ensemble import TreeEnsemble

        return TreeEnsemble(weighting=fl.weighting)
    strategy = _plain(fl)
    if plan and plan["name"] == "dpfedavg" and plan.get("noise_multiplier", 0) > 0:
        from fedray.strategies.dp_fedavg import DPFedAvg  # pulls in Opacus' accountant: only when asked for

        return DPFedAvg(clip_norm=plan["clip_norm"], noise_multiplier=plan["noise_multiplier"], noise=noise,
                        expected_clients=plan["clients_per_round"], server=strategy, canary_clients=canary_clients)
    return strategy


def _plain(fl: Federation) -> Strategy:
    if fl.strategy == "fedprox":
        return FedProx(weighting=fl.weighting, proximal_mu=fl.proximal_mu)
    if fl.strategy == "fedavgm":
        return FedAvgM(weighting=fl.weighting, server_lr=fl.server_lr, server_momentum=fl.server_momentum)
    adaptive = {"fedadagrad": FedAdagrad, "fedadam": FedAdam, "fedyogi": FedYogi}
    if fl.strategy in adaptive:
        return adaptive[fl.strategy](weighting=fl.weighting, server_lr=fl.server_lr, beta1=fl.beta1, beta2=fl.beta2,
                                     tau=fl.tau)
    return FedAvg(weighting=fl.weighting)


__all__ = ["ClientResult", "FedAvg", "FedAdagrad", "FedAdam", "FedAvgM", "FedProx", "FedYogi", "Params", "Strategy",
           "build_strategy", "STRATEGIES"]
