"""The privacy mechanisms, one module each, in one registry (as Opacus keeps its accountants).

``privacy=<name>`` picks :data:`REGISTRY`\\[name]: ``none``, ``dpsgd``,
``dpfedavg``, ``laplace_input``, ``dp_tree``, ``dp_prototypes``, or any class a user registers
with :func:`register` (``docs/privacy.md`` shows a toy one). This module only
resolves and checks; what each mechanism is lives in its own file
(:mod:`.base` says what a mechanism must provide).

:func:`check_mechanism` refuses, before any data is read, every combination
that cannot keep its claim; :func:`plan_privacy` resolves the frozen plan for
the hospitals' public slot counts and refuses, before Ray starts, what only
the data can tell (ranges read from the data).
"""

from __future__ import annotations

import math

from fedray.config.schema import Config
from fedray.errors import FedrayError
from fedray.models import TORCH_TABLE_MODELS, TREE_MODELS, model_family
# Each module registers its mechanism on import; this order is the order every message lists them in.
from fedray.privacy.mechanisms import none  # noqa: F401, I001
from fedray.privacy.mechanisms import dpsgd  # noqa: F401
from fedray.privacy.mechanisms import distributed_dpsgd  # noqa: F401
from fedray.privacy.mechanisms import dpfedavg  # noqa: F401
from fedray.privacy.mechanisms import laplace_input  # noqa: F401
from fedray.privacy.mechanisms import dp_tree  # noqa: F401
from fedray.privacy.mechanisms import dp_prototypes  # noqa: F401
from fedray.privacy.mechanisms.base import (AGGREGATION, NON_PRIVATE_NOTE, REGISTRY, Mechanism, PlanContext,
                                            PrivateMechanism, InsertionPoint, mechanism_class, register)
from fedray.privacy.mechanisms.releases import common_outputs
from fedray.privacy.mechanisms.none import NonPrivate
from fedray.strategies import check_strategy

FAMILY_NAMES = {"image": "image backbones", "table": ", ".join(TORCH_TABLE_MODELS), "tree": ", ".join(TREE_MODELS)}


def claims_dp(cfg: Config) -> bool:
    """The config asks for a DP claim: a mechanism other than ``none`` at a finite ε."""
    return cfg.privacy.name != "none" and not math.isinf(float(getattr(cfg.privacy, "epsilon", math.inf)))


def check_pair(model_name: str, family: str, name: str) -> None:
    """A model and mechanism pair that does not exist is a one-line error naming the pairs that do."""
    if family not in mechanism_class(name).families:
        pairs = "; ".join(f"{names} x {'|'.join(n for n, m in REGISTRY.items() if f in m.families)}"
                          for f, names in FAMILY_NAMES.items())
        raise FedrayError(f"model {model_name} cannot be trained with privacy={name}: the pairs that exist "
                          f"are {pairs}")


def check_mechanism(cfg: Config, context: PlanContext | None = None) -> None:
    """Refuse, before Ray starts, every combination that cannot give the guarantee it would report."""
    family = model_family(cfg.model.name)
    check_pair(cfg.model.name, family, cfg.privacy.name)
    if claims_dp(cfg):
        mechanism_class(cfg.privacy.name).refuse(cfg, context)
        if context is not None and not context.ranges_public:
            raise FedrayError(f"privacy={cfg.privacy.name} on data={cfg.data.name} whose feature ranges were read "
                              "from the data: the min and max are single patients' exact values and would leave "
                              "uncharged; declare public ranges (data.feature_ranges) or run privacy=none")
    sampled = cfg.fl.clients_per_round is not None and cfg.fl.clients_per_round < cfg.fl.num_hospitals
    if cfg.fl.clients_per_round is not None and cfg.fl.clients_per_round > cfg.fl.num_hospitals:
        raise FedrayError(f"fl.clients_per_round={cfg.fl.clients_per_round} is more than the "
                          f"{cfg.fl.num_hospitals} hospitals: use at most fl.clients_per_round={cfg.fl.num_hospitals}")
    if sampled and (cfg.mode != "federated" or family == "tree"):
        raise FedrayError(f"fl.clients_per_round with mode={cfg.mode} and model={cfg.model.name}: client sampling "
                          "needs mode=federated and a model trained in rounds; set fl.clients_per_round=null")
    if cfg.fl.secure_aggregation and (cfg.mode != "federated" or family == "tree" or cfg.fl.num_hospitals < 2):
        raise FedrayError(f"fl.secure_aggregation=true with mode={cfg.mode}, model={cfg.model.name} and "
                          f"{cfg.fl.num_hospitals} hospital(s): masked sums need mode=federated, at least two "
                          "hospitals and a model whose parameters add up (not a tree); set fl.secure_aggregation=false")
    if cfg.train.bias_calibration_rounds:
        check_bias_calibration(cfg, family)
    if cfg.train.head_init == "prototypes" or cfg.train.feature_norm == "centre_l2":
        check_prototype_head(cfg)
    check_strategy(cfg)


