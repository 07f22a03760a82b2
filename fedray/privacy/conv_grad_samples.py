r"""Per-record ``Conv2d`` weight gradients for the per-record modes, by the faster of two exact routes.

For record :math:`i`, group :math:`g`, input unfolded into
:math:`a_i \in \mathbb R^{T\times D}` (T output positions,
:math:`D = \frac{c_{in}}{g} k_h k_w`) and output gradient
:math:`b_i \in \mathbb R^{T\times p}` (:math:`p = c_{out}/g`), the per-record
weight gradient is :math:`G_i = b_i^\top a_i`. Two routes compute it:

- *unfold* (Opacus' ``compute_conv_grad_sample``): materialise every
  :math:`a_i` (the input copied :math:`k_h k_w` times) and take a batched
  matrix product;
- *grouped* (:func:`per_record_weight_gradients`): fold the batch into the
  convolution's groups, so that one weight-gradient convolution over input
  ``[1, n c_in, H, W]`` and output gradient ``[1, n c_out, H', W']`` with
  ``n g`` groups yields all n gradients, without the unfolded copy.

Both are exact (the same sums in another order). Which is faster depends on
the convolution kernels. On CPU (``benchmarks/dp_step.py``'s machine, batch 32,
one thread, ms):

==========================  ======  =======
layer (output size)          unfold  grouped
==========================  ======  =======
3→16, 3×3 (64×64)             5.3     5.8
3→64, 7×7 stride 2 (32×32)   12.1    12.2
16→32, 3×3 (32×32)            8.7     3.5
32→64, 3×3 (16×16)            3.5     3.1
64→64, 3×3 (16×16)            8.5     6.2
128→128, 3×3 (8×8)            7.9    24.6
16→64, 1×1 (32×32)            1.5     1.2
6→16, 5×5 (24×24)             2.5     4.0
depthwise 16, 3×3 (32×32)     7.6     1.1
depthwise 32, 3×3 (16×16)     2.7     0.7
==========================  ======  =======

So on CPU the grouped route is taken for depthwise layers (one input channel
a group) and for layers whose groups read a multiple of 8 channels over at
least 256 output positions; elsewhere, and on any other device (not
measured), Opacus' route. The rule fits these measurements, not a cost model.
A ``padding_mode`` other than zeros also keeps Opacus' route.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import nn
from torch.nn.grad import conv2d_weight

GROUPED_FROM_POSITIONS = 256
CHANNEL_BLOCK = 8


def grouped_route_is_faster(layer: nn.Conv2d, backprops: torch.Tensor) -> bool:
    """The measured CPU rule of the module docstring."""
    if backprops.device.type != "cpu" or layer.padding_mode != "zeros":
        return False
    in_per_group = layer.in_channels // layer.groups
    positions = backprops.shape[2] * backprops.shape[3]
    return in_per_group == 1 or (in_per_group % CHANNEL_BLOCK == 0 and positions >= GROUPED_FROM_POSITIONS)


def per_record_weight_gradients(layer: nn.Conv2d, x: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    """[n, c_out, c_in/g, kh, kw]: every record's weight gradient from one convolution, the batch folded into the
    groups. ``x`` is the layer's input, padded here as the layer pads (numbers, or "same"/"valid")."""
    n, out_channels = backprops.shape[:2]
    x = torch.nn.functional.pad(x, layer._reversed_padding_repeated_twice)
    weight_size = (n * out_channels, *layer.weight.shape[1:])
    gradients = conv2d_weight(x.reshape(1, -1, *x.shape[2:]), weight_size,
                              backprops.reshape(1, -1, *backprops.shape[2:]), stride=layer.stride, padding=0,
                              dilation=layer.dilation, groups=n * layer.groups)
    return gradients.view(n, *layer.weight.shape)


@register_grad_sampler(nn.Conv2d)
def conv2d_grad_sample(layer: nn.Conv2d, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus' grad sampler interface: per-record gradients of the layer's weight and bias."""
    if len(backprops) == 0 or not grouped_route_is_faster(layer, backprops):
        return compute_conv_grad_sample(layer, activations, backprops)
    samples = {}
    if layer.weight.requires_grad:
        samples[layer.weight] = per_record_weight_gradients(layer, activations[0].to(backprops.dtype), backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        samples[layer.bias] = backprops.sum(dim=(2, 3))
    return samples
