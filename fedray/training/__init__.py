"""Local training at a hospital and prediction at the driver, for every model family (pure torch/sklearn, no Ray).

:func:`build_trainer` and :func:`build_evaluator` are the only places that
decide which trainer a model and a privacy mechanism need:

================  ==================================  ================================
model family      trainer                             privacy it can take
================  ==================================  ================================
image backbone    LocalTrainer / DPSGDTrainer         none, dpsgd, dpfedavg
mlp, logreg       LocalTrainer / DPSGDTrainer         the same, and laplace_input
trees             TreeTrainer (sklearn, diffprivlib)  none, dp_tree, laplace_input
================  ==================================  ================================

Every trainer has the same interface (``fit``, ``load``, ``export``,
``predict_proba``, ``num_samples``, ``privacy_state``), so hospitals, the
driver and the auditor never ask which one they hold.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedray.data.augment import get_augment
from fedray.data.input_map import InputMap
from fedray.models import build_model, build_table_model, model_family
from fedray.training.local import Evaluator, LocalTrainer


def _privacy(cfg: dict) -> dict:
    return cfg.get("privacy") or {"name": "none"}


def mechanism_active(cfg: dict, name: str) -> bool:
    """``privacy=name`` with a finite ε; ε = ∞ is the non-private baseline and bypasses the mechanism."""
    privacy = _privacy(cfg)
    return privacy.get("name") == name and not math.isinf(float(privacy.get("epsilon", math.inf)))


def dp_sgd_active(cfg: dict) -> bool:
    """Record-level DP-SGD with a finite ε (Opacus)."""
    return mechanism_active(cfg, "dpsgd")


def build_training_model(cfg: dict, *, num_classes: int) -> nn.Module:
    """The torch model every hospital and the driver share: DP-compatible (GroupNorm) under DP-SGD.

    The driver must build the same architecture as the hospitals, or their
    state dicts would not match. Tree families have no torch model.
    """
    model_cfg = cfg["model"]
    if model_family(model_cfg["name"]) == "table":
        model = build_table_model(model_cfg, num_classes=num_classes, num_features=int(cfg["data"]["num_features"]))
    else:
        model = build_model(model_cfg, num_classes=num_classes, image_size=cfg["data"]["image_size"])
    if dp_sgd_active(cfg):
        from fedray.privacy.compat import make_dp_compatible

        model = make_dp_compatible(model)
    return model


def build_evaluator(cfg: dict, *, num_classes: int, input_map: InputMap, device: torch.device):
    """A predict-only model of the experiment's family (the driver's and the auditor's)."""
    if model_family(cfg["model"]["name"]) == "tree":
        from fedray.training.trees import TreeEvaluator

        return TreeEvaluator(num_classes=num_classes, input_map=input_map)
    return Evaluator(model=build_training_model(cfg, num_classes=num_classes), train_cfg=cfg["train"],
                     input_map=input_map, device=device)


def build_trainer(
    *, cfg: dict, num_classes: int, inputs: np.ndarray, labels: np.ndarray,
    input_map: InputMap, device: torch.device, hospital: int, private: bool = True,
):
    """The trainer for hospital ``hospital`` under the experiment's privacy mechanism.

    ``private=False`` gives the same architecture trained without any
    mechanism (the auditor's reference models).
    """
    privacy = _privacy(cfg) if private else {"name": "none"}
    private_cfg = {**cfg, "privacy": privacy}
    if mechanism_active(private_cfg, "laplace_input"):
        from fedray.privacy.laplace import perturb_hospital_rows

        inputs = perturb_hospital_rows(inputs, epsilon=float(privacy["epsilon"]), input_map=input_map,
                                       seed=cfg["seed"], hospital=hospital)
    if model_family(cfg["model"]["name"]) == "tree":
        from fedray.training.trees import TreeTrainer

        epsilon = float(privacy["epsilon"]) if mechanism_active(private_cfg, "dp_tree") else math.inf
        return TreeTrainer(model_cfg=cfg["model"], inputs=inputs, labels=labels, num_classes=num_classes,
                           input_map=input_map, epsilon=epsilon, seed=cfg["seed"], hospital=hospital)
    model = build_training_model(cfg, num_classes=num_classes)
    augment = get_augment(cfg["data"].get("augment", "flips") if np.ndim(inputs) == 4 else "none")
    common = dict(model=model, inputs=inputs, labels=labels, train_cfg=cfg["train"], input_map=input_map,
                  augment=augment, device=device, seed=cfg["seed"], hospital=hospital)
    if not dp_sgd_active(private_cfg):
        return LocalTrainer(**common)
    from fedray.training.private import DPSGDTrainer  # Opacus costs seconds to import; only DP runs pay it

    plan = privacy["hospitals"][hospital]
    return DPSGDTrainer(**common, noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                        max_grad_norm=privacy["max_grad_norm"], accountant=privacy["accountant"],
                        grad_sample_mode=privacy.get("grad_sample_mode"))


__all__ = ["LocalTrainer", "build_evaluator", "build_trainer", "build_training_model", "dp_sgd_active",
           "mechanism_active"]
