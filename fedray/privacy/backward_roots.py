r"""The parameters a DP-SGD backward pass must reach, so that autograd forms no gradient clipping discards.

Under DP-SGD the optimizer never reads the unclipped batch gradient
:math:`\sum_i g_i` that ``loss.backward()`` leaves in ``p.grad``: the per-record
modes (``hooks``, ``functorch``) read each record's gradient from Opacus'
layer hooks, and book-keeping (:mod:`fedray.privacy.bookkeeping`) its clipped
sum. The hooks need only each trainable layer's output gradient, which
autograd computes on its way to anything further back.

Call a trainable layer a *root* when none of its inputs requires grad in the
forward pass: the stem of a backbone trained whole, the first trainable layer
after a frozen part, a head on cached features. Every other trainable layer
has an input that requires grad, so it depends on some trainable parameter
upstream; following those back ends at a root, since the graph is finite and
acyclic. So every trainable layer lies on a path from the loss to a root's
parameters, and ``loss.backward(inputs=roots)`` runs each layer's hook as the
plain ``loss.backward()`` does, while autograd forms the weight gradients of
the roots only. ``tests/privacy/test_bookkeeping.py`` checks models with
several roots and with a frozen part against a per-record loop.

Not for ``ew`` (ExpandedWeights forms per-record gradients through the
weights' own gradient) or ghost clipping (its second pass needs every
``p.grad``).
"""

from __future__ import annotations

import torch
from opacus.utils.module_utils import trainable_modules, trainable_parameters
from torch import nn


class BackwardRoots:
    """Records, in each training forward pass of ``model``, the parameters of its root layers."""

    def __init__(self, model: nn.Module):
        self.params: list[nn.Parameter] = []
        for _, module in trainable_modules(model):
            module.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: tuple, _output) -> None:
        if module.training and torch.is_grad_enabled() and not any(
                torch.is_tensor(t) and t.requires_grad for t in inputs):
            self.params.extend(p for _, p in trainable_parameters(module))

    def take(self) -> list[nn.Parameter] | None:
        """The roots recorded since the last call (None if none: then ``backward`` reaches every parameter)."""
        params, self.params = self.params, []
        return list(dict.fromkeys(params)) or None  # once each, however often a root ran
