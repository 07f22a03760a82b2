r"""The Laplace mechanism (Dwork, McSherry, Nissim & Smith 2006) and Laplace input perturbation.

Laplace mechanism: release :math:`f(D) + \mathrm{Lap}(b)^{\otimes m}` with
scale :math:`b = \Delta_1 / \varepsilon`, where :math:`\Delta_1 = \max_{D\sim D'}
\lVert f(D) - f(D')\rVert_1` is the L1 sensitivity of :math:`f` over
neighbouring datasets. This is :math:`(\varepsilon, 0)`-DP (Dwork & Roth
2014, Thm 3.6); the noise has variance :math:`2b^2` per coordinate.

Input perturbation (local DP): each record :math:`x \in \mathbb R^d` is made
private before it leaves its owner. Feature :math:`j` is clipped to its
public range :math:`[l_j, u_j]`, so any two records differ there by at most
:math:`r_j = u_j - l_j`; releasing feature :math:`j` with
:math:`\mathrm{Lap}(r_j / \varepsilon_j)` is :math:`\varepsilon_j`-DP, and by
sequential composition over the :math:`d` features with
:math:`\varepsilon_j = \varepsilon/d` the whole record is :math:`\varepsilon`-local-DP
(scale :math:`b_j = d\,r_j/\varepsilon`). Everything computed afterwards from
the noisy records (training included) is post-processing.

The guarantee is void if the ranges are derived from the private data
(they must be public or fixed a priori), or if the same record is released
twice with fresh noise (budgets then add up).
"""

from __future__ import annotations

import math

import numpy as np

from fedray.errors import FedrayError
from fedray.privacy.randomized_response import randomize_labels, split_epsilon
from fedray.privacy.randomness import NoiseSource, Purpose


def laplace_mechanism(value, *, sensitivity: float, epsilon: float, rng: np.random.Generator):
    r"""``value`` + i.i.d. :math:`\mathrm{Lap}(\Delta_1/\varepsilon)`: :math:`\varepsilon`-DP.

    ``epsilon=inf`` returns ``value`` unchanged.

    ``sensitivity`` is the L1 sensitivity of the whole (possibly vector) ``value``.

    >>> laplace_mechanism(3.0, sensitivity=1.0, epsilon=math.inf, rng=np.random.default_rng(0))
    3.0
    """
    if not epsilon > 0 or not sensitivity > 0:
        raise FedrayError(
            f"Laplace mechanism with epsilon={epsilon}, sensitivity={sensitivity}: both must be positive"
        )
    if math.isinf(epsilon):
        return value
    return value + rng.laplace(0.0, sensitivity / epsilon, size=np.shape(value))


def perturb_features(
    X: np.ndarray, *, epsilon: float, feature_ranges: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    r"""Clip ``X`` [N, d] to ``feature_ranges`` [d, 2] (low, high), add :math:`\mathrm{Lap}(d\,r_j/\varepsilon)`.

    Each row becomes :math:`\varepsilon`-local-DP (see the module docstring).
    ``epsilon=inf`` returns ``X`` unchanged (not even clipped).
    """
    if math.isinf(epsilon) and epsilon > 0:
        return X
    X = np.asarray(X, dtype=np.float64)
    ranges = np.asarray(feature_ranges, dtype=np.float64)
    if X.ndim != 2 or ranges.shape != (X.shape[1], 2):
        raise FedrayError(
            f"feature_ranges has shape {ranges.shape} for data of shape {X.shape}: give one (low, high) per feature"
        )
    width = ranges[:, 1] - ranges[:, 0]
    if not np.all(width > 0):
        raise FedrayError("a feature range has high <= low: give every feature a public range with high > low")
    if not epsilon > 0:
        raise FedrayError(f"epsilon={epsilon} must be positive: set e.g. epsilon=1.0 (or inf for no noise)")
    d = X.shape[1]
    clipped = np.clip(X, ranges[:, 0], ranges[:, 1])
    return clipped + rng.laplace(0.0, d * width / epsilon, size=clipped.shape)


def perturb_hospital_rows(inputs, labels, *, epsilon: float, label_share: float, num_classes: int, input_map,
                          noise: NoiseSource) -> tuple[np.ndarray, np.ndarray]:
    """Hospital rows and labels after ε-local-DP perturbation: Laplace features, randomised-response labels.

    ``epsilon`` is split by sequential composition
    (:func:`~fedray.privacy.randomized_response.split_epsilon`): ``label_share``
    of it on k-ary randomised response for the label, the rest on the
    features. The ranges are the input map's public feature ranges. Both are
    one-time releases drawn from the hospital's secret release stream: a
    restarted hospital re-creates the identical release instead of a second,
    independent one (which would double the budget spent).
    """
    features_epsilon, label_epsilon = split_epsilon(float(epsilon), float(label_share))
    noisy = perturb_features(np.asarray(inputs, dtype=np.float64), epsilon=features_epsilon,
                             feature_ranges=input_map.ranges, rng=noise.release_generator(Purpose.LAPLACE_FEATURES))
    responded = randomize_labels(np.asarray(labels), num_classes, label_epsilon,
                                 rng=noise.release_generator(Purpose.LABEL_RESPONSE))
    return noisy.astype(np.float32), responded
