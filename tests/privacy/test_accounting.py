"""Record-level DP-SGD accounting: calibration round trips, a cross-check against Opacus, validation."""

import math

import dp_accounting
import pytest

from fedray.errors import FedrayError
from fedray.privacy.accounting import RDP_ORDERS, default_delta, validate_privacy_params
from fedray.privacy.ledger import calibrate_noise, compose_epsilon

# (sample rate q, total steps T): a large hospital over many rounds, a small one, full-batch.
SCHEDULES = [(0.01, 1000), (0.1, 200), (1.0, 20)]
DELTA = 1e-5


def _dpsgd(sigma: float, q: float, steps: int):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def _epsilon(sigma: float, q: float, steps: int, accountant: str = "rdp") -> float:
    return compose_epsilon([_dpsgd(sigma, q, steps)], delta=DELTA, accountant=accountant)


@pytest.mark.parametrize("q, steps", SCHEDULES)
@pytest.mark.parametrize("target", [1.0, 4.0])
def test_calibrated_noise_spends_at_most_the_target(q, steps, target):
    sigma = calibrate_noise(lambda s: _epsilon(s, q, steps), target=target)
    assert target - 0.01 <= _epsilon(sigma, q, steps) <= target


@pytest.mark.parametrize("q, steps", SCHEDULES)
@pytest.mark.parametrize("target", [0.1, 10.0])
def test_calibration_meets_a_small_or_large_target_in_few_compositions(q, steps, target):
    sigmas = []
    sigma = calibrate_noise(lambda s: sigmas.append(s) or _epsilon(s, q, steps), target=target)
    assert target - min(0.01, 0.01 * target) <= _epsilon(sigma, q, steps) <= target
    assert len(sigmas) <= 12  # Brent's method on log sigma; bisection on sigma took about 25


def test_calibration_finishes_where_epsilon_is_a_staircase():
    """An accountant whose epsilon jumps (e.g. an integer step count derived from sigma) defeats Brent's secant
    steps; the bisection that finishes still meets the target within the tolerance."""
    calls = []
    staircase = lambda s: calls.append(s) or math.ceil(40 / s) / 10  # noqa: E731: falls in steps of 0.1
    sigma = calibrate_noise(staircase, target=1.05, tolerance=0.06)
    assert staircase(sigma) == 1.0 and 4.0 <= sigma < 40 / 9 and len(calls) < 60
    jumps = calibrate_noise(staircase, target=1.05)  # no step lands within 0.0105 below 1.05: the nearest is kept
    assert staircase(jumps) == 1.0 and jumps == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize("q, steps", SCHEDULES)
def test_dp_accountings_rdp_matches_opacus_rdp(q, steps):
    """Two code bases: the ledger's composition (dp-accounting) against Opacus' own RDP accountant."""
    from opacus.accountants import RDPAccountant

    for sigma in (0.8, 1.5, 4.0):
        opacus = RDPAccountant()
        opacus.history = [(sigma, q, steps)]
        theirs = opacus.get_epsilon(delta=DELTA, alphas=RDP_ORDERS)
        assert _epsilon(sigma, q, steps) == pytest.approx(theirs, rel=0.01)


def test_pld_is_tighter_than_rdp():
    for q, steps in SCHEDULES:
        assert _epsilon(1.5, q, steps, "prv") <= _epsilon(1.5, q, steps, "rdp") + 1e-6


def test_more_steps_or_less_noise_cost_more_epsilon():
    base = _epsilon(1.0, 0.1, 100)
    assert _epsilon(1.0, 0.1, 200) > base and _epsilon(0.8, 0.1, 100) > base


def test_unreachable_target_is_a_user_error():
    with pytest.raises(FedrayError, match="unreachable"):
        calibrate_noise(lambda s: _epsilon(s, 1.0, 10_000), target=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(delta=0.0), "delta"),
        (dict(delta=0.02), r"delta=0.02 is not below 1/N=1/62"),
        (dict(delta=1 / 62), "delta"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
    ],
)
def test_validation_rejects_settings_without_a_guarantee(kwargs, message):
    params = dict(epsilon=1.0, delta=1e-5, max_grad_norm=1.0, num_records=62) | kwargs
    with pytest.raises(FedrayError, match=message):
        validate_privacy_params(**params)


def test_validation_accepts_the_non_private_baseline():
    validate_privacy_params(epsilon=math.inf, delta=1e-5, max_grad_norm=1.0, num_records=62)


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 30, 62, 311, 10**5, 10**6, 2 * 10**6])
def test_default_delta_is_a_power_of_ten_below_one_over_n(n):
    delta = default_delta(n)
    assert delta < 1 / n and delta <= 1e-5
    assert math.log10(delta) == pytest.approx(round(math.log10(delta)))
    assert delta >= min(1e-5, 0.01 / n)  # not needlessly small
