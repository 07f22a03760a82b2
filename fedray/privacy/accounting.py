r"""Record-level DP-SGD accounting for one federated run.

The privacy unit is one record (one image) held by one hospital. Hospital
:math:`k` holds :math:`n_k` records and trains with DP-SGD (Abadi et al. 2016,
"Deep Learning with Differential Privacy", Alg. 1): every step it draws a
Poisson sample (each record independently with probability :math:`q`), clips
each per-record gradient to L2 norm :math:`C` (``max_grad_norm``) and adds
:math:`\mathcal N(0, \sigma^2 C^2 I)` to their sum. :math:`\sigma`
(``noise_multiplier``) is the noise standard deviation divided by the L2
sensitivity :math:`C`. One run makes

.. math:: T = \text{rounds} \times \text{local\_epochs} \times \text{steps per epoch} \;(\approx 1/q)

such steps per hospital, and the (epsilon, delta) below is for all :math:`T`
of them (count the steps actually taken, empty batches included). Calibrate
from :math:`T`, never from the number of rounds (the FLamby
``epochs=nrounds`` mistake).

Epsilon is composed once per run by dp-accounting
(:func:`fedray.privacy.ledger.compose_epsilon`: RDP, Mironov et al. 2019,
or PLD), from each mechanism's declared events. This module keeps what every
mechanism shares: the validity checks, the δ rule, the RDP orders, and the
Opacus accountant that counts a hospital's steps.

The guarantee is void if: sampling is not Poisson (shuffled fixed-size
batches are *not* what is accounted); a step is taken without being counted
(evaluation on training data whose result leaves the hospital also counts);
BatchNorm or any other cross-record layer remains in the model; or one
patient contributes several records (then the bound is for one image; group
privacy for :math:`m` images costs roughly :math:`m\varepsilon`).
"""

from __future__ import annotations

import math

from fedray.errors import FedrayError

# Opacus is imported where it is used: a non-private hospital, the driver and the launching process reach
# this module for default_delta alone, and the import costs about a second a process.

ACCOUNTANTS = ("rdp", "prv")


def validate_privacy_params(
    *, epsilon: float, delta: float, max_grad_norm: float, num_records: int, units: str = "training records"
) -> None:
    """Raise :class:`FedrayError` unless the DP-SGD settings can give a guarantee.

    ``epsilon`` must be > 0 (``inf`` is the non-private baseline). ``delta``
    must lie in (0, 1/N), N the number of protected units (training records; hospitals under client-level DP)
    a delta of 1/N lets a mechanism publish one whole record.

    >>> validate_privacy_params(epsilon=1.0, delta=1e-5, max_grad_norm=1.0, num_records=62)
    """
    if num_records < 1:
        raise FedrayError(
            f"there are {num_records} training records: give every hospital at least one"
        )
    if not epsilon > 0:
        raise FedrayError(
            f"privacy.epsilon={epsilon} must be positive: set e.g. privacy.epsilon=1.0 (or inf for no DP)"
        )
    limit = 1.0 / num_records
    if not 0 < delta < limit:
        raise FedrayError(
            f"delta={delta} is not below 1/N=1/{num_records} for the N {units}: "
            f"set privacy.delta in (0, {limit:.2g}), e.g. {default_delta(num_records):g}"
        )
    if not max_grad_norm > 0:
        raise FedrayError(
            f"privacy.max_grad_norm={max_grad_norm} must be positive: set e.g. privacy.max_grad_norm=1.0"
        )


def default_delta(num_records: int) -> float:
    r"""A delta strictly below :math:`1/N`: :math:`\min(10^{-5}, 10^{-\lceil\log_{10} n\rceil - 1})`.

    That is one power of ten below the largest power of ten not above
    :math:`1/n`, and never more than 1e-5.

    >>> default_delta(311), default_delta(30), default_delta(2_000_000)
    (1e-05, 1e-05, 1e-08)
    """
    return min(1e-5, 10.0 ** (-math.ceil(math.log10(num_records)) - 1))


def run_delta(privacy_cfg, num_records: int) -> float:
    """The run's δ: ``privacy.delta`` where the config sets it, else :func:`default_delta` of the N record slots."""
    delta = getattr(privacy_cfg, "delta", None)
    return float(delta) if delta is not None else default_delta(num_records)


# RDP orders: Opacus' defaults (up to 63) plus larger ones. A small target epsilon needs
# orders near log(1/delta)/epsilon (about 115 for epsilon=0.1, delta=1e-5); with orders
# capped at 63 the bound cannot go below about 0.18 however much noise is added.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [
    80, 96, 128, 160, 192, 256, 384, 512, 768, 1024, 2048, 4096]


def _accountant(name: str):
    if name not in ACCOUNTANTS:
        raise FedrayError(f"privacy.accountant={name!r} is unknown: use one of {ACCOUNTANTS}")
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)
