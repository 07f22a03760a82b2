"""Federated strategies: pure aggregation objects, no transport, in one registry.

``strategy=<name>`` picks ``conf/strategy/<name>.yaml`` and :data:`REGISTRY`\\[name]:
``fedavg``, ``fedprox``, ``fedavgm``, ``fedadagrad``, ``fedadam``, ``fedyogi``, or
any class a user registers with :func:`register` (:mod:`.base` says what a
strategy declares). The registry maps each name to its class and typed
settings: the config's schema for ``conf/strategy/<name>.yaml``,
:func:`build_strategy` and the sweep's ``strategy`` axis all read it, and no
other module branches on a strategy's name. Importing this package registers
the settings (``fedray.config.schema.COMPONENT_PACKAGES``); it imports neither
torch nor Ray.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from fedray.errors import FedrayError
from fedray.strategies.base import (REGISTRY, ClientInsertion, ClientResult, Params, Strategy, StrategySettings, register,
                                    strategy_class)
# Each module registers its strategies on import; this order is the order every message lists them in.
from fedray.strategies.fedavg import FedAvg  # noqa: I001
from fedray.strategies.fedprox import FedProx
from fedray.strategies.server_optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi

if TYPE_CHECKING:
    from fedray.config.schema import Config


def build_strategy(settings: StrategySettings, *, trees: bool = False) -> Strategy:
    """Instantiate the strategy ``settings`` name (``cfg.strategy``; a privacy mechanism may wrap it: ``wrap_strategy``).

    The registered class receives every field of its ``Settings`` but ``name``.
    ``trees=True`` (a tree model): trees cannot be averaged parameter by
    parameter, so the hospitals' trees are merged into one forest instead
    (:class:`~fedray.strategies.ensemble.TreeEnsemble`). Under DP-FedAvg
    (:mod:`fedray.privacy.mechanisms.dpfedavg`) a server optimizer
    (``fedavgm``, ``fedadam``, ...) steps on the noised mean update.
    """
    if trees:
        from fedray.strategies.ensemble import TreeEnsemble

        return TreeEnsemble(weighting=settings.weighting)
    cls = strategy_class(settings.name)
    return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "name"})


def client_settings(settings: StrategySettings) -> dict:
    """What every hospital's trainer takes from the strategy ``settings`` name (FedProx: ``proximal_mu``); often nothing.

    Asked before any round (a hospital builds its trainer once), of the
    strategy ``settings`` builds: as Flower's ``configure_fit``, but fixed for the run.
    """
    return build_strategy(settings).client_settings()


def check_strategy(cfg: Config) -> None:
    """Refuse, before Ray starts, a strategy the run's aggregation cannot serve (one line each)."""
    cls = strategy_class(cfg.strategy.name)
    if type(cfg.strategy) is not cls.Settings:  # strategy.name=<other> overridden on another strategy's file
        raise FedrayError(f"strategy.name={cls.name} does not fit the settings of the strategy file chosen "
                          f"({type(cfg.strategy).__name__}): select it with strategy={cls.name}")
    if cfg.fl.secure_aggregation and not cls.aggregates_by_sum:
        sums = ", ".join(name for name, c in REGISTRY.items() if c.aggregates_by_sum)
        raise FedrayError(f"strategy={cls.name} with fl.secure_aggregation=true: {cls.name} needs each "
                          "hospital's model, and the driver sees only their masked sum; set "
                          f"fl.secure_aggregation=false, or use a strategy that aggregates by a mean ({sums})")


__all__ = ["REGISTRY", "ClientInsertion", "ClientResult", "FedAvg", "FedAdagrad", "FedAdam", "FedAvgM", "FedProx",
           "FedYogi", "Params", "Strategy", "StrategySettings", "build_strategy", "check_strategy", "client_settings", "register",
           "strategy_class"]
