r"""What a torch model minimises at a hospital: a per-record loss averaged over the batch, plus an L2 penalty.

.. math::

   F(\theta) = \frac{1}{|B|}\sum_{i \in B} \ell\big(s_\theta(x_i), y_i\big)
               + \frac{\lambda}{2}\lVert\theta\rVert^2,
   \qquad \lambda = \texttt{train.weight\_decay} + \texttt{model.l2}

with :math:`s_\theta(x) \in \mathbb R^C` the model's scores (logits) and
``model.l2`` a key of ``svm`` alone (0 for the other models).

:func:`training_loss` gives :math:`\ell` by model name:

* ``svm``: the Crammer-Singer multi-class hinge (:class:`MulticlassHinge`),
  :math:`\ell(s, y) = \max\big(0,\ 1 + \max_{j \ne y} s_j - s_y\big)`. With two
  classes it is the textbook hinge :math:`\max(0, 1 - \tilde y f(x))` of the
  margin :math:`f = s_1 - s_0`, :math:`\tilde y = \pm 1`.
* every other model: cross-entropy :math:`-\log \mathrm{softmax}(s)_y`.

Why Crammer-Singer. It has one term per record and is 1-Lipschitz in the
scores: a record that violates its margin has the gradient
:math:`(e_{j^*} - e_y)\,\tilde x^\top` (:math:`j^*` the strongest rival class,
:math:`\tilde x = (x, 1)`), of norm :math:`\sqrt 2\,\lVert\tilde x\rVert`, any
other record a zero gradient. DP-SGD's per-record clipping factor thus
depends on :math:`\lVert\tilde x\rVert` alone, never on how far a record
violates its margin. A one-vs-rest squared hinge has gradients that grow with the violation, so
clipping would bend exactly the records that set the margin, and it needs C
binary problems. torch's ``nn.MultiMarginLoss`` is the Weston-Watkins hinge
divided by C: up to C - 1 terms a record, and half the binary hinge with two
classes (an lr halved). scikit-learn fits the same loss
(``LinearSVC(multi_class="crammer_singer")``), which anchors ``svm`` in
docs/models.md.

The penalty is the optimizer's weight decay (:func:`fedray.training.local.build_optimizer`
adds :math:`\lambda\theta` to the gradient), over every trainable parameter,
bias included, as liblinear (``LinearSVC``) penalises its intercept. On
:math:`n` training records :math:`\lambda = 1/(Cn)` for ``LinearSVC``'s
:math:`C`. Under DP-SGD the term reads no record and is added to the clipped,
noised gradient: post-processing, no privacy cost. Inside the loss it would be
lost: Opacus rebuilds the gradient from per-record gradients of the model's
forward pass alone.

Both losses average over the batch (``reduction="mean"``), as Opacus'
per-record gradients (``loss_reduction="mean"``) require.

Scores to probabilities. Metrics, the audit and the driver read
``softmax(s)`` for every model (:meth:`fedray.training.local.Evaluator.predict_proba`).
For ``svm`` these are not calibrated probabilities (no Platt scaling, which
would need a held-out fit): ``softmax`` of the margins is a monotone score.
With two classes :math:`p_1 = \sigma(s_1 - s_0)` ranks records exactly as the
SVM's margin, so accuracy, AUC and the membership attacks (whose statistics
:math:`-\log p_y` and :math:`\log\frac{p_y}{1-p_y} = s_y - s_{1-y}` are
monotone in the margin) see the SVM's own ordering; the reported
cross-entropy ``loss`` of an ``svm`` is that of these uncalibrated scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class MulticlassHinge(nn.Module):
    r"""Crammer-Singer hinge :math:`\frac1N\sum_i \max(0, 1 + \max_{j \ne y_i} s_{ij} - s_{iy_i})` of scores [N, C].

    ``reduction="none"`` gives the N per-record losses, as ghost clipping's loss wrapper asks of any loss.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        true = scores.gather(1, labels[:, None]).squeeze(1)
        own = functional.one_hot(labels, scores.shape[1]).bool()
        rival = scores.masked_fill(own, float("-inf")).amax(dim=1)
        per_record = torch.clamp(1 + rival - true, min=0)
        return per_record if self.reduction == "none" else per_record.mean()


def training_loss(model_cfg) -> nn.Module:
    """The per-record loss :math:`\\ell` of model ``model_cfg.name``, averaged over a batch."""
    return MulticlassHinge() if model_cfg.name == "svm" else nn.CrossEntropyLoss()


def model_l2(model_cfg) -> float:
    """The model's own L2 penalty :math:`\\lambda` (``model.l2``, ``svm`` only), added to ``train.weight_decay``."""
    return float(model_cfg.l2) if model_cfg.name == "svm" else 0.0
