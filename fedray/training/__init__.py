"""Local training at a hospital: plain SGD, or DP-SGD when privacy is on (pure torch, no Ray)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedray.data.augment import get_augment
from fedray.data.whitening import ColorWhitening
from fedray.models import build_model
from fedray.training.local import LocalTrainer


def dp_sgd_active(cfg: dict) -> bool:
    """Record-level DP-SGD with a finite ε; ε = ∞ is the non-private baseline and bypasses Opacus."""
    privacy = cfg.get("privacy") or {}
    return privacy.get("name") == "dpsgd" and not math.isinf(float(privacy["epsilon"]))


def build_training_model(cfg: dict, *, num_classes: int) -> nn.Module:
    """The model every hospital and the driver share: DP-compatible (GroupNorm) under DP-SGD.

    The driver must build the same architecture as the hospitals, or their
    state dicts would not match.
    """
    model = build_model(cfg["model"], num_classes=num_classes, image_size=cfg["data"]["image_size"])
    if dp_sgd_active(cfg):
        from fedray.privacy.compat import make_dp_compatible

        model = make_dp_compatible(model)
    return model


def build_trainer(
    *, cfg: dict, model: nn.Module, images: np.ndarray, labels: np.ndarray,
    whitening: ColorWhitening, device: torch.device, hospital: int,
) -> LocalTrainer:
    """The trainer for hospital ``hospital``: DP-SGD under ``privacy=dpsgd`` with finite ε, else plain."""
    common = dict(model=model, images=images, labels=labels, train_cfg=cfg["train"], whitening=whitening,
                  augment=get_augment(cfg["data"].get("augment", "flips")), device=device, seed=cfg["seed"],
                  hospital=hospital)
    if not dp_sgd_active(cfg):
        return LocalTrainer(**common)
    from fedray.training.private import DPSGDTrainer  # Opacus costs seconds to import; only DP runs pay it

    privacy = cfg["privacy"]
    plan = privacy["hospitals"][hospital]
    return DPSGDTrainer(**common, noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                        max_grad_norm=privacy["max_grad_norm"], accountant=privacy["accountant"],
                        grad_sample_mode=privacy.get("grad_sample_mode"))


__all__ = ["LocalTrainer", "build_trainer", "build_training_model", "dp_sgd_active"]