def check_bias_calibration(cfg: Config, family: str) -> None:
    """``train.bias_calibration_rounds`` needs one global model with a trained last layer, and a ledger that
    charges the hospitals' summed predictions (:mod:`fedray.privacy.bias_calibration`)."""
    off = "or set train.bias_calibration_rounds=0"
    if not mechanism_class(cfg.privacy.name).trains:
        raise FedrayError(f"train.bias_calibration_rounds under privacy={cfg.privacy.name}, which trains nothing: "
                          f"its head is built from its releases; {off}")
    if family == "tree" or cfg.mode != "federated":
        raise FedrayError(f"train.bias_calibration_rounds with mode={cfg.mode} and model={cfg.model.name}: it "
                          f"shifts the biases of one global model's last layer; use mode=federated and a neural "
                          f"model, {off}")
    if claims_dp(cfg) and not mechanism_class(cfg.privacy.name).calibrates_bias:
        able = ", ".join(n for n, m in REGISTRY.items() if m.calibrates_bias and n != "none")
        raise FedrayError(f"train.bias_calibration_rounds under privacy={cfg.privacy.name}: its ledger does not "
                          f"charge the hospitals' summed predictions; use privacy={able}, {off}")


def check_prototype_head(cfg: Config) -> None:
    """``train.head_init=prototypes`` needs the centred unit map; both need a federated run and, under DP, a ledger
    that charges masked releases whose noise the hospitals add in shares (:mod:`fedray.privacy.prototypes`)."""
    off = "or set train.head_init=default and train.feature_norm=none"
    if cfg.train.head_init == "prototypes" and cfg.train.feature_norm != "centre_l2":
        raise FedrayError(f"train.head_init=prototypes with train.feature_norm={cfg.train.feature_norm}: the "
                          f"prototypes are means of centred unit features; set train.feature_norm=centre_l2, {off}")
    if cfg.mode != "federated":
        raise FedrayError(f"train.feature_norm=centre_l2 with mode={cfg.mode}: its sums are released through the "
                          f"federation's secure aggregation; use mode=federated, {off}")
    if claims_dp(cfg) and mechanism_class(cfg.privacy.name).masked_release_noise is None:
        able = ", ".join(n for n, m in REGISTRY.items() if m.masked_release_noise is not None)
        raise FedrayError(f"train.feature_norm=centre_l2 under privacy={cfg.privacy.name}: each hospital adds only a "
                          f"share of the noise, which only a masked sum completes; use privacy={able}, {off}")


def plan_privacy(cfg: Config, context: PlanContext) -> Mechanism:
    """The frozen plan of ``cfg.privacy`` for these public slot counts; every bad parameter fails here.

    ε = ∞ resolves to the mechanism's non-private baseline (:class:`NonPrivate`, keeping the mechanism's name).
    """
    check_mechanism(cfg, context)
    if not claims_dp(cfg):
        return NonPrivate(**Mechanism.common(cfg, context))
    return mechanism_class(cfg.privacy.name).resolve(cfg, context)


__all__ = ["AGGREGATION", "FAMILY_NAMES", "Mechanism", "NON_PRIVATE_NOTE", "NonPrivate", "PlanContext",
           "PrivateMechanism", "REGISTRY", "InsertionPoint", "check_mechanism", "check_pair", "claims_dp",
           "common_outputs", "mechanism_class", "plan_privacy", "register"]
