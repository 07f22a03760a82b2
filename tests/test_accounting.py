"""Record-level DP-SGD accounting: calibration round trips, an independent cross-check, validation."""

import math

import pytest

from fedray.errors import FedrayError
from fedray.privacy.accounting import (
    LedgerEntry,
    calibrate_noise_multiplier,
    default_delta,
    epsilon_spent,
    independent_epsilon,
    summarise_ledger,
    validate_privacy_params,
)

# (sample rate q, total steps T): a large hospital over many rounds, a small one, full-batch.
SCHEDULES = [(0.01, 1000), (0.1, 200), (1.0, 20)]
DELTA = 1e-5


@pytest.mark.parametrize("q, steps", SCHEDULES)
@pytest.mark.parametrize("target", [1.0, 4.0])
def test_calibrated_noise_spends_at_most_the_target(q, steps, target):
    sigma = calibrate_noise_multiplier(target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps)
    spent = epsilon_spent(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    assert 0.9 * target < spent <= target


@pytest.mark.parametrize("q, steps", SCHEDULES)
def test_opacus_rdp_matches_google_dp_accounting(q, steps):
    # Same RDP bound from two code bases. Their grids of RDP orders differ, so the
    # optimum differs slightly: observed <= 0.4% (at epsilon ~ 17), we allow 1%.
    for sigma in (0.8, 1.5, 4.0):
        ours = epsilon_spent(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
        theirs = independent_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
        assert ours == pytest.approx(theirs, rel=1e-2)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # Opacus PRV at q = 1
def test_prv_is_tighter_than_rdp():
    for q, steps in SCHEDULES:
        rdp = epsilon_spent(noise_multiplier=1.5, sample_rate=q, steps=steps, delta=DELTA)
        prv = epsilon_spent(noise_multiplier=1.5, sample_rate=q, steps=steps, delta=DELTA, accountant="prv")
        assert 0 < prv <= rdp


def test_more_steps_or_less_noise_cost_more_epsilon():
    base = epsilon_spent(noise_multiplier=1.0, sample_rate=0.1, steps=100, delta=DELTA)
    assert epsilon_spent(noise_multiplier=1.0, sample_rate=0.1, steps=200, delta=DELTA) > base
    assert epsilon_spent(noise_multiplier=0.8, sample_rate=0.1, steps=100, delta=DELTA) > base


def test_infinite_target_means_no_noise_and_no_noise_means_infinite_epsilon():
    assert calibrate_noise_multiplier(target_epsilon=math.inf, delta=DELTA, sample_rate=0.1, steps=10) == 0.0
    assert epsilon_spent(noise_multiplier=0.0, sample_rate=0.1, steps=10, delta=DELTA) == math.inf
    assert epsilon_spent(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=DELTA) == 0.0
    assert independent_epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=10, delta=DELTA) == math.inf
    assert independent_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=DELTA) == 0.0


@pytest.mark.filterwarnings("ignore:Optimal order")  # Opacus, while sigma heads for its 1e6 cap
def test_unreachable_target_is_a_user_error():
    with pytest.raises(FedrayError, match="unreachable"):
        calibrate_noise_multiplier(target_epsilon=1e-7, delta=DELTA, sample_rate=1.0, steps=10_000)


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


def test_ledger_reports_the_worst_hospital():
    entries = [
        LedgerEntry(hospital=k, noise_multiplier=1.0, sample_rate=q, steps=100, epsilon=eps,
                    delta=1e-5, accountant="rdp", max_grad_norm=1.0)
        for k, (q, eps) in enumerate([(0.05, 1.2), (0.2, 3.4), (0.1, 2.0)])
    ]
    summary = summarise_ledger(entries)
    assert summary["epsilon"] == 3.4 and summary["delta"] == 1e-5
    assert summary["entries"][1] == entries[1].as_dict()
    with pytest.raises(FedrayError):
        summarise_ledger([])
