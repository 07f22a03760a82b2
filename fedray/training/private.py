r"""Record-level DP-SGD at one hospital, for the whole run (Abadi et al. 2016; Opacus).

The hospital's model is made DP-compatible (trainable BatchNorm → GroupNorm)
and wrapped with Opacus **once**: one ``GradSampleModule``, one
``DPOptimizer`` and one accountant live for all rounds, so the ε reported is
the composition over every local step of every round. Re-wrapping each round
with a fresh accountant would under-report ε; the driver keeps a plain model
and exchanges plain state dicts, which load straight into the wrapped model
(they share parameters).

Each local epoch takes T = round(1/q) steps (or the mechanism's own count: one under
``privacy=distributed_dpsgd``, :mod:`fedray.privacy.mechanisms.distributed_dpsgd`); each step draws a Poisson batch
that includes every record independently with probability q = B/n, n the
hospital's public slot count (its records plus any record slots an audit
adds, :mod:`fedray.privacy.mechanisms.dpsgd`), and the noised sum is divided by
the expected batch size qn, which therefore never depends on which of those
slots an audit filled (the amplification-by-sampling analysis assumes exactly
this, not shuffled fixed-size batches). The trainer's gradient hooks
(:mod:`fedray.training.hooks`) join the noised gradient before the optimizer's step. Per-record gradients are clipped to norm C and
:math:`\mathcal N(0, \sigma^2 C^2)` noise is added to their sum, with σ
calibrated before the run for the planned steps (:mod:`fedray.privacy.mechanisms`).
Under ``grad_sample_mode="bookkeeping"`` (the default from a million trainable
parameters) or ``"ghost"`` the clipped sum comes without per-record gradients,
from one backward pass or two (:mod:`fedray.privacy.bookkeeping`,
:mod:`fedray.privacy.ghost_norms`); ``loss_fn`` then also gives per-record
losses (``reduction="none"``), as both training losses do.
The steps actually taken are what the ledger reports.

Randomness. The Poisson masks and the Gaussian noise of round r are drawn
from two generators the hospital's :class:`~fedray.privacy.randomness.NoiseSource`
hands out for (r, purpose): seeded from 128 bits of OS entropy by default, so
neither the config nor the driver can regenerate them, and a retried round
draws afresh (its first attempt's update was never released, but the noise
must not be replayed either). Only ``privacy.reproducible_noise=true`` derives
them from the config seed, and the ledger then disclaims the guarantee. This is
not Opacus' ``secure_mode`` (see :mod:`fedray.privacy.randomness`).

What leaves the hospital: the noised parameters and the step count, which is
fixed in advance (round(1/q) steps an epoch). The loss and accuracy on the
private batches are never computed for release. Training runs in fp32:
per-sample gradients in bf16 would change the clipping arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

from fedray.privacy.opacus_wiring import private_step, wrap_private
from fedray.privacy.randomness import Purpose
from fedray.training.local import LocalTrainer, physical_passes
from fedray.training.together import NoisedClippedSum


class DPSGDTrainer(LocalTrainer):
    """A :class:`LocalTrainer` whose steps are DP-SGD steps on Poisson batches."""

    def __init__(self, *, noise_multiplier: float, sample_rate: float, max_grad_norm: float,
                 accountant: str, num_slots: int, grad_sample_mode: str | None = None,
                 steps_per_epoch: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.autocast = False
        self.sample_rate = sample_rate
        self.steps_per_epoch = round(1 / sample_rate) if steps_per_epoch is None else steps_per_epoch
        self.noise_multiplier = noise_multiplier
        self.parts = wrap_private(
            self.model, self.optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
            sample_rate=sample_rate, expected_batch_size=max(1, round(sample_rate * num_slots)),
            accountant=accountant, generator=self.noise.torch_generator(0, Purpose.DPSGD_NOISE, self.device),
            grad_sample_mode=grad_sample_mode,
        )
        self.optimizer = self.parts.optimizer

    @property
    def record_rate(self) -> float:
        """q: each record joins each step's Poisson batch independently with this probability."""
        return self.sample_rate

    def round_randomness(self, round_idx: int) -> torch.Generator:
        """Fresh secret streams for this round's Poisson masks (returned) and Gaussian noise (set on the optimizer)."""
        self.parts.optimizer.generator = self.noise.torch_generator(round_idx, Purpose.DPSGD_NOISE, self.device)
        return self.noise.torch_generator(round_idx, Purpose.POISSON_SAMPLING)

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """An epoch's Poisson batches (round(1/q) of them by default): record i is in each with probability q."""
        for _ in range(self.steps_per_epoch):
            yield torch.nonzero(torch.rand(self.num_samples, generator=generator) < self.sample_rate).squeeze(1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor | None]:
        with warnings.catch_warnings():
            # Opacus' hooks fire on the first layer's output because input images need no grad: expected.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            return private_step(self.parts, x, y, self.loss_fn, hooks=self.gradient_hooks,
                                passes=physical_passes(len(y), self.train_cfg.physical_batch_size))

    def round_metrics(self, *, steps: int, **_unreleased) -> dict:
        """The step count, fixed in advance, and the accountant's: never the loss or accuracy on private batches."""
        return {"local_steps": float(steps), **self.privacy_state()}

    def noised_clipped_sum(self) -> NoisedClippedSum:
        """This hospital's Opacus step, for training together with others (:mod:`fedray.training.together`): its
        clipping norm, noise, denominator qn, this round's noise generator and its accountant."""
        optimizer = self.parts.optimizer
        names = {id(p): name for name, p in self.model.named_parameters()}
        return NoisedClippedSum(
            max_grad_norm=optimizer.max_grad_norm, noise_std=optimizer.noise_multiplier * optimizer.max_grad_norm,
            expected_batch_size=optimizer.expected_batch_size, generator=optimizer.generator,
            noise_order=[names[id(p)] for p in optimizer.params],
            count_step=lambda: self.parts.accountant.step(noise_multiplier=optimizer.noise_multiplier,
                                                          sample_rate=self.sample_rate))

    def privacy_state(self) -> dict:
        return {"dp_steps": float(sum(steps for _, _, steps in self.parts.accountant.history))}

    def restore_privacy_state(self, state: dict) -> None:
        """A restarted hospital resumes its accountant at the steps it had already taken."""
        steps = int(state.get("dp_steps", 0))
        self.parts.accountant.history = [(self.noise_multiplier, self.sample_rate, steps)] if steps else []

