r"""k-ary randomised response for labels, and the split of a record's ε between its features and its label.

Randomised response (Warner 1965), in its k-ary form (k-RR; Kairouz, Oh &
Viswanath 2014, "Extremal Mechanisms for Local Differential Privacy"): a label
:math:`y \in \{0, \dots, k-1\}` is reported as itself with probability

.. math:: p = \frac{e^\varepsilon}{e^\varepsilon + k - 1}

and otherwise as one of the :math:`k-1` other labels chosen uniformly, each
with probability :math:`q = 1/(e^\varepsilon + k - 1)`. For any two labels
:math:`y, y'` and any output :math:`z`,
:math:`\Pr[z \mid y] / \Pr[z \mid y'] \le p/q = e^\varepsilon`: the reported
label is :math:`\varepsilon`-local-DP. :math:`\varepsilon = 0` reports a
uniform label; :math:`\varepsilon = \infty` keeps every label.

Why labels need it. Laplace input perturbation (:mod:`fedray.privacy.laplace`)
noises a record's features only; training on the true labels releases the
label of every record with no noise at all, so the record is not
:math:`\varepsilon`-local-DP. A record is the pair :math:`(x, y)`; releasing
:math:`x` by an :math:`\varepsilon_x`-LDP Laplace mechanism and :math:`y` by
:math:`\varepsilon_y`-k-RR, with independent randomness, is
:math:`(\varepsilon_x + \varepsilon_y)`-LDP for the pair (basic sequential
composition, Dwork & Roth 2014, Thm 3.16). :func:`split_epsilon` spends
``label_share`` of the record's :math:`\varepsilon` on the label. The share is
a utility trade-off, not a privacy one: the label is one categorical value
whose budget buys its keep rate directly, while the feature budget is divided
over :math:`d` features (``label_share = 1/(d+1)`` treats the label as one more
feature).

Both releases happen once per run from the hospital's one-time release stream
(:meth:`fedray.privacy.randomness.NoiseSource.release_generator` with
``Purpose.LABEL_RESPONSE``): a redrawn response would release the label twice.

Out of scope: correcting the training loss for the known label noise (e.g. the
unbiased loss of Natarajan et al. 2013, which inverts the k-RR transition
matrix). The model is trained on the noisy labels as they are; that is
post-processing and costs no budget, but it is biased towards a flatter
posterior.
"""

from __future__ import annotations

import math

import numpy as np

from fedray.errors import FedrayError


def keep_probability(epsilon: float, num_classes: int) -> float:
    r""":math:`e^\varepsilon / (e^\varepsilon + k - 1)`, the probability that k-RR reports the true label.

    >>> round(keep_probability(math.log(3), 2), 6), keep_probability(math.inf, 5), keep_probability(0.0, 4)
    (0.75, 1.0, 0.25)
    """
    _check(epsilon, num_classes)
    if math.isinf(epsilon):
        return 1.0
    # 1 / (1 + (k-1) e^-ε): the same value, without overflowing e^ε for large ε.
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))


def randomize_labels(labels, num_classes: int, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Each label kept with :func:`keep_probability`, else replaced by a uniform other label: ε-LDP per label.

    ``labels`` are integers in ``[0, num_classes)``. The same number of draws is
    made whatever the labels are, so the stream's position after the call does
    not depend on the data. Returns int64.
    """
    labels = np.asarray(labels)
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= num_classes):
        raise FedrayError(f"labels must be integers in [0, {num_classes}) for randomised response")
    keep = rng.random(labels.shape) < keep_probability(epsilon, num_classes)
    # (y + U{1..k-1}) mod k is uniform over the k-1 labels other than y (k = 1 keeps every label).
    other = (labels.astype(np.int64) + rng.integers(1, max(num_classes, 2), size=labels.shape)) % num_classes
    return np.where(keep, labels, other).astype(np.int64)


def split_epsilon(total: float, label_share: float) -> tuple[float, float]:
    r"""``(ε_features, ε_label)`` with ``ε_label = label_share · total``: they add up to ``total``.

    ``total = inf`` gives ``(inf, inf)`` (no noise on either).

    >>> split_epsilon(2.0, 0.25)
    (1.5, 0.5)
    """
    if not 0 < label_share < 1:
        raise FedrayError(f"privacy.label_share={label_share} must lie in (0, 1): e.g. 0.2")
    if not total > 0:
        raise FedrayError(f"epsilon={total} must be positive: e.g. 1.0 (or inf for no noise)")
    if math.isinf(total):
        return math.inf, math.inf
    label = label_share * total
    return total - label, label


def _check(epsilon: float, num_classes: int) -> None:
    if not epsilon >= 0:
        raise FedrayError(f"label epsilon={epsilon} must be >= 0")
    if num_classes < 1:
        raise FedrayError(f"num_classes={num_classes} must be >= 1")
