"""Federated strategies: pure aggregation objects, no transport."""

from fedray.config.schema import Federation
from fedray.strategies.base import ClientResult, Params, Strategy
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.fedprox import FedProx
from fedray.strategies.server_optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi")


def build_strategy(fl: Federation, *, trees: bool = False) -> Strategy:
    """Instantiate the strategy named by ``fl.strategy`` (a privacy mechanism may wrap it: ``wrap_strategy``).

    ``trees=True`` (a tree model): trees cannot be averaged parameter by
    parameter, so the hospitals' trees are merged into one forest instead
    (:class:`~fedray.strategies.ensemble.TreeEnsemble`). Under DP-FedAvg
    (:mod:`fedray.privacy.mechanisms.dpfedavg`) a server optimizer
    (``fedavgm``, ``fedadam``, ...) steps on the noised mean update.
    """
    if trees:
        from fedray.strategies.ensemble import TreeEnsemble

        return TreeEnsemble(weighting=fl.weighting)
    return _plain(fl)


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
