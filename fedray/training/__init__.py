"""Local training at a hospital: plain SGD, or DP-SGD when privacy is on (pure torch, no Ray)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedray.data.whitening import ColorWhitening
from fedray.training.local import LocalTrainer


def build_trainer(
    *, cfg: dict, model: nn.Module, images: np.ndarray, labels: np.ndarray,
    whitening: ColorWhitening, device: torch.device, hospital: int,
) -> LocalTrainer:
    """The trainer for hospital ``hospital``: DP-SGD under ``privacy=dpsgd`` with finite ε, else plain."""
    common = dict(model=model, images=images, labels=labels, train_cfg=cfg["train"], whitening=whitening,
                  augment=cfg["data"].get("augment", "flips") == "flips", device=device, seed=cfg["seed"],
                  hospital=hospital)
    privacy = cfg.get("privacy") or {}
    if privacy.get("name") == "dpsgd" and not math.isinf(privacy["epsilon"]):
        from fedray.training.private import DPSGDTrainer

        plan = privacy["hospitals"][hospital]
        return DPSGDTrainer(**common, noise_multiplier=plan["noise_multiplier"], sample_rate=plan["sample_rate"],
                            max_grad_norm=privacy["max_grad_norm"], accountant=privacy["accountant"])
    return LocalTrainer(**common)


__all__ = ["LocalTrainer", "build_trainer"]
