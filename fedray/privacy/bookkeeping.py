r"""Book-keeping: ghost clipping's clipped sum without its second backward pass.

Bu, Wang, Zha & Karypis 2023, "Differentially Private Optimization on Large
Model at Small Cost" (ICML).

Ghost clipping (``grad_sample_mode="ghost"``, :mod:`fedray.privacy.ghost_norms`)
runs two backward passes. The first yields every record's gradient norm
:math:`\lVert g_i\rVert_2` and so its clipping factor
:math:`c_i = \min(1, C/\lVert g_i\rVert_2)`; the second runs the whole backward
again, for the loss :math:`\sum_i c_i \ell_i`, only to obtain
:math:`\sum_i c_i g_i`.

A layer's parameter gradient is linear in its output gradient. With
:math:`a_i` the layer's input and :math:`b_i` the loss gradient at its output
for record :math:`i`, :math:`g_i = G(a_i, b_i)` is linear in :math:`b_i`, so

.. math:: \sum_i c_i\, G(a_i, b_i) = G_{\text{batch}}(a,\; c \odot b),

the layer's ordinary batch weight gradient with each record's output gradient
scaled by its factor. The first pass's hooks already receive :math:`a` and
:math:`b` (Opacus captures both to compute the norms). Book-keeping keeps them
until every layer's norm is known, then forms each layer's clipped sum once:

- ``Linear``: :math:`(c\odot b)^\top a`, summed over any positions between the
  batch and feature axes; bias :math:`\sum_i c_i \sum_t b_{i,t}`.
- ``Conv2d``: one weight-gradient convolution
  (:func:`torch.nn.grad.conv2d_weight`) with the layer's stride, padding,
  dilation and groups; bias :math:`\sum_i c_i \sum_t b_{i,t}`.
- any other layer (``GroupNorm``, ``LayerNorm``, ``Embedding``): its
  per-record gradients from Opacus' grad sampler (functorch where it has
  none), contracted with :math:`c`. They hold a few numbers per channel.

It is the same sum as the second pass, up to float rounding
(``tests/privacy/test_bookkeeping.py``), and the same noise, division by
:math:`qn` and accounting follow (:mod:`fedray.privacy.opacus_wiring`), so the
mechanism and its guarantee are ghost clipping's.

Cost: one weight gradient per trainable layer replaces a second full backward
(the input gradients of every layer, trainable or frozen, and the weight
gradients again); the single pass asks autograd only for the parameters of
the layers nothing trainable feeds (:mod:`fedray.privacy.backward_roots`), so
it forms no other unclipped weight gradient either. Memory: every trainable
layer's input and output gradient is held until the backward ends, where
ghost clipping held the forward's graph (``retain_graph=True``) for its
second pass instead.

Assumptions: ghost clipping's (batch-first inputs, a loss with
``reduction="mean"`` whose per-record losses are available, no parameter used
twice in one forward under a norm sampler), and a ``Conv2d`` that pads with
zeros.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.functorch import ft_compute_per_sample_gradient
from torch import nn
from torch.nn.grad import conv2d_weight
from torch.nn import functional as F


class BookKeepingModule(GradSampleModuleFastGradientClipping):
    """Opacus' ghost-clipping module that also keeps each trainable layer's (input, output gradient) of a pass."""

    def __init__(self, m: nn.Module, *, max_grad_norm: float):
        super().__init__(m, batch_first=True, loss_reduction="mean", strict=True, max_grad_norm=max_grad_norm,
                         use_ghost_clipping=True)
        self.kept: list[tuple[nn.Module, list[torch.Tensor], torch.Tensor]] = []

    def rearrange_grad_samples(self, *, module, backprops, loss_reduction, batch_first):
        # Opacus' backward hook calls this once per layer and pass with the layer's input and output gradient.
        # bookkeeping_backward runs the summed per-record losses, so that gradient is already each record's own
        # ("sum": Opacus' rescaling of a mean loss's gradients by the batch size is skipped), as the clipped sum needs.
        activations, backprops = super().rearrange_grad_samples(
            module=module, backprops=backprops, loss_reduction="sum", batch_first=batch_first)
        self.kept.append((module, activations, backprops))
        return activations, backprops

    def add_clipped_sum(self, factors: torch.Tensor) -> None:
        """Add :math:`\\sum_i c_i g_i` of every kept layer to its parameters' ``.grad``, then forget the pass."""
        kept, self.kept = self.kept, []
        for layer, activations, backprops in kept:
            # Not in place: autograd may have handed the same gradient to several layers (a residual sum).
            scaled = backprops * factors.view(-1, *([1] * (backprops.dim() - 1))).to(backprops.dtype)
            for param, total in _clipped_sums(layer, activations, scaled).items():
                if param.requires_grad:
                    param.grad = total if param.grad is None else param.grad.add_(total)  # a layer run twice


def bookkeeping_backward(module: BookKeepingModule, optimizer, loss_per_sample: torch.Tensor,
                         roots: list[nn.Parameter] | None) -> None:
    """One backward pass of the batch's summed loss, then the clipped sum in each trainable parameter's ``.grad``.

    ``roots`` (:class:`~fedray.privacy.backward_roots.BackwardRoots`) are the only parameters whose unclipped
    gradient autograd forms; the optimizer's ``zero_grad`` clears them, as between ghost clipping's two passes,
    so a skipped step's accumulated sum (physical passes) survives.
    """
    module.kept = []
    loss_per_sample.sum().backward(inputs=roots)
    factors = module.get_clipping_coef()
    optimizer.zero_grad(set_to_none=True)
    module.add_clipped_sum(factors)
    for param in optimizer.params:
        if param.grad is None:  # a layer this batch never reached: its records' gradients are zero
            param.grad = torch.zeros_like(param)


def _clipped_sums(layer: nn.Module, activations: list[torch.Tensor],
                  scaled_backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """The layer's batch parameter gradients for output gradients already scaled by the clipping factors."""
    if type(layer) is nn.Linear:
        x = activations[0].to(scaled_backprops.dtype)
        sums = {layer.weight: scaled_backprops.flatten(0, -2).T @ x.flatten(0, -2)}
        if layer.bias is not None:
            sums[layer.bias] = scaled_backprops.flatten(0, -2).sum(dim=0)
        return sums
    if type(layer) is nn.Conv2d:  # zero padding only: its norm sampler refuses any other
        x, padding = activations[0].to(scaled_backprops.dtype), layer.padding
        if isinstance(padding, str):  # "same" / "valid": padded as the layer pads itself
            x, padding = F.pad(x, layer._reversed_padding_repeated_twice), 0
        sums = {layer.weight: conv2d_weight(x, layer.weight.shape, scaled_backprops, stride=layer.stride,
                                            padding=padding, dilation=layer.dilation, groups=layer.groups)}
        if layer.bias is not None:
            sums[layer.bias] = scaled_backprops.sum(dim=(0, 2, 3))
        return sums
    sampler = BookKeepingModule.GRAD_SAMPLERS.get(type(layer), ft_compute_per_sample_gradient)
    return {p: g.sum(dim=0) for p, g in sampler(layer, activations, scaled_backprops).items()}
