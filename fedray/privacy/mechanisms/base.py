r"""What every privacy mechanism is: a typed, frozen plan with its refusals, releases, events and hooks.

A mechanism is one module of this package holding one :class:`Mechanism`
subclass, registered under its ``privacy=<name>`` (:func:`register`, as
Opacus' ``accountants/registry.py`` registers accountants). The class owns
everything that differs between mechanisms, so no other module branches on a
mechanism's name:

- ``refuse(cfg, context)``: the combinations under which its guarantee would
  not hold (one line each, naming the alternative), before Ray starts;
- ``resolve(cfg, context)``: the frozen per-run plan every process receives;
- ``hospital_releases()`` and ``output_releases()``: the allowlists of what a
  hospital may send and what the run may write (:mod:`fedray.privacy.ledger`);
- ``events(states)``: each privacy unit's dp-accounting events, composed once
  by :func:`fedray.privacy.ledger.compose_epsilon` into the ledger;
- hooks into training (``prepare_model``, ``prepare_records``, ``trainer``,
  ``declared_count``, ``tree_epsilon``), aggregation (``wrap_strategy``), the
  secure sum (``secure_round``) and where an audit may insert its own
  contribution under the guarantee (``insertion_point``).

The defaults here are the non-private behaviour: :class:`NonPrivate` is
``privacy=none`` and every mechanism's ε = ∞ baseline (no clipping, no noise,
no claim). A subclass overrides only what it changes.

The context a plan is resolved in (:class:`PlanContext`) holds the public
per-hospital slot counts: real training records plus the record slots an
audit dealt to that hospital, whether it filled each slot or not, and how
many of them are the audit's. Under zero-out neighbouring
(:mod:`fedray.privacy.ledger`) those counts are public, and nothing the plan
fixes (q, T, σ, FedAvg weights, the expected batch size) depends on which
slots the auditor secretly filled. The ledger states them per hospital only
where a public output release covers them (:mod:`.counts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from fedray.config.schema import Config
from fedray.errors import FedrayError
from fedray.privacy.bias_calibration import CALIBRATION_FIELD
from fedray.privacy.ledger import Release, Releases, compose_epsilon
from fedray.privacy.mechanisms.counts import bounding_site, hospital_rows, record_counts
from fedray.privacy.mechanisms.releases import feature_cache_timing
from fedray.privacy.randomness import REPRODUCIBLE_DESCRIPTION, SECRET_DESCRIPTION

AGGREGATION = {False: "plain: the driver sees each hospital's update",
               True: "secure: the driver sees only masked updates and their sum"}
NON_PRIVATE_NOTE = "non-private: no clipping, no noise"

REGISTRY: dict[str, type[Mechanism]] = {}


def register(cls: type[Mechanism]) -> type[Mechanism]:
    """Register a mechanism class under ``cls.name`` (a decorator; a test may register its own)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def mechanism_class(name: str) -> type[Mechanism]:
    if name not in REGISTRY:
        raise FedrayError(f"unknown privacy mechanism {name!r}: set privacy to one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class PlanContext:
    """What the plan depends on besides the config: public slot counts, range provenance, preprocessing."""

    slot_counts: tuple[int, ...]
    audit_slots: tuple[int, ...] = ()  # of each hospital's slots, those an audit dealt it (empty: none)
    ranges_public: bool = True
    preprocessing: tuple[dict, ...] = ()  # one entry per hospital and private statistic (the input map's)
    num_features: int | None = None  # a table's column count; None for images
    num_classes: int | None = None
    sites: tuple[str, ...] = ()  # each hospital's site under a natural partition (public: who takes part); else ()


@dataclass(frozen=True)
class InsertionPoint:
    """Where an audit may add a contribution of its own that this plan's guarantee covers exactly like a unit's.

    - ``"record_gradient"``: one more record's gradient in each hospital's per-record gradient sum, of norm at
      most ``norm`` (the clipping norm; None where nothing is clipped, so the audit picks it), sampled like a
      record (:mod:`fedray.training.hooks`);
    - ``"client_update"``: one more client's update in the driver's clipped sum, of norm ``norm``, taking part
      with probability ``sample_rate`` a round (:class:`fedray.strategies.base.ClientInsertion`);
    - None: nowhere; ``note`` says why.
    """

    kind: str | None
    norm: float | None = None
    sample_rate: float = 1.0
    note: str = ""


# -- what every run may publish: the shared part of the output allowlist --------------------------------
@dataclass(frozen=True)
class Mechanism:
    """A resolved privacy plan (frozen; crosses process boundaries). Defaults: no DP claim."""

    name: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ("image", "table", "tree")
    unit: ClassVar[str | None] = None
    neighbouring: ClassVar[str] = "zero-out"
    trust: ClassVar[str] = "everyone: no claim"
    per_sample_gradients: ClassVar[bool] = False  # memory planning: DP-SGD's per-sample gradients
    # whether its ledger charges train.bias_calibration_rounds' summed predictions (fedray.privacy.bias_calibration)
    calibrates_bias: ClassVar[bool] = True
    # z of the masked release whose noise the hospitals add in shares (train.head_init=prototypes' class sums), as
    # ``masked_release_noise(cfg, released, total_slots=N)`` after the statistics ``released``; None: its ledger
    # charges no such release, and centre_l2 / head_init=prototypes are refused under it
    masked_release_noise: ClassVar[Callable[..., float] | None] = None
    # False: the hospitals train nothing (the model is built from releases before the run): one round, untrained
    trains: ClassVar[bool] = True
    # a hospital's steps in each local epoch when the mechanism fixes them (distributed DP-SGD's one); None: an
    # epoch over its records. Its epsilon = inf baseline keeps them, so the frontier's inf point trains alike
    fixed_epoch_steps: ClassVar[int | None] = None

    mechanism: str  # the config's privacy.name (a baseline keeps its mechanism's name)
    epsilon: float
    delta: float | None
    reproducible_noise: bool
    secure_aggregation: bool
    num_hospitals: int
    slot_counts: tuple[int, ...] = ()  # public record slots per hospital (records plus an audit's record slots)
    audit_slots: tuple[int, ...] = ()  # of those, the audit's record slots per hospital (empty: none)
    clients_per_round: int | None = None
    cross_validated: bool = False
    accountant: str = "rdp"
    preprocessing: tuple[dict, ...] = ()
    sites: tuple[str, ...] = ()  # each hospital's site under a natural partition; else ()
    bias_calibration_rounds: int = 0  # summed-prediction releases after the last round (train.bias_calibration_*)
    bias_calibration_noise_multiplier: float = 0.0
    # the config's mechanism trains nothing (its class's ``trains``), kept by its epsilon = inf baseline; a field, so
    # that a process whose registry lacks a user's mechanism reads it from the plan
    trains_nothing: bool = False
    epoch_steps: int | None = None  # the config's mechanism's ``fixed_epoch_steps``, kept by its baseline alike

    # -- resolution ------------------------------------------------------------------------------------
    @classmethod
    def refuse(cls, cfg: Config, context: PlanContext | None = None) -> None:
        """Raise FedrayError for a combination under which this mechanism's guarantee would not hold."""

    @classmethod
    def common(cls, cfg: Config, context: PlanContext) -> dict:
        declared = mechanism_class(cfg.privacy.name)  # the config's mechanism, whose facts a baseline keeps
        return dict(mechanism=cfg.privacy.name, epsilon=float(getattr(cfg.privacy, "epsilon", math.inf)),
                    delta=getattr(cfg.privacy, "delta", None), reproducible_noise=cfg.privacy.reproducible_noise,
                    secure_aggregation=cfg.fl.secure_aggregation, num_hospitals=len(context.slot_counts),
                    slot_counts=tuple(context.slot_counts), audit_slots=tuple(context.audit_slots),
                    clients_per_round=cfg.fl.clients_per_round, cross_validated=cfg.cv.folds > 1,
                    preprocessing=tuple(context.preprocessing), sites=tuple(context.sites),
                    bias_calibration_rounds=cfg.train.bias_calibration_rounds,
                    bias_calibration_noise_multiplier=cfg.train.bias_calibration_noise_multiplier,
                    trains_nothing=not declared.trains, epoch_steps=declared.fixed_epoch_steps)

    @classmethod
    def resolve(cls, cfg: Config, context: PlanContext) -> Mechanism:
        return cls(**cls.common(cfg, context))

    # -- what the plan is ------------------------------------------------------------------------------
    @property
    def claims_dp(self) -> bool:
        return False

    @property
    def calibration_noise(self) -> float | None:
        """The noise multiplier of each hospital's summed-prediction release; None: exact sums, no claim."""
        return self.bias_calibration_noise_multiplier if self.claims_dp else None

    @property
    def sampled(self) -> bool:
        return self.clients_per_round is not None and self.clients_per_round < self.num_hospitals

    # -- hooks: training ----------------------------------------------------------------------------------
    def prepare_model(self, model):
        """The architecture every party builds (DP-SGD swaps BatchNorm for GroupNorm)."""
        return model

    def prepare_records(self, inputs, labels, *, num_classes: int, input_map, noise):
        """A hospital's records as training sees them (local DP privatises them here)."""
        return inputs, labels

    def trainer(self, common: dict, hospital: int):
        """A trainer built from ``common`` (LocalTrainer's arguments), or None for the plain LocalTrainer."""
        return None

    @property
    def tree_epsilon(self) -> float:
        return math.inf

    def declared_count(self, hospital: int, actual: int) -> int | None:
        """The record count hospital ``hospital`` reports with its update (FedAvg's weight); None: not sent."""
        return actual

    # -- hooks: aggregation, secure sum, audit --------------------------------------------------------------
    def wrap_strategy(self, strategy, *, noise, insertions=()):
        """The strategy the driver runs; ``insertions`` are for an ``insertion_point`` of kind ``client_update``."""
        if insertions:
            raise ValueError(f"privacy={self.mechanism} has no client sum to insert a client into")
        return strategy

    def secure_round(self, global_params: dict, *, weighted: bool, max_abs: float, max_samples: int):
        from fedray.privacy.secure_round import SecureRound

        return SecureRound.for_fedavg(global_params, weighted=weighted, max_abs=max_abs, max_samples=max_samples)

    def insertion_point(self) -> InsertionPoint:
        """Without a mechanism nothing is clipped: a record gradient of any norm is one more record."""
        return InsertionPoint("record_gradient")

    # -- releases ---------------------------------------------------------------------------------------
    def hospital_releases(self, hospital: int) -> Releases:
        """What hospital ``hospital`` may send: anything without a claim; under secure aggregation, whose own
        promise is that the driver sees only sums, just its masked payload."""
        if not self.secure_aggregation:
            return Releases(f"hospital {hospital}'s message", (), claim=False)
        calibration = (Release("bias calibration", (CALIBRATION_FIELD,), "outside",
                               "its training records' exact summed predictions, which the driver sees alone: outside "
                               "secure aggregation's promise", party=f"hospital {hospital}"),)
        return Releases(f"hospital {hospital}'s message", (
            Release("masked payload", ("masked_payload",), "public",
                    "uniform on the ring: only the sum of all hospitals' payloads is informative",
                    party=f"hospital {hospital}"), feature_cache_timing(hospital),
            *(calibration if self.bias_calibration_rounds else ())))

    def output_releases(self) -> Releases:
        return Releases("run output", (), claim=False)

    def events(self, hospital_states: list[dict]) -> dict[str, list]:
        """Each privacy unit's dp-accounting events: one key per hospital ("hospital k"), or a single key (e.g.
        "each hospital") where the units of every hospital compose the same events."""
        return {}

    def planned_states(self) -> list[dict]:
        """The hospitals' states if the run takes every planned step (what a plan costs before it runs)."""
        return [{} for _ in range(self.num_hospitals)]

    # -- the ledger -------------------------------------------------------------------------------------
    def ledger(self, hospital_states: list[dict]) -> dict:
        return {"mechanism": self.mechanism, "target_epsilon": math.inf, "epsilon": math.inf, "delta": self.delta,
                "guarantee": False, "note": NON_PRIVATE_NOTE, "aggregation": AGGREGATION[self.secure_aggregation]}

    def noise_line(self) -> str:
        return REPRODUCIBLE_DESCRIPTION if self.reproducible_noise else SECRET_DESCRIPTION


@dataclass(frozen=True)
class PrivateMechanism(Mechanism):
    """A mechanism with a finite ε: its ledger composes its declared events per unit, once, in dp-accounting."""

    calibrates_bias: ClassVar[bool] = False  # a mechanism that charges the calibration's releases says so

    @property
    def claims_dp(self) -> bool:
        return True

    def hospital_operations(self, hospital: int) -> tuple[Release, ...]:
        """What every hospital may report of its operations: the feature cache's timing, never its record count
        (the actual count would reveal how many of an audit's record slots the auditor filled)."""
        return (feature_cache_timing(hospital),)

    def declared_count(self, hospital: int, actual: int) -> int | None:
        """The public slot count, never the actual count, which would reveal how many audit slots were filled."""
        return self.slot_counts[hospital] if hospital < len(self.slot_counts) else actual

    def compose(self, events: list) -> float:
        return compose_epsilon(events, delta=self.delta or 0.0, accountant=self.accountant,
                               neighbouring=self.neighbouring)

    def rdp(self, hospital_states: list[dict]) -> list[float]:
        """The run's RDP curve per unit at ``RDP_ORDERS``: the maximum over its units (each record or hospital
        lies in one), which a sweep composes across trials without knowing the mechanism."""
        from fedray.privacy.ledger import rdp_curve

        curves = [rdp_curve(events, neighbouring=self.neighbouring)
                  for events in self.events(hospital_states).values()]
        return [max(values) for values in zip(*curves)]

    def cross_check(self, events: list) -> float | None:
        other = "prv" if self.accountant == "rdp" else "rdp"
        return compose_epsilon(events, delta=self.delta or 0.0, accountant=other, neighbouring=self.neighbouring)

    def ledger(self, hospital_states: list[dict]) -> dict:
        per_unit = self.events(hospital_states)
        epsilons = {unit: self.compose(events) for unit, events in per_unit.items()}
        worst = max(epsilons, key=epsilons.get)
        guarantee = not self.reproducible_noise
        checked = self.cross_check(per_unit[worst])
        other = "prv" if self.accountant == "rdp" else "rdp"
        return {
            "mechanism": self.mechanism, "unit": self.unit, "neighbouring": self.neighbouring,
            "target_epsilon": self.epsilon, "epsilon": epsilons[worst], "delta": self.delta,
            "accountant": self.accountant,
            **({} if checked is None else {f"epsilon_{other}_cross_check": checked}),
            "bounding_unit": worst, **bounding_site(self, worst), "record_counts": record_counts(self),
            "hospitals": hospital_rows(self, hospital_states, epsilons),
            "events": {u: [repr_event(e) for e in events] for u, events in per_unit.items()},
            "rdp": self.rdp(hospital_states),
            "trust": self.trust_line(), "guarantee": guarantee, "noise": self.noise_line(),
            "aggregation": AGGREGATION[self.secure_aggregation],
            "hospital_releases": [r.as_dict() for r in self.hospital_releases(0).releases],
            "output_releases": [r.as_dict() for r in self.output_releases().releases],
            "outside_guarantee": self.output_releases().outside(), **self.details(hospital_states, epsilons),
        }

    def trust_line(self) -> str:
        return self.trust

    def hospital_schedule(self, hospital: int, state: dict) -> dict:
        """What hospital ``hospital``'s ledger row states of its schedule (q, σ, steps), given its ``state``."""
        return {}

    def details(self, hospital_states: list[dict], epsilons: dict[str, float]) -> dict:
        """Mechanism-wide ledger fields (clip norms, notes); ``epsilons``: each unit's composed ε."""
        return {}


@dataclass(frozen=True)
class PureMechanism(PrivateMechanism):
    """A pure ε-DP mechanism (δ = 0): its events add up (:func:`fedray.privacy.ledger.pure_epsilon`)."""

    description: ClassVar[str] = ""

    @classmethod
    def resolve(cls, cfg: Config, context: PlanContext) -> Mechanism:
        return cls(**{**cls.common(cfg, context), "delta": 0.0, "accountant": "pure"})

    def compose(self, events: list) -> float:
        from fedray.privacy.ledger import pure_epsilon

        return pure_epsilon(events)

    def cross_check(self, events: list) -> None:
        return None  # basic composition is exact for pure DP: there is no second accountant to ask

    def rdp(self, hospital_states: list[dict]) -> list[float]:
        """ε-DP implies (α, ε)-RDP at every order (Mironov 2017, Prop. 3)."""
        from fedray.privacy.accounting import RDP_ORDERS

        epsilon = max(self.compose(events) for events in self.events(hospital_states).values())
        return [epsilon] * len(RDP_ORDERS)

    def details(self, hospital_states: list[dict], epsilons: dict[str, float]) -> dict:
        return {"note": self.description}


def repr_event(event: Any) -> str:
    from fedray.privacy.ledger import describe_event

    return describe_event(event)


__all__ = ["AGGREGATION", "Mechanism", "NON_PRIVATE_NOTE", "PlanContext", "PrivateMechanism", "PureMechanism",
           "REGISTRY", "InsertionPoint", "mechanism_class", "register"]
