r"""Augmentation multiplicity (``train.augmult=k``): a record's gradient is the mean over k of its augmented views.

De et al. 2022 ("Unlocking high-accuracy differentially private image
classification through scale", §3.1) replace record :math:`i`'s loss by the
mean over :math:`k` augmentations :math:`a_1(x_i), \dots, a_k(x_i)`:

.. math:: \ell_i(\theta) = \frac1k \sum_{v=1}^{k} \ell\big(f_\theta(a_v(x_i)), y_i\big),
   \qquad g_i = \nabla_\theta \ell_i = \frac1k \sum_v \nabla_\theta \ell(f_\theta(a_v(x_i)), y_i).

DP-SGD clips :math:`g_i` as a whole, *after* the average: the record still
contributes one vector of norm at most C to the noised sum, so the
sensitivity, the sampling and the accountant are those of ``augmult=1``
(``docs/privacy.md``). The average lowers the variance of the record's
gradient from the augmentation before clipping and noise, which is where
the utility comes from.

Where it applies: the cached head of :mod:`fedray.training.features` with
``data.augment=flips``, whose cache holds the four flip views of every image.
The trainer draws k distinct views per record (all four for k = 4) and feeds
the head a ``[B, k, d]`` batch; the head (dropout, then ``nn.Linear``) acts
on the last dimension, and Opacus' Linear grad sampler sums
``backprops ⊗ activations`` over every dimension between the batch and the
features (``einsum("n...i,n...j->nij")``), so its per-sample gradient is the
per-*record* one. :class:`ViewMeanLoss` averages over the B·k (record,
view) pairs and the DP step backpropagates B times that mean (the batch's
summed loss, :func:`fedray.privacy.opacus_wiring.private_step`), so each
view's share is 1/k: the per-sample gradient is exactly :math:`g_i` above
(``tests/training/test_augmult.py``).
An uncached model would need every trainable layer's grad sampler to accept
the extra dimension (a Conv2d's does not); :func:`check_augmult` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedray.errors import FedrayError
from fedray.training.features import FLIP_VIEWS


class ViewMeanLoss(nn.Module):
    """A batch-mean per-record loss over scores ``[B, k, C]``: the mean over records of the mean over their views.

    ``record_loss`` must average over its batch (``reduction="mean"``): its
    mean over the B·k (record, view) pairs is then the mean over the B records of
    each record's view mean. Scores ``[B, C]`` (evaluation, ``augmult=1``) pass through unchanged.
    """

    def __init__(self, record_loss: nn.Module):
        super().__init__()
        self.record_loss = record_loss

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if scores.dim() == 2:
            return self.record_loss(scores, labels)
        views = scores.shape[1]
        return self.record_loss(scores.flatten(0, 1), labels.repeat_interleave(views))


def pick_flip_views(views: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Cached ``[B, 4, d]`` -> ``[B, views, d]``: for each record, ``views`` distinct flip views drawn uniformly."""

    def pick(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = batch.shape[0]
        draws = torch.rand(b, FLIP_VIEWS, generator=generator, device=generator.device)
        chosen = draws.argsort(dim=1)[:, :views].to(batch.device)  # a uniform random subset per record
        return batch[torch.arange(b, device=batch.device)[:, None], chosen]

    return pick


def check_augmult(cfg, *, family: str, cached: bool) -> None:
    """Refuse ``train.augmult > 1`` where no cached flip views back it, in one FedrayError line."""
    k = cfg.train.augmult
    if k == 1:
        return
    why, fix = None, "set train.augmult=1"
    if family != "image":
        why = f"model {cfg.model.name} trains on table rows, which have no augmented views"
    elif cfg.data.augment != "flips":
        why = f"data.augment={cfg.data.augment} makes one view per image; augmult averages flip views"
    elif k > FLIP_VIEWS:
        why, fix = f"the flip cache holds {FLIP_VIEWS} views per image", f"set train.augmult<={FLIP_VIEWS}"
    elif not cached:
        why = (f"it needs the cached head (model.finetune=head, train.cache_features=true, a head without "
               f"random layers before it); model {cfg.model.name} here trains layers whose per-sample gradients "
               "Opacus cannot compute over a views dimension")
    if why is not None:
        raise FedrayError(f"train.augmult={k} is not possible: {why}; {fix}")
