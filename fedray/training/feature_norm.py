r"""Feature normalisation (``train.feature_norm=l2``): every record's input to the trained layers at unit L2 norm.

Tramèr & Boneh 2021 ("Differentially private learning needs better
features (or much more data)", §3) train linear models under DP-SGD on
fixed features normalised per record, with a data-independent map. Here the
map is

.. math:: u(z) = z / \max(\lVert z\rVert_2, 10^{-12}),

applied to the last dimension of

- an image backbone's head input, with ``model.finetune=head`` (the frozen
  features :math:`g(x)` of :mod:`fedray.training.features`, each flip view
  on its own), and
- a table model's input row, after the public range scaling of the input map.

Why it can help. For a linear head :math:`s = Wz + b` under cross-entropy, record
:math:`i`'s gradient is :math:`(p_i - e_{y_i})\,(z_i, 1)^\top`, of norm
:math:`\lVert p_i - e_{y_i}\rVert \sqrt{\lVert z_i\rVert^2 + 1}`. Raw
EfficientNet features have norms of tens, so at C = 1 every record's gradient is
clipped to the same norm and the factor :math:`\lVert p_i - e_{y_i}\rVert` (how
wrong the model still is on the record) is lost; at unit norm the gradient is
at most 2 and mostly below C, so clipping leaves it as it is. The price: the
scale of the features, and the step size that suits them, change.

Privacy. :math:`u` reads one record and no parameter of the data: DP-SGD's
per-record gradient is still that of one record, clipped to C, so the
sensitivity and the accounting are unchanged (post-processing of the public
pipeline: ``docs/privacy.md``). Evaluation passes through the same map, since it is
part of the model's forward pass: a forward pre-hook on the head (or on the
table model), which the cached features (taken before the hook,
:func:`fedray.training.features.head_inputs`) never contain. A state dict
saved from the run holds the weights only: a model rebuilt from it needs the
run's ``train.feature_norm`` again.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional

from fedray.errors import FedrayError


def _unit_rows(_module: nn.Module, args: tuple):
    return (functional.normalize(args[0], p=2.0, dim=-1), *args[1:])


def attach_feature_norm(model: nn.Module, cfg, *, family: str) -> None:
    """Make ``model`` normalise its trained layers' input per record (``train.feature_norm``), in place.

    Image backbones: only with ``model.finetune=head``, where the head is the only layer with trainable
    parameters; anything else is refused in one FedrayError line (the run has not started yet).
    """
    norm = cfg.train.feature_norm
    if norm == "none":
        return
    if family == "table":
        model.register_forward_pre_hook(_unit_rows)
        return
    trainable = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    if family != "image" or cfg.model.finetune != "head" or len(trainable) != 1:
        raise FedrayError(f"train.feature_norm={norm} normalises the input of a head on frozen features or of a "
                          f"table model; model {cfg.model.name} here trains more than its head: set "
                          "model.finetune=head or train.feature_norm=none")
    trainable[0].register_forward_pre_hook(_unit_rows)
