r"""Gradient canaries at one hospital: the auditor's Dirac gradients, a gradient hook in the records' sum.

Canary :math:`j` is the gradient :math:`C s_j e_{c_j}` of norm :math:`C` on one
trainable coordinate (:class:`fedray.audit.canaries.DiracCanaries`); the
hospital receives the canaries dealt to it and which of them the auditor
included (only the included ones, unless it reports the step-level view of
:mod:`fedray.audit.step_view`), as a :class:`GradientCanaries` attachment
that builds its hook in the hospital's actor (:mod:`fedray.training.hooks`).
At every optimizer step each dealt canary is
sampled independently with the records' probability :math:`q` (the trainer's
``record_rate``), from the hospital's :class:`~fedray.privacy.randomness.NoiseSource`
(stream ``Purpose.INSERTION`` of the round): a canary is sampled like a record.

Where a sampled included canary enters, as ``record_weight`` × its gradient:

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
from fedray.audit.step_view import NAME as STEP_VIEW, StepStatistics
from fedray.errors import FedrayError
from fedray.privacy.randomness import NoiseSource, Purpose


@dataclass(frozen=True)
class GradientCanaries:
    """The canaries dealt to one hospital, as the attachment it receives (:class:`fedray.training.hooks.Attachment`).

    ``included`` (bool, one per dealt canary) says which it inserts. With ``observe_steps`` it also reports the
    step-level view of every dealt canary (:mod:`fedray.audit.step_view`); without, it receives only the included
    ones, the only canaries it then learns of.
    """

    dealt: DiracCanaries
    included: np.ndarray
    observe_steps: bool = False

    def attach(self, trainer, noise: NoiseSource) -> GradientCanaryInjector:
        steps = StepStatistics(len(self.dealt), sample_rate=trainer.record_rate,
                               noise_multiplier=trainer.noise_multiplier) if self.observe_steps else None
        return GradientCanaryInjector(trainer.full_model, self.dealt, self.included, sample_rate=trainer.record_rate,
                                      noise=noise, steps=steps)


class GradientCanaryInjector:
    """A gradient hook adding the sampled included canaries' gradients to ``model``'s parameters (named as in its
    state dict), and reading every dealt canary's coordinate back for the step-level view when ``steps`` is set."""

    reads_parameters = False  # it adds fixed directions and reads the gradient back

    def __init__(self, model: nn.Module, canaries: DiracCanaries, included: np.ndarray, *, sample_rate: float,
                 noise: NoiseSource, steps: StepStatistics | None = None):
        params = dict(model.named_parameters())
        names = np.array(canaries.names, dtype=object)
        unknown = sorted(set(canaries.names) - set(params))
        if unknown:
            raise FedrayError(f"gradient canary on {unknown[0]!r}, which is not a parameter of this model: the "
                              "auditor and the hospital must build the same architecture")
        self.targets = []  # (parameter, positions among the canaries, its multi-index, the canaries' sign)
        for name in sorted(set(canaries.names)):
            positions = np.flatnonzero(names == name)
            p = params[name]
            index = np.unravel_index(canaries.flat_index[positions], tuple(p.shape))
            self.targets.append((p, torch.from_numpy(positions),
                                 tuple(torch.from_numpy(i).to(p.device) for i in index),
                                 torch.tensor(canaries.signs[positions], dtype=p.dtype, device=p.device)))
        self.norm = canaries.norm
        self.included = torch.tensor(np.asarray(included, dtype=bool))  # a copy: Ray hands out read-only arrays
        self.sample_rate = float(sample_rate)
        self.noise = noise
        self.steps = steps
        self.generator: torch.Generator | None = None

    def start_round(self, round_idx: int) -> None:
        """Fresh sampling stream for round ``round_idx`` (secret unless the noise is reproducible)."""
        self.generator = self.noise.torch_generator(round_idx, Purpose.INSERTION)
        if self.steps is not None:
            self.steps.start_round()

    def on_gradient(self, record_weight: float) -> None:
        """Sample every dealt canary for this step, add ``record_weight`` × each sampled included canary's
        gradient, then read each dealt canary's coordinate in canary units (step view)."""
        sampled = torch.rand(len(self.included), generator=self.generator) < self.sample_rate
        inserted = sampled & self.included
        read = np.zeros(len(self.included)) if self.steps is not None else None
        for p, positions, index, signs in self.targets:
            chosen = inserted[positions].to(p.device)
            if bool(chosen.any()):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.index_put_(tuple(i[chosen] for i in index), signs[chosen] * (self.norm * record_weight),
                                  accumulate=True)
            if read is not None and p.grad is not None:  # no gradient at all reads as 0
                read[positions.numpy()] = (signs * p.grad[index]).double().cpu().numpy() / (self.norm * record_weight)
        if self.steps is not None:
            self.steps.observe(read, sampled.numpy())

    def round_report(self) -> tuple[str, dict] | None:
        """This round's step-level statistics (:mod:`fedray.audit.step_view`), or None without the step view."""
        return None if self.steps is None else (STEP_VIEW, self.steps.report())
