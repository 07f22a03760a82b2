r"""FedProx's proximal term at a hospital (Li et al., MLSys 2020), pure torch.

Local objective :math:`F_k(w) + \frac{\mu}{2}\lVert w - w_t\rVert^2` over the
trainable parameters, with :math:`w_t` the global model the round started from.

The term's gradient :math:`\mu(w - w_t)` reads no record, so it is a
gradient hook (:mod:`fedray.training.hooks`): added to the step's gradient
after the records' part, where the optimizer then sees
:math:`\nabla F_k + \mu(w - w_t)`, exactly the gradient of the objective.

- Without DP that is the same as adding the term to the batch loss.
- Under DP-SGD it must not enter the per-example gradients: Opacus would
  clip it per example (its gradient is the same for every record, so clipping
  would shrink it by the batch's clip factors and its sum would scale with the
  batch size). Added to the already clipped and noised gradient, between
  Opacus' noise and the optimizer's step, it is post-processing of the noised
  gradient and the public :math:`w_t`: the DP guarantee is the same.
"""

from __future__ import annotations

import torch
from torch import nn


def anchor_of(model: nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(trainable parameter, detached copy of its current value): :math:`w_t` at the start of a round."""
    return [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def add_proximal_gradient(anchor: list[tuple[torch.nn.Parameter, torch.Tensor]], mu: float) -> None:
    r"""``p.grad += μ(w - w_t)`` for every anchored parameter (a parameter without a data gradient gets the term)."""
    for p, start in anchor:
        if p.grad is None:
            p.grad = mu * (p - start)
        else:
            p.grad.add_(p - start, alpha=mu)


class ProximalTerm:
    """FedProx's term as a gradient hook: anchors :math:`w_t` at each round's start, adds :math:`\mu(w - w_t)`."""

    reads_parameters = True  # w - w_t

    def __init__(self, model: nn.Module, mu: float):
        self.model, self.mu = model, mu
        self.anchor: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def start_round(self, round_idx: int) -> None:
        self.anchor = anchor_of(self.model)

    def on_gradient(self, record_weight: float) -> None:
        add_proximal_gradient(self.anchor, self.mu)

    def round_report(self) -> None:
        """FedProx's term observes nothing."""
