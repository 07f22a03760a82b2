r"""``train.feature_subspace=k``: a head's frozen features projected onto a public k-dimensional subspace before
its unit map.

The subspace is spanned by the k leading right singular vectors of the backbone's pretrained native classifier
:math:`W \in \mathbb R^{1000 \times d}` (ImageNet; :math:`W = U \Sigma V^\top`): the basis
:math:`P = V_{:, :k}^\top` has orthonormal rows, and :math:`Q = P^\top P` projects onto the directions the
pretrained network reads its features along most strongly. It ships with the weights and no record computes
it, so it is public and costs no privacy (the argument of ``docs/privacy.md``, "A public feature subspace").

The maps of :mod:`fedray.training.feature_norm` take :math:`Qz` where they took :math:`z`:

- ``l2``: :math:`z \mapsto u(Qz)`;
- ``centre_l2``: :math:`z \mapsto u\big(u(Qz) - Q\tilde m\big)`, :math:`\tilde m` the released mean of the
  records' :math:`u(Qg)`.

Every mapped feature is still a unit vector in :math:`\mathbb R^d`, so every release's sensitivity is
unchanged. Its noise, though, is drawn in all d dimensions, and every mapped input lies in the span, so what
the noise puts outside it is projected away after the release (:math:`Q\tilde m`, and
:math:`S_c Q` in :func:`fedray.privacy.prototypes.prototype_head`; post-processing). In the prototype head,
with the noise std s of a coordinate of a class sum:

- the centre's error :math:`\lVert Q\xi\rVert \approx z_c \sqrt{k} / n` instead of :math:`z_c \sqrt{d} / n`,
  and it moves every mapped feature;
- the bias corrects :math:`k s^2 / (\tilde n_c + \lambda)^2` of inflation, whose spread grows as
  :math:`\sqrt{k}`;
- a score's own noise, :math:`x^\top \xi_c / (\tilde n_c + \lambda)` for a unit x, is the same at any k.

Under DP-SGD a linear head's per-record gradients lie in the span too (its input does), so the noise the
optimizer adds outside it never reaches a prediction; measured on ISIC's distributed DP-SGD preset, that gained
nothing beyond the spread of single runs. What a subspace costs is the signal outside it; on ISIC's Lite0
features the exact prototype head keeps its balanced accuracy down to k = 256 (``docs/privacy.md`` measures
both; the prototype preset's k = 384 is validation's choice).

Assumptions: the backbone's native head was pretrained (a random head would give a random subspace: public
too, but weaker), and the backbone is the one whose features the head reads.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedray.errors import FedrayError
from fedray.models import model_family, pretrained_head_weight

UNIT_MAPS = ("l2", "centre_l2")  # the maps whose unit vectors a subspace keeps unit


def public_basis(cfg) -> np.ndarray | None:
    """``P``: the ``[k, d]`` orthonormal basis of ``train.feature_subspace=k`` (None at k = 0); a one-line
    refusal where it cannot apply."""
    k, norm, model = cfg.train.feature_subspace, cfg.train.feature_norm, cfg.model
    if k == 0:
        return None
    if model_family(model.name) != "image" or model.finetune != "head":
        raise FedrayError(f"train.feature_subspace={k} projects the frozen features of a head; model {model.name} "
                          "here is not a head on frozen features: set model.finetune=head or train.feature_subspace=0")
    if norm not in UNIT_MAPS:
        raise FedrayError(f"train.feature_subspace={k} projects before a unit map, and train.feature_norm={norm} "
                          f"has none: set train.feature_norm to one of {', '.join(UNIT_MAPS)}")
    if not model.pretrained:
        raise FedrayError(f"train.feature_subspace={k} reads the pretrained classifier of {model.name}, and "
                          "model.pretrained=false has none: set model.pretrained=true or train.feature_subspace=0")
    return _leading_right_singular_vectors(model.name, k)


@functools.lru_cache(maxsize=8)
def _leading_right_singular_vectors(name: str, k: int) -> np.ndarray:
    weight = pretrained_head_weight(name)
    if k > min(weight.shape):
        raise FedrayError(f"train.feature_subspace={k} exceeds the rank of {name}'s pretrained classifier "
                          f"({min(weight.shape)}): set it to at most that")
    return np.linalg.svd(weight, full_matrices=False)[2][:k]


def project(rows, basis):
    """``rows Q`` (= ``Q rows`` per row) for numpy rows or a torch batch; ``rows`` unchanged without a basis."""
    if basis is None:
        return rows
    if isinstance(rows, torch.Tensor):
        basis = torch.as_tensor(basis).to(rows.device, rows.dtype)
    return (rows @ basis.T) @ basis
