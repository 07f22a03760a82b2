r"""FedProx's proximal term at a hospital (Li et al., MLSys 2020), pure torch.

Local objective :math:`F_k(w) + \frac{\mu}{2}\lVert w - w_t\rVert^2` over the
trainable parameters, with :math:`w_t` the global model the round started from.

- Without DP the term is added to the batch loss (:func:`proximal_loss`), so
  the optimizer sees :math:`\nabla F_k + \mu(w - w_t)`.
- Under DP-SGD the term must not enter the per-example gradients: Opacus would
  clip it per example (its gradient is the same for every record, so clipping
  would shrink it by the batch's clip factors and its sum would scale with the
  batch size). Its gradient :math:`\mu(w - w_t)` reads no record, so it is
  added to the already clipped and noised gradient, between Opacus' noise and
  the optimizer's step (:func:`add_proximal_gradient`), where momentum or Adam
  treat it as they treat the data gradient. That is post-processing of the
  noised gradient and the public :math:`w_t`: the DP guarantee is the same.
"""

from __future__ import annotations

import torch
from torch import nn


def anchor_of(model: nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(trainable parameter, detached copy of its current value): :math:`w_t` at the start of a round."""
    return [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]


def proximal_loss(anchor: list[tuple[torch.nn.Parameter, torch.Tensor]], mu: float) -> torch.Tensor:
    r""":math:`\frac{\mu}{2}\sum\lVert w - w_t\rVert^2` over the anchored parameters."""
    return 0.5 * mu * sum(((p - start) ** 2).sum() for p, start in anchor)


@torch.no_grad()
def add_proximal_gradient(anchor: list[tuple[torch.nn.Parameter, torch.Tensor]], mu: float) -> None:
    r"""``p.grad += μ(w - w_t)`` for every anchored parameter (after DP-SGD's noise)."""
    for p, start in anchor:
        if p.grad is not None:
            p.grad.add_(p - start, alpha=mu)
