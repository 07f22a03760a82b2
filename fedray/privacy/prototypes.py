r"""A private class-prototype head: the hospitals' noised class sums, masked, and the classifier built from them.

The classifier (Snell et al. 2017's prototypes; the DP form of Wahdany et al.
2024, "Differentially private prototypes for imbalanced transfer learning").
Record :math:`i` has a frozen feature :math:`u_i` of unit L2 norm (the
centred unit map ``train.feature_norm=centre_l2``) and a label :math:`y_i`
among C classes. Each class's mean feature :math:`\mu_c` is a Gaussian
class-conditional mean with a shared isotropic covariance, so the Bayes rule
for balanced classes is the nearest mean:

.. math:: \hat y(u) = \arg\max_c\; u^\top \hat\mu_c - \tfrac12 \lVert \hat\mu_c \rVert^2 ,

a linear head :math:`W_c = \hat\mu_c`, :math:`b_c = -\frac12\lVert\hat\mu_c\rVert^2`.

The release. Record :math:`i` adds :math:`v_i = (u_i \otimes e_{y_i},\ \alpha e_{y_i})`
to a :math:`C \times (d + 1)` array: its feature to its class's sum, and
:math:`\alpha` (``train.prototype_count_weight``, public) to its class's
count column. Under zero-out neighbouring (a hospital's record count is
public; a neighbour replaces one record's contribution by zeros), one record
moves the array by :math:`\lVert v_i\rVert = \sqrt{1 + \alpha^2} = \Delta`
in L2, whatever its label. The hospitals release the sum over all their
records through secure aggregation, each adding its share
:math:`\mathcal N(0, \Delta^2 z^2 / (K - t))` of the noise: against the
driver with up to t colluding hospitals the K − t honest shares still sum to
:math:`\mathcal N(0, \Delta^2 z^2)`, so the masked sum is the Gaussian
mechanism at noise multiplier z for every record: ``GaussianDpEvent(z)``,
once per run, which the DP-SGD ledger composes with training (the trust
model and the shares are ``privacy=distributed_dpsgd``'s). :math:`\alpha`
splits the one release between sums and counts: the sums carry noise
:math:`\Delta z` a coordinate, the counts :math:`\Delta z / \alpha`.

Post-processing. From the released sums :math:`S_c` and counts
:math:`\tilde n_c = \text{count column} / \alpha`, with noise std
:math:`s = \Delta z` a coordinate of :math:`S_c`:

- shrinkage towards the centre (the origin of the centred map):
  :math:`\hat\mu_c = S_c / (\tilde n_c + \lambda)`, :math:`\lambda` one of
  ``train.prototype_shrinkage`` (the driver keeps the candidate its
  validation set rates best: post-processing of the one release). This is the posterior mean of
  :math:`\mu_c` under a Gaussian prior whose per-coordinate variance is
  :math:`s^2 / \lambda` times smaller than the noise's; a small class, whose
  sum the noise dominates, keeps less of it;
- :math:`\lVert \hat\mu_c\rVert^2` is biased upwards by the noise, by
  :math:`d s^2 / (\tilde n_c + \lambda)^2` in expectation, which the bias
  subtracts;
- a noised count is floored at one record.

Assumptions: every feature has unit norm (the map guarantees it), the count
weight and the noise multiplier are public, and the masking protocol holds
(:mod:`fedray.privacy.secure_aggregation`); without a DP claim the sums are
exact. Void if a patient has several records (the bound is per record).
"""

from __future__ import annotations

import math

import numpy as np

from fedray.errors import FedrayError

PROTOTYPE_FIELD = "prototype_sums"  # the field the hospitals' masked class sums are declared under


def class_sums(units: np.ndarray, labels: np.ndarray, *, num_classes: int, count_weight: float) -> np.ndarray:
    """``sum_i v_i``: each record's unit feature added to its class's row, ``count_weight`` to its count column."""
    units = np.asarray(units, dtype=np.float64)
    norms = np.linalg.norm(units, axis=1)
    if len(units) and not np.allclose(norms, 1.0, atol=1e-6):
        raise FedrayError(f"class prototype sums need unit-norm features; norms range {norms.min():.3g}-"
                          f"{norms.max():.3g} (train.feature_norm=centre_l2 maps them)")
    onehot = np.eye(num_classes)[np.asarray(labels, dtype=np.int64)]
    return np.concatenate([onehot.T @ units, count_weight * onehot.sum(axis=0)[:, None]], axis=1)


def sensitivity(count_weight: float) -> float:
    """The L2 norm of one record's contribution, whatever its label: ``sqrt(1 + alpha^2)``."""
    return math.sqrt(1.0 + count_weight ** 2)


def prototype_head(released: np.ndarray, *, count_weight: float, shrinkage: float, noise_std: float,
                   basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The linear head ``(W, b)`` of the nearest shrunk class mean, from the masked sum of the class sums.

    ``noise_std``: the released sums' noise std a coordinate (0 without DP), whose bias on ``||mu_c||^2`` the
    bias removes. ``basis``: the ``[k, d]`` orthonormal rows of a public subspace every feature lies in
    (``train.feature_subspace``): the sums are projected onto it, which drops the noise outside it, and the
    bias corrects for the k dimensions left.
    """
    released = np.asarray(released, dtype=np.float64)
    sums, counts = released[:, :-1], np.maximum(released[:, -1] / count_weight, 1.0)
    dims = sums.shape[1]
    if basis is not None:
        sums, dims = (sums @ basis.T) @ basis, len(basis)
    denominator = counts + shrinkage
    weight = sums / denominator[:, None]
    bias = -0.5 * ((weight ** 2).sum(axis=1) - dims * noise_std ** 2 / denominator ** 2)
    return weight, bias
