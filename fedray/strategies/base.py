"""The strategy contract, and the one registry of strategies that ``strategy=<name>`` names.

Kept apart from transport (as in Flower): a strategy sees parameters, sample
counts and metrics, never Ray handles, so FedProx or FedAdam can be added as
another small subclass and tested with numpy alone.

A strategy speaks for itself (as Flower's strategies do through
``configure_fit``):

- ``name`` and ``Settings``: its ``strategy`` option (``conf/strategy/<name>.yaml``)
  and the typed settings of that file, a :class:`StrategySettings` dataclass
  whose fields (but ``name``) are its constructor's keywords
  (:func:`fedray.strategies.build_strategy` passes them). :func:`register` puts
  the class in :data:`REGISTRY` and its ``Settings`` in the config's schemas
  (``schema/strategy/<name>``): the one map that ``build_strategy`` and the
  sweep's ``strategy`` axis read;
- ``client_settings()``: what each hospital's local training needs from it
  (FedProx: its μ), read by :func:`fedray.training.build_trainer`;
- ``aggregates_by_sum`` and ``apply_update``: whether the next global model is
  a function of the hospitals' (weighted) mean alone, and that function. Secure
  aggregation and DP-FedAvg hand it only that mean; a strategy that needs the
  individual models (a trimmed mean, a median) leaves it False and is refused
  under ``fl.secure_aggregation=true`` before Ray starts
  (:func:`fedray.strategies.check_strategy`).

Adding a strategy is one module holding its settings dataclass and one
decorated subclass (imported by ``fedray/strategies/__init__.py``), plus its
``conf/strategy/<name>.yaml``, which names ``/schema/strategy/<name>@_here_``
and sets every field. ``docs/extending.md`` shows one whole (a test runs it);
``tests/strategies/test_toy_strategy.py`` adds one from a test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from fedray.config.checks import choice, text
from fedray.config.schema import ReadOnly, register_schema
from fedray.errors import FedrayError

import numpy as np

Params = dict[str, np.ndarray]


class ClientInsertion(Protocol):
    """A client that is not a hospital, joining a sum-based aggregation (an audit's clients are one).

    A strategy that takes insertions (DP-FedAvg) adds each one's update to the
    round's clipped updates, before the noise; its norm is bounded by the
    clipping norm, so the round's sensitivity and ε per client are unchanged.
    ``rng`` is the driver's secret stream for that insertion's participation.
    """

    def round_update(self, rng: np.random.Generator) -> Params: ...


@dataclass(frozen=True)
class ClientResult:
    """Everything a hospital sends back after local training.

    This is the complete payload the driver receives: model parameters, the
    number of samples trained on, and scalar metrics. No images or labels.
    """

    hospital: int
    params: Params
    num_samples: int | None  # None: not released under the mechanism (DP-FedAvg never sends it)
    metrics: dict[str, float] = field(default_factory=dict)
    observations: dict[str, dict] = field(default_factory=dict)  # an attachment's round report (an audit's view)


@dataclass
class StrategySettings(ReadOnly):
    """What every strategy's ``conf/strategy/<name>.yaml`` sets; a strategy with knobs subclasses it.

    ``weighting`` is how the hospitals' models are weighed: "samples"
    (:math:`n_k / \\sum_j n_j`, McMahan et al. 2017) or "uniform" (:math:`1/K`). Every
    strategy has one, since under tree models or secure aggregation the
    aggregation is a weighted mean whichever strategy is named.
    """

    name: str = text()
    weighting: str = choice("samples", "uniform")


class Strategy(ABC):
    """Aggregates one round of client results into new global parameters."""

    name: ClassVar[str] = ""  # its strategy option; a registered class sets its own
    Settings: ClassVar[type[StrategySettings]] = StrategySettings  # the schema of conf/strategy/<name>.yaml
    # The next global model depends on the hospitals' models only through their (weighted) mean, which
    # apply_update turns into it: masked sums (secure aggregation) and DP-FedAvg's noised sum then suffice.
    # False by default, so a strategy that needs every model (a trimmed mean, a median) is never handed a sum.
    aggregates_by_sum: ClassVar[bool] = False

    # Under client sampling a round may draw no hospital; most strategies then keep the global model,
    # DP-FedAvg still releases its noise (the accountant charged the round whoever took part).
    aggregates_empty_rounds = False

    def apply_update(self, global_params: Params, delta: Params) -> Params:
        """The next global model from a mean update ``delta`` (floating tensors): FedAvg adds it.

        Server optimizers take a step on it instead; DP-FedAvg and secure
        aggregation hand them their noised or unmasked mean this way (only
        to a strategy whose ``aggregates_by_sum`` is True).
        """
        return {name: (value + delta[name]).astype(value.dtype) if name in delta else value
                for name, value in global_params.items()}

    @abstractmethod
    def aggregate(
        self, server_round: int, global_params: Params, results: Sequence[ClientResult]
    ) -> Params:
        """Return the next global parameters from this round's results."""

    def client_settings(self) -> dict:
        """What every hospital's local training takes from this strategy (Flower's ``configure_fit``): none here.

        Keys are keyword arguments of the trainers (:class:`fedray.training.local.LocalTrainer`).
        """
        return {}


REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Register a strategy class and its ``Settings`` under its own ``cls.name`` (a decorator; a test may too).

    The name must be set on the class itself (a subclass never inherits its
    parent's, which would replace the parent) and not taken by another class;
    ``Settings`` becomes the schema ``schema/strategy/<name>`` that its YAML names.
    """
    name = vars(cls).get("name")
    if not name:
        raise ValueError(f"{cls.__name__} sets no name of its own: give it name = '<its strategy option>'")
    if REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"strategy name {name!r} is taken by {REGISTRY[name].__name__}")
    if not issubclass(cls.Settings, StrategySettings):
        raise ValueError(f"{cls.__name__}.Settings must subclass StrategySettings (name and weighting)")
    register_schema("strategy", name)(cls.Settings)
    REGISTRY[name] = cls
    return cls


def strategy_class(name: str) -> type[Strategy]:
    """The registered class of ``strategy=name``; an unknown name is one line naming the known ones."""
    if name not in REGISTRY:
        raise FedrayError(f"unknown strategy {name!r}: set strategy= to one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
