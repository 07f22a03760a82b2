r"""Per-record gradient norms without per-record gradients: ghost clipping for the seed backbones' layers.

DP-SGD clips each record's gradient :math:`g_i` to norm :math:`C`. The norm is
all it needs from :math:`g_i`: with the clipping factors
:math:`c_i = \min(1, C/\lVert g_i\rVert_2)` known, a second, ordinary backward
pass of :math:`\sum_i c_i \ell_i` yields :math:`\sum_i c_i g_i` directly
(Lee & Kifer 2021; Li et al. 2022). Opacus 1.6 runs these two passes
(``GradSampleModuleFastGradientClipping``, ``DPLossFastGradientClipping``,
``grad_sample_mode="ghost"`` in :mod:`fedray.privacy.opacus_wiring`) and asks a
*norm sampler* per layer type for :math:`\lVert g_i\rVert` of that layer's
parameters; the record's norm is the root of the sum of their squares. Opacus
ships norm samplers for ``Linear`` and ``Embedding``. Importing this module
registers, through :func:`opacus.grad_sample.register_norm_sampler`:

``Conv2d`` (mixed ghost clipping, Bu et al. 2023). Unfold record :math:`i`'s
input into :math:`a_i \in \mathbb R^{T\times D}` (T output positions, one
receptive field per row, :math:`D = \frac{c_{in}}{g} k_h k_w` for g groups)
and let :math:`b_i \in \mathbb R^{T\times p}`, :math:`p = c_{out}/g`, be the
loss gradient at the layer's output. Per group the weight gradient is
:math:`G_i = b_i^\top a_i` (p×D), so

.. math:: \lVert G_i\rVert_F^2 = \operatorname{tr}(a_i^\top b_i b_i^\top a_i)
          = \langle a_i a_i^\top,\; b_i b_i^\top\rangle_F,

two T×T Gram matrices, about :math:`T^2(D+p)` multiply-adds, against
:math:`TpD` to form :math:`G_i`. The layer takes the Gram route when
:math:`2T^2 < pD` (its two Gram matrices are smaller than :math:`G_i`: deep,
low-resolution layers), else forms every :math:`G_i` at once, by one
weight-gradient convolution with the batch folded into the groups, and takes
their norms (early, high-resolution layers; depthwise convs, where
:math:`p = 1`). Both are exact; groups sum over their blocks. The bias
gradient is :math:`\sum_t b_{i,t}`. Stride, padding (numbers, ``"same"``,
``"valid"``) and dilation enter the unfolding (Opacus' ``unfold2d``) and the
convolution as they enter the layer; both pad with zeros, so another
``padding_mode`` is refused (:class:`~fedray.errors.FedrayError`).

``GroupNorm`` and ``LayerNorm``: their per-record gradients have one number
per channel, so the norm sampler forms them with Opacus' own grad samplers and
returns their norms.

Every trainable layer of the seed backbones (small_cnn, resnet18/50,
mobilenet_v3, vgg19, efficientnet_lite0 after
:func:`~fedray.privacy.opacus_wiring.make_dp_compatible`) is one of these or
``Linear``. A layer type without a norm sampler is not refused: Opacus forms
its full per-record gradients (its grad sampler, else functorch) and takes
their norms, which is exact but costs what ``"hooks"`` costs. Opacus refuses
ghost clipping for a layer that runs twice in one forward (tied parameters).

Assumptions: batch-first inputs, and output gradients of each record's own
loss: Opacus' hook rescales a ``loss_reduction="mean"`` loss's by the batch
size before calling a norm sampler (ghost clipping), and book-keeping
backpropagates the summed loss (:mod:`fedray.privacy.bookkeeping`).
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_norm_sampler
from opacus.grad_sample.group_norm import compute_group_norm_grad_sample
from opacus.grad_sample.layer_norm import compute_layer_norm_grad_sample
from opacus.utils.tensor_utils import unfold2d
from torch import nn

from fedray.errors import FedrayError
from fedray.privacy.conv_grad_samples import per_record_weight_gradients


def gram_route_is_cheaper(positions: int, out_per_group: int, in_per_group: int) -> bool:
    """Bu et al. 2023's rule: two T×T Gram matrices (2T² numbers a record and group) beat the p×D gradient."""
    return 2 * positions**2 < out_per_group * in_per_group


@register_norm_sampler(nn.Conv2d)
def conv2d_norm_sample(
    layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-record gradient norms [n] of a Conv2d's weight and bias, by the cheaper exact route."""
    if layer.padding_mode != "zeros":
        raise FedrayError(f"ghost clipping pads a Conv2d with zeros, not padding_mode={layer.padding_mode!r}: "
                          "use padding_mode='zeros' or grad_sample_mode='functorch'")
    n, groups = backprops.shape[0], layer.groups
    norms = {}
    if layer.weight.requires_grad:
        x = activations[0].to(backprops.dtype)
        positions = backprops.shape[2] * backprops.shape[3]
        in_per_group = layer.weight[0].numel()  # D = c_in/g * kh * kw
        if gram_route_is_cheaper(positions, layer.out_channels // groups, in_per_group):
            patches = unfold2d(x, kernel_size=layer.kernel_size, padding=layer.padding, stride=layer.stride,
                               dilation=layer.dilation)  # [n, c_in * kh * kw, T], channel-major: groups are blocks
            a = patches.view(n, groups, in_per_group, positions)
            b = backprops.reshape(n, groups, -1, positions)  # [n, g, p, T]
            aa = a.transpose(-1, -2) @ a  # [n, g, T, T]
            bb = b.transpose(-1, -2) @ b
            squared = (aa * bb).sum(dim=(1, 2, 3)).clamp(min=0)  # rounding can leave -0
        else:
            squared = per_record_weight_gradients(layer, x, backprops).flatten(1).square().sum(dim=1)
        norms[layer.weight] = squared.sqrt()
    if layer.bias is not None and layer.bias.requires_grad:
        norms[layer.bias] = backprops.flatten(2).sum(dim=2).norm(dim=1)
    return norms


def _norms_of_grad_samples(grad_sampler):
    """A norm sampler for a layer whose per-record gradients are small: form them with Opacus, return their norms."""

    def norm_sampler(layer, activations, backprops):
        return {p: g.flatten(1).norm(dim=1) for p, g in grad_sampler(layer, activations, backprops).items()}

    return norm_sampler


register_norm_sampler(nn.GroupNorm)(_norms_of_grad_samples(compute_group_norm_grad_sample))
register_norm_sampler(nn.LayerNorm)(_norms_of_grad_samples(compute_layer_norm_grad_sample))
