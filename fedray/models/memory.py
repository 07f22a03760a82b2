r"""How much accelerator memory one hospital needs to train a backbone, estimated before anything runs.

A hospital's training step holds, in fp32 (4 bytes a number):

- the weights W, their gradients and the optimizer's state (one momentum
  buffer for SGD, two moments for Adam): :math:`(2 + s)\,P` numbers for P
  parameters, s = 1 (SGD) or 2 (Adam);
- the activations of one forward/backward pass and their gradients:
  :math:`2\,B\,A`, with A the summed output size of every leaf module for one
  input and B the records of one pass (``train.physical_batch_size`` when set
  below the batch, else ``train.batch_size``);
- under DP-SGD, one gradient per example of every trainable parameter
  (Opacus' ``grad_sample``): :math:`B\,T` more for T trainable parameters.
  This is the term that dominates: VGG19's 139.6 M parameters at B = 32 need
  17.9 GB for the per-sample gradients alone. Ghost clipping and book-keeping
  (``grad_sample_mode="ghost"`` and ``"bookkeeping"``, which
  :func:`~fedray.privacy.opacus_wiring.choose_grad_sample_mode` picks for large
  models) never form them: only one norm per record and layer. Ghost clipping
  keeps the forward's graph for its second pass (within the :math:`2\,B\,A`
  term); book-keeping keeps every trainable layer's output gradient until the
  backward ends, at most :math:`B\,A` more (on CPU at B = 32, resnet50 at 75 px
  peaked 268 MB above ghost clipping, VGG19 at 32 px the same: docs/benchmarks.md).

Sizes come from building the model on PyTorch's ``meta`` device (shapes, no
data) and one forward pass there, so the estimate costs milliseconds and
follows the registry's real architectures. It is a lower bound on what the
allocator will reserve (workspace buffers, fragmentation and the CUDA context
come on top), so callers compare it with a share of the card, not the card.

Ray's fractional GPUs do not cap memory: a plan whose share is smaller than
this estimate would not fail cleanly, it would run out of memory at random
depending on what else the card holds. :func:`check_memory_fits` refuses it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from fedray.config.schema import BackboneModel
from fedray.errors import FedrayError
from fedray.models.registry import build_model

BYTES = 4
OPTIMIZER_STATE = {"sgd": 1, "adam": 2}


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    trainable: int
    activations_per_example: int
    total_bytes: int

    @property
    def gigabytes(self) -> float:
        return self.total_bytes / 1e9


def estimate_training_memory(model_cfg: BackboneModel, *, num_classes: int, image_size: int, batch_size: int,
                             optimizer: str, dp_sgd: bool, grad_sample_mode: str | None = None) -> MemoryEstimate:
    """The memory model of the module docstring for one hospital's training step (``batch_size``: one pass's
    records); under DP-SGD in ``grad_sample_mode``, or the mode a run would choose for this model."""
    with torch.device("meta"):
        model = build_model(dataclasses.replace(model_cfg, pretrained=False), num_classes=num_classes,
                            image_size=image_size)
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations = _activation_numel(model, image_size)
    numbers = (2 + OPTIMIZER_STATE[optimizer]) * parameters + 2 * batch_size * activations
    if dp_sgd:
        mode = _dp_mode(model, grad_sample_mode)
        if mode == "bookkeeping":
            numbers += batch_size * activations  # the kept output gradients
        elif mode != "ghost":
            numbers += batch_size * trainable  # the per-record gradients
    return MemoryEstimate(parameters, trainable, activations, numbers * BYTES)


def _dp_mode(model: nn.Module, grad_sample_mode: str | None) -> str:
    from fedray.privacy.opacus_wiring import choose_grad_sample_mode  # only DP plans import Opacus

    return grad_sample_mode or choose_grad_sample_mode(model)


def _activation_numel(model: nn.Module, image_size: int) -> int:
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(o.numel() for o in outputs if isinstance(o, torch.Tensor))

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty(1, 3, image_size, image_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def check_memory_fits(estimate: MemoryEstimate, *, gpu_share: float, gpu_bytes: int, model_name: str,
                      batch_size: int) -> None:
    """Refuse a plan whose per-hospital GPU share holds less memory than ``estimate``; name the share that would."""
    available = gpu_share * gpu_bytes
    if estimate.total_bytes <= available:
        return
    needed = math.ceil(100 * estimate.total_bytes / gpu_bytes) / 100
    fix = (f"set resources.hospital.num_gpus={needed:g} or more" if needed <= 1
           else "set train.physical_batch_size below it (a step's batch then runs in several passes) or pick a "
                "smaller backbone (it does not fit one card)")
    raise FedrayError(
        f"{model_name} at {batch_size} records a pass needs about {estimate.gigabytes:.1f} GB per hospital "
        f"but resources.hospital.num_gpus={gpu_share:g} of a {gpu_bytes / 1e9:.0f} GB card gives {available / 1e9:.1f} GB "
        f"(Ray does not cap a fractional GPU's memory): {fix}")
