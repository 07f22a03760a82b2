r"""Private bias calibration: after the last round, re-centre the classifier's biases on the hospitals' predictions.

Why. DP-SGD's noise lands on every weight of the final linear layer, and part of
it moves all inputs' scores for a class by about the same amount: the bias's own
noise, and the weights' noise along the direction every input shares (on the
ISIC Lite0 head, half of a frozen feature's energy lies along the mean feature).
Those offsets carry no class evidence, yet they decide which classes the model
predicts at all, which balanced accuracy punishes most: at ε = 1 a trained head
may hardly ever predict three of the nine classes.

What it does (``train.bias_calibration_rounds`` = I > 0, models whose last layer
is an ``nn.Linear`` with a bias). After the last round, I times:

1. the driver sends the global model :math:`f(\cdot) = Wz(\cdot) + b`;
2. hospital k returns :math:`h_k = \sum_{i \in D_k} \operatorname{softmax}(f(x_i))
   + \mathcal N(0, z^2 I_C)`, the sum of its training records' predicted class
   probabilities (each record's first view), z = ``train.bias_calibration_noise_multiplier``;
3. the driver forms :math:`h = \sum_k h_k`, floors each class at two standard deviations of the noise
   in it, :math:`h_c \leftarrow \max(h_c, 2z\sqrt K, 1)`, and sets

   .. math:: b_c \leftarrow b_c - \log\bigl(C\, h_c / \textstyle\sum_{c'} h_{c'}\bigr),

   the multiplicative fixed point that makes the model's predicted class shares on
   the hospitals' records uniform (the prior adjustment of Saerens, Latinne &
   Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori
   probabilities", with the class-balanced prior as the target: Menon et al. 2021,
   "Long-tail learning via logit adjustment", show that a balanced target is what
   balanced error rewards). It uses no label.

The evaluation of the last round, and the exported final model, see the calibrated
biases. Earlier rounds' models (and the best-validation round's) are left as trained.

Privacy. Record i's term is a probability vector: under zero-out neighbouring
(a record replaced by a null that contributes nothing) it moves :math:`h_k` by at
most :math:`\lVert p_i\rVert_2 \le 1`. Given the model released before, each
release is the Gaussian mechanism at noise multiplier z on sensitivity 1, so hospital
k's records are charged I × ``GaussianDpEvent(z)``, composed with training in one
accountant (:func:`calibration_events`); the mechanism calibrates DP-SGD's σ for
what is left of ε. The noise is the hospital's own secret stream
(``Purpose.BIAS_CALIBRATION``, keyed by the calibration round), never derived from the
config. Every hospital adds all of its noise, so the sum carries :math:`\sqrt K z`;
secure aggregation is not relied on. Without a DP claim the sums are exact.

Assumptions. The target is the class-balanced share, not the training prior: it
suits a model whose class scores DP noise has shifted and a metric that weighs
classes equally (balanced accuracy); on a well-fit non-private model it changes
little (``docs/privacy.md`` has the measurements), and it cannot help AUC, which
no per-class shift of a binary model changes.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_FIELD = "calibration_sum"  # what a hospital's calibration message holds (its declared release)
RELEASES_COUNTER = "dp_calibration_releases"  # the calibration sums a hospital has released (its privacy state)


def prediction_sum(probabilities: np.ndarray, *, noise_multiplier: float | None,
                   rng: np.random.Generator | None) -> np.ndarray:
    """A hospital's release: the column sums of its records' class probabilities ``[n, C]``, plus N(0, z²) per
    class where ``noise_multiplier`` z is given (sensitivity 1: each row is a probability vector)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or (len(probabilities) and not np.allclose(probabilities.sum(1), 1.0, atol=1e-3)):
        raise ValueError("bias calibration sums rows of class probabilities (each summing to 1)")
    total = probabilities.sum(axis=0)
    if noise_multiplier is None:
        return total
    return total + rng.normal(0.0, noise_multiplier, size=total.shape)


def calibrated_bias(bias: np.ndarray, sums: list[np.ndarray], *, noise_multiplier: float | None) -> np.ndarray:
    """One fixed-point step: ``bias`` minus log(C × each class's share of the hospitals' summed predictions).

    Each class's sum is floored at two standard deviations of the noise the ``len(sums)`` hospitals added to it
    (at least one record): a sum that small cannot be told from zero, and a class that noise drove near or below
    zero would otherwise get a raise of log(N/C) or more and take over the predictions. In a simulation of the
    ISIC head at ε = 1 the floor at one record left the test balanced accuracy's spread over noise seeds at 0.065;
    two standard deviations brought it to 0.027 (``docs/privacy.md``).
    """
    floor = max(1.0, 2.0 * noise_multiplier * np.sqrt(len(sums))) if noise_multiplier else 1.0
    predicted = np.maximum(np.sum(sums, axis=0), floor)
    shares = predicted / predicted.sum()
    return (np.asarray(bias, dtype=np.float64) - np.log(len(shares) * shares)).astype(np.asarray(bias).dtype)


def calibration_events(noise_multiplier: float, releases: int) -> list:
    """The dp-accounting events of ``releases`` calibration sums of one hospital's records at noise multiplier z."""
    import dp_accounting

    if releases <= 0:
        return []
    return [dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), releases)]


def noise_multipliers(train_cfg) -> tuple[float, ...]:
    """The calibration's Gaussian releases, one noise multiplier each, as DP-SGD's σ calibration composes them."""
    return (float(train_cfg.bias_calibration_noise_multiplier),) * int(train_cfg.bias_calibration_rounds)
