r"""Gradient canaries at one hospital: the auditor's Dirac gradients, a gradient hook in the records' sum.

Canary :math:`j` is the gradient :math:`C s_j e_{c_j}` of norm :math:`C` on one
trainable coordinate (:class:`fedray.audit.canaries.DiracCanaries`); the
hospital receives only the canaries the auditor included, as a
:class:`GradientCanaries` attachment that builds its hook in the hospital's
actor (:mod:`fedray.training.hooks`). At every optimizer step each of them is
sampled independently with the records' probability :math:`q` (the trainer's
``record_rate``), from the hospital's :class:`~fedray.privacy.randomness.NoiseSource`
(stream ``Purpose.INSERTION`` of the round): a canary is sampled like a record.

Where a sampled canary enters, as ``record_weight`` × its gradient:

* **DP-SGD.** Opacus sets :math:`p.\mathrm{grad} = (\sum_{i\in B} \bar g_i + \mathcal N(0,\sigma^2C^2 I))/(qn)`;
  the canary adds :math:`C s_j e_{c_j}/(qn)` right after (:func:`fedray.privacy.opacus_wiring.private_step`).
  The sum is linear and clipping at :math:`C` leaves a norm-:math:`C` gradient
  unchanged, so this equals adding the canary to the clipped sum before the
  noise: it is clipped, noised and averaged like any record, and the
  hospital's accountant (:math:`\sigma`, :math:`q`, steps) covers it exactly.
* **Without DP.** The loss averages over the batch's :math:`|B|` records, so the
  canary adds :math:`C s_j e_{c_j}/|B|`, with :math:`q = B/n` (a record is in one
  batch of each epoch).

The optimizer (momentum, weight decay, Adam) then treats the canary's
gradient exactly as a record's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedray.audit.canaries import DiracCanaries
from fedray.errors import FedrayError
from fedray.privacy.randomness import NoiseSource, Purpose


@dataclass(frozen=True)
class GradientCanaries:
    """The canaries included at one hospital, as the attachment it receives (:class:`fedray.training.hooks.Attachment`)."""

    canaries: DiracCanaries

    def attach(self, trainer, noise: NoiseSource) -> GradientCanaryInjector:
        return GradientCanaryInjector(trainer.full_model, self.canaries, sample_rate=trainer.record_rate, noise=noise)


class GradientCanaryInjector:
    """A gradient hook adding the sampled canaries' gradients to ``model``'s parameters (named as in its state dict)."""

    def __init__(self, model: nn.Module, canaries: DiracCanaries, *, sample_rate: float, noise: NoiseSource):
        params = dict(model.named_parameters())
        names = np.array(canaries.names, dtype=object)
        unknown = sorted(set(canaries.names) - set(params))
        if unknown:
            raise FedrayError(f"gradient canary on {unknown[0]!r}, which is not a parameter of this model: the "
                              "auditor and the hospital must build the same architecture")
        self.targets = []  # (parameter, positions among the canaries, its multi-index, the canaries' C * sign)
        for name in sorted(set(canaries.names)):
            positions = np.flatnonzero(names == name)
            p = params[name]
            index = np.unravel_index(canaries.flat_index[positions], tuple(p.shape))
            self.targets.append((p, torch.from_numpy(positions),
                                 tuple(torch.from_numpy(i).to(p.device) for i in index),
                                 torch.tensor(canaries.norm * canaries.signs[positions], dtype=p.dtype,
                                              device=p.device)))
        self.count = len(canaries)
        self.sample_rate = float(sample_rate)
        self.noise = noise
        self.generator: torch.Generator | None = None

    def start_round(self, round_idx: int) -> None:
        """Fresh sampling stream for round ``round_idx`` (secret unless the noise is reproducible)."""
        self.generator = self.noise.torch_generator(round_idx, Purpose.INSERTION)

    def on_gradient(self, record_weight: float) -> None:
        """Sample the canaries for this step and add ``record_weight`` × each sampled canary's gradient."""
        sampled = torch.rand(self.count, generator=self.generator) < self.sample_rate
        for p, positions, index, values in self.targets:
            chosen = sampled[positions].to(p.device)
            if not bool(chosen.any()):
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.index_put_(tuple(i[chosen] for i in index), values[chosen] * record_weight, accumulate=True)
