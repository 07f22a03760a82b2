"""Whether a party's GPU share can hold its backbone's training step: checked by a single run and by a sweep.

Ray does not cap a fractional GPU's memory, so a share too small for the
backbone's step (:mod:`fedray.models.memory`: parameters, optimizer state,
activations and, under a mechanism that needs them, per-sample gradients) is
refused in one line before any actor is placed.
"""

from __future__ import annotations

import torch

from fedray.config import Config
from fedray.models import model_family
from fedray.models.memory import check_memory_fits, estimate_training_memory
from fedray.privacy.mechanisms import claims_dp, mechanism_class

# Memory of the cards Ray reports as ``accelerator_type:<name>`` (GB), for when this process sees no GPU itself.
GPU_MEMORY_GB = {"T4": 16, "V100": 16, "A10G": 24, "L4": 24, "L40S": 48, "A100": 40, "A100-80G": 80,
                 "H100": 80, "H200": 141}


def gpu_memory_bytes(nodes: list[dict[str, float]]) -> int | None:
    """The smallest GPU's memory on the cluster: this process's own card, else the nodes' accelerator types."""
    if torch.cuda.is_available():
        return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    sizes = [GPU_MEMORY_GB[key.split(":", 1)[1]] for node in nodes for key in node
             if key.startswith("accelerator_type:") and key.split(":", 1)[1] in GPU_MEMORY_GB]
    return int(min(sizes) * 1e9) if sizes else None


def check_memory_plan(cfg: Config, *, num_classes: int, gpu_bytes: int | None) -> None:
    """Refuse a trial whose per-hospital GPU share cannot hold its backbone's training step (image models on GPUs)."""
    if gpu_bytes is None or model_family(cfg.model.name) != "image" or cfg.resources.hospital.num_gpus <= 0:
        return
    dp_sgd = claims_dp(cfg) and mechanism_class(cfg.privacy.name).per_sample_gradients
    one_pass = min(cfg.train.batch_size, cfg.train.physical_batch_size or cfg.train.batch_size)
    estimate = estimate_training_memory(cfg.model, num_classes=num_classes, image_size=cfg.data.image_size,
                                        batch_size=one_pass, optimizer=cfg.train.optimizer, dp_sgd=dp_sgd,
                                        grad_sample_mode=getattr(cfg.privacy, "grad_sample_mode", None))
    check_memory_fits(estimate, gpu_share=cfg.resources.hospital.num_gpus, gpu_bytes=gpu_bytes,
                      model_name=cfg.model.name, batch_size=cfg.train.batch_size)
