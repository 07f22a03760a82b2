"""Federated strategies: pure aggregation objects, no transport, in one registry.

``fl.strategy=<name>`` picks :data:`REGISTRY`\\[name]: ``fedavg``, ``fedprox``,
``fedavgm``, ``fedadagrad``, ``fedadam``, ``fedyogi``, or any class a user
registers with :func:`register` (:mod:`.base` says what a strategy declares).
The registry is the one list: the schema's choices for ``fl.strategy``,
:func:`build_strategy` and the sweep's ``strategy`` axis all read it, and no
other module branches on a strategy's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedray.errors import FedrayError
from fedray.strategies.base import (REGISTRY, STRATEGY_NAMES, ClientResult, Params, Strategy, register,
                                    strategy_class)
# Each module registers its strategies on import; this order is the order every message lists them in.
from fedray.strategies.fedavg import FedAvg  # noqa: I001
from fedray.strategies.fedprox import FedProx
from fedray.strategies.server_optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi

if TYPE_CHECKING:  # the schema reads this package's registry for its choices: no import back at run time
    from fedray.config.schema import Config, Federation


def build_strategy(fl: Federation, *, trees: bool = False) -> Strategy:
    """Instantiate the strategy named by ``fl.strategy`` (a privacy mechanism may wrap it: ``wrap_strategy``).

    The registered class receives its declared ``settings`` from ``fl``.
    ``trees=True`` (a tree model): trees cannot be averaged parameter by
    parameter, so the hospitals' trees are merged into one forest instead
    (:class:`~fedray.strategies.ensemble.TreeEnsemble`). Under DP-FedAvg
    (:mod:`fedray.privacy.mechanisms.dpfedavg`) a server optimizer
    (``fedavgm``, ``fedadam``, ...) steps on the noised mean update.
    """
    if trees:
        from fedray.strategies.ensemble import TreeEnsemble

        return TreeEnsemble(weighting=fl.weighting)
    cls = strategy_class(fl.strategy)
    missing = [name for name in cls.settings if not hasattr(fl, name)]
    if missing:
        raise ValueError(f"strategy {cls.name!r} takes fl.{missing[0]}, which the Federation schema lacks: add it "
                         "to fedray/config/schema.py and conf/fl/fedavg.yaml")
    return cls(**{name: getattr(fl, name) for name in cls.settings})


def client_settings(fl: Federation) -> dict:
    """What every hospital's trainer takes from the strategy of ``fl`` (FedProx: ``proximal_mu``); often nothing.

    Asked before any round (a hospital builds its trainer once), of the
    strategy ``fl`` builds: as Flower's ``configure_fit``, but fixed for the run.
    """
    return build_strategy(fl).client_settings()


def check_strategy(cfg: Config) -> None:
    """Refuse, before Ray starts, a strategy the run's aggregation cannot serve (one line each)."""
    cls = strategy_class(cfg.fl.strategy)
    if cfg.fl.secure_aggregation and not cls.aggregates_by_sum:
        sums = ", ".join(name for name, c in REGISTRY.items() if c.aggregates_by_sum)
        raise FedrayError(f"fl.strategy={cls.name} with fl.secure_aggregation=true: {cls.name} needs each "
                          "hospital's model, and the driver sees only their masked sum; set "
                          f"fl.secure_aggregation=false, or use a strategy that aggregates by a mean ({sums})")


__all__ = ["REGISTRY", "STRATEGY_NAMES", "ClientResult", "FedAvg", "FedAdagrad", "FedAdam", "FedAvgM", "FedProx",
           "FedYogi", "Params", "Strategy", "build_strategy", "check_strategy", "client_settings", "register",
           "strategy_class"]
