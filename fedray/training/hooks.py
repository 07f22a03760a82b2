r"""Gradient hooks: terms a hospital's step adds to its gradient once the records' part is final.

Every local step of every trainer runs its ``gradient_hooks`` in order, where
``p.grad`` holds the step's record gradient:

- **DP-SGD**: after Opacus clipped each record's gradient to norm :math:`C`,
  summed, noised and divided the sum by the expected batch size :math:`qn`
  (between ``pre_step`` and the optimizer's step,
  :func:`fedray.privacy.opacus_wiring.private_step`);
- **without DP**: after ``backward`` of the batch-mean loss over :math:`|B|` records.

``record_weight`` is the weight one record's gradient has in ``p.grad`` there:
:math:`1/(qn)` under DP-SGD, :math:`1/|B|` otherwise. So a hook that adds
``record_weight * g`` adds exactly one more record of gradient :math:`g`: by
linearity of the sum, and since clipping leaves a gradient of norm at most
:math:`C` unchanged, the same as a record clipped and noised with the others,
which the accountant already covers when the hook samples it like a record. A
hook adding a term that reads no record (FedProx's :math:`\mu(w - w_t)`,
:mod:`fedray.training.proximal`) ignores the weight: post-processing of the
noised gradient and public values. The optimizer (momentum, weight decay,
Adam) then treats whatever the hooks added exactly as the data gradient.

A party that is not the trainer (an audit) hands a hospital an
:class:`Attachment`: picklable, it crosses into the hospital's actor and
builds its hook there, from the trainer it joins and the hospital's own
randomness.
"""

from __future__ import annotations

from typing import Protocol


class GradientHook(Protocol):
    # Whether on_gradient reads the trainer's parameters (FedProx's w - w_t): hospitals trained together in lockstep
    # (fedray.training.together) keep theirs outside the trainer's model, so such a hook cannot join them.
    reads_parameters: bool

    def start_round(self, round_idx: int) -> None:
        """Called once per fit, after the round's start parameters are loaded and before the first step."""

    def on_gradient(self, record_weight: float) -> None:
        """Add this hook's term to ``p.grad`` of the trainer's parameters (see the module docstring)."""

    def round_report(self) -> tuple[str, dict] | None:
        """(name, what this hook observed this round) to travel with the hospital's update, or None.

        Only a name the mechanism's hospital releases declare (``observations.<name>``) may leave the hospital.
        """


class Attachment(Protocol):
    def attach(self, trainer, noise) -> GradientHook:
        """The hook this attachment adds to ``trainer`` (a hospital's), drawing from the hospital's ``noise``."""
