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

Epsilon comes from Opacus' accountants: ``"rdp"`` (Mironov et al. 2019,
"Renyi Differential Privacy of the Sampled Gaussian Mechanism", with the
RDP-to-(eps, delta) conversion of Balle et al. 2020, Thm 21) or ``"prv"``
(Gopi et al. 2021, numerical composition; tighter, returns its upper bound).
:func:`independent_epsilon` recomputes the RDP figure with Google's
``dp_accounting`` as a cross-check.

The guarantee is void if: sampling is not Poisson (shuffled fixed-size
batches are *not* what is accounted); a step is taken without being counted
(evaluation on training data whose result leaves the hospital also counts);
BatchNorm or any other cross-record layer remains in the model; or one
patient contributes several records (then the bound is for one image; group
privacy for :math:`m` images costs roughly :math:`m\varepsilon`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

from fedray.errors import FedrayError

# Opacus and dp-accounting are imported where they are used: a non-private hospital, the driver and the
# launching process reach this module for default_delta alone, and each import costs about a second a process.

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


def _check_schedule(*, sample_rate: float, steps: int) -> None:
    if not 0 < sample_rate <= 1:
        raise FedrayError(
            f"sample rate q={sample_rate} must be in (0, 1]: use batch_size <= the smallest hospital's size"
        )
    if steps < 0:
        raise FedrayError(f"steps={steps} must be >= 0: check fl.rounds and fl.local_epochs")


# RDP orders: Opacus' defaults (up to 63) plus larger ones. A small target epsilon needs
# orders near log(1/delta)/epsilon (about 115 for epsilon=0.1, delta=1e-5); with orders
# capped at 63 the bound cannot go below about 0.18 however much noise is added.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [
    80, 96, 128, 160, 192, 256, 384, 512, 768, 1024, 2048, 4096]


def _orders(accountant: str) -> dict:
    return {"alphas": RDP_ORDERS} if accountant == "rdp" else {}


def _accountant(name: str):
    if name not in ACCOUNTANTS:
        raise FedrayError(f"privacy.accountant={name!r} is unknown: use one of {ACCOUNTANTS}")
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


@lru_cache(maxsize=256)  # hospitals of equal size share one calibration (0.5-1 s each on a laptop)
def calibrate_noise_multiplier(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    r"""The smallest :math:`\sigma` (to 0.01 in epsilon) with :math:`\varepsilon(\sigma, q, T, \delta) \le` target.

    ``steps`` is the run's total :math:`T` (all rounds, all local epochs).
    Wraps Opacus ``get_noise_multiplier`` (binary search, result's epsilon in
    [target - 0.01, target]). ``target_epsilon=inf`` returns ``0.0``, which
    fedray reads as "no DP: bypass Opacus" (Opacus itself would return 10).

    >>> calibrate_noise_multiplier(target_epsilon=float("inf"), delta=1e-5, sample_rate=0.1, steps=100)
    0.0
    """
    if math.isinf(target_epsilon):
        return 0.0
    _check_schedule(sample_rate=sample_rate, steps=steps)
    _accountant(accountant)
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                **_orders(accountant),
            )
        )
    except ValueError as err:  # Opacus: sigma would exceed 1e6
        raise FedrayError(
            f"epsilon={target_epsilon} is unreachable with q={sample_rate} over {steps} steps ({err}): "
            "raise privacy.epsilon or train fewer rounds/epochs"
        ) from err


def epsilon_spent(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    r"""Epsilon at ``delta`` after ``steps`` Poisson-sampled Gaussian steps.

    ``noise_multiplier == 0`` means no noise, hence :math:`\varepsilon=\infty`;
    ``steps == 0`` releases nothing, hence 0.
    """
    _check_schedule(sample_rate=sample_rate, steps=steps)
    acc = _accountant(accountant)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta, **_orders(accountant)))


def independent_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """The RDP epsilon recomputed with Google's ``dp_accounting`` (an independent code base).

    Event: ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` self-composed
    ``steps`` times, under add/remove-one neighbouring (as Opacus). Same
    conventions as :func:`epsilon_spent`: no steps 0, no noise inf.
    """
    _check_schedule(sample_rate=sample_rate, steps=steps)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )
    acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


@dataclass
class LedgerEntry:
    """What one hospital spent: its schedule (sigma, q, T) and the resulting (epsilon, delta)."""

    hospital: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float
    delta: float
    accountant: str
    max_grad_norm: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarise_ledger(entries: list[LedgerEntry]) -> dict:
    r"""The run's guarantee: :math:`(\max_k \varepsilon_k, \max_k \delta_k)` over hospitals.

    Each record lives in exactly one hospital and only that hospital's noisy
    steps read it; every other hospital's computation sees it only through
    already-released models (post-processing), so by parallel and adaptive
    composition the run is :math:`(\max_k\varepsilon_k, \max_k\delta_k)`-DP
    at record level. Void if one patient's records are split across hospitals.

    >>> e = [LedgerEntry(0, 1.1, 0.1, 50, 2.0, 1e-5, "rdp", 1.0), LedgerEntry(1, 1.1, 0.2, 50, 3.0, 1e-5, "rdp", 1.0)]
    >>> summarise_ledger(e)["epsilon"]
    3.0
    """
    if not entries:
        raise FedrayError("the privacy ledger is empty: no hospital reported a DP-SGD schedule")
    return {
        "epsilon": max(e.epsilon for e in entries),
        "delta": max(e.delta for e in entries),
        "entries": [e.as_dict() for e in entries],
    }
