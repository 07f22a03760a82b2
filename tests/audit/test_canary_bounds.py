"""One-run canary bound (Steinke et al. 2023) and the Gaussian canary estimate (Andrew et al. 2024)."""

import math

import dp_accounting
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from fedray.errors import FedrayError
from fedray.audit.canaries import CanaryClients
from fedray.audit.canary_bounds import (
    choose_guesses,
    gaussian_epsilon_estimate,
    gaussian_pair_epsilon,
    guess_grid,
    one_run_audit,
    one_run_audit_p_value,
    one_run_epsilon_lower_bound,
)

DELTA = 1e-5

# m = 1000 canaries, all r guesses right, δ = 1e-5, 95%: the values of the authors'
# reference procedure (arXiv:2305.08846, Appendix D, `get_eps_audit(m, r, v, delta, p)`),
# run on these inputs. The stored copy of the paper gave us no figure values to read off.
ALL_CORRECT_M1000 = {10: 1.0150, 50: 2.7562, 100: 3.4654, 200: 4.1665, 500: 5.0875, 1000: 5.7823}


@pytest.mark.parametrize("guesses, expected", sorted(ALL_CORRECT_M1000.items()))
def test_all_correct_guesses_match_the_reference_procedure(guesses, expected):
    assert one_run_epsilon_lower_bound(1000, guesses, guesses, DELTA) == pytest.approx(expected, abs=2e-4)


def test_partial_and_other_sizes_match_the_reference_procedure():
    # Same reference code; (500, 100, 100) also matches a published third-party run of it
    # (huggingface.co/melihcatal/codedp-cpt-models, starcoder2-7b/base/audit_results.json: 3.47920, 3.02320).
    assert one_run_epsilon_lower_bound(500, 100, 100, DELTA, 0.95) == pytest.approx(3.479195, abs=1e-5)
    assert one_run_epsilon_lower_bound(500, 100, 100, DELTA, 0.99) == pytest.approx(3.023198, abs=1e-5)
    assert one_run_epsilon_lower_bound(1000, 200, 180, DELTA) == pytest.approx(1.796285, abs=1e-5)
    assert one_run_epsilon_lower_bound(1000, 1000, 700, DELTA) == pytest.approx(0.731740, abs=1e-5)


@pytest.mark.parametrize("guesses", [10, 100, 1000])
def test_pure_dp_all_correct_has_a_closed_form(guesses):
    # δ = 0, all right: p = q^r with q = 1/(1+e^-ε), so the bound solves r log(1+e^-ε) = log(1/0.05).
    expected = -math.log(math.expm1(math.log(20) / guesses))
    assert one_run_epsilon_lower_bound(1000, guesses, guesses, 0.0) == pytest.approx(expected, abs=1e-6)


def test_bound_is_monotone_in_correct_guesses_and_zero_at_chance():
    bounds = [one_run_epsilon_lower_bound(1000, 200, v, DELTA) for v in range(0, 201)]
    assert np.all(np.diff(bounds) >= 0)
    assert bounds[100] == 0.0 and bounds[110] == 0.0  # chance, and within its noise
    assert bounds[200] > 4
    assert one_run_epsilon_lower_bound(1000, 0, 0, DELTA) == 0.0


def test_delta_and_confidence_only_lower_the_bound():
    base = one_run_epsilon_lower_bound(1000, 300, 280, 0.0)
    assert one_run_epsilon_lower_bound(1000, 300, 280, 1e-3) < base
    assert one_run_epsilon_lower_bound(1000, 300, 280, 0.0, confidence=0.99) < base


def test_invalid_counts_are_refused():
    with pytest.raises(FedrayError):
        one_run_epsilon_lower_bound(100, 50, 60, DELTA)
    with pytest.raises(FedrayError):
        one_run_epsilon_lower_bound(100, 200, 10, DELTA)


def test_choose_guesses_takes_the_extremes_and_abstains_elsewhere():
    scores = np.array([0.5, 3.0, -1.0, 2.0, 0.0, -2.0])
    assert choose_guesses(scores, 2, 1).tolist() == [0, 1, 0, 1, 0, -1]
    assert choose_guesses(scores, 0, 0).tolist() == [0] * 6
    assert (choose_guesses(scores, 3, 3) != 0).all()
    with pytest.raises(FedrayError):
        choose_guesses(scores, 4, 3)


def test_grid_is_fixed_by_m_alone():
    grid = guess_grid(1000)
    assert (10, 0) in grid and (500, 500) in grid and len(grid) == 12
    assert all(k_plus + k_minus <= 1000 for k_plus, k_minus in grid)


def test_one_run_audit_without_leakage_certifies_at_most_five_percent():
    rng = np.random.default_rng(7)
    repetitions = 300
    positive = sum(
        one_run_audit(rng.standard_normal(1000), rng.random(1000) < 0.5, delta=DELTA).epsilon_lower_bound > 0
        for _ in range(repetitions)
    )
    assert positive / repetitions <= 0.05


def test_one_run_audit_detects_leaky_canaries():
    rng = np.random.default_rng(8)
    included = rng.random(1000) < 0.5
    audit = one_run_audit(rng.normal(4.0 * included, 1.0), included, delta=DELTA)
    assert audit.epsilon_lower_bound > 3
    assert audit.grid_size == 12 and audit.correct <= audit.guesses == audit.k_plus + audit.k_minus


def test_the_p_value_is_below_one_minus_confidence_exactly_when_the_bound_exceeds_epsilon():
    """On random canaries, leaks, δ, confidences and claimed ε (drawn around the bound, so both sides occur)."""
    rng = np.random.default_rng(11)
    outcomes = set()
    for _ in range(40):
        m = int(rng.integers(20, 400))
        included = rng.random(m) < 0.5
        scores = rng.normal(rng.uniform(0, 4) * included, 1.0)
        delta, confidence = rng.choice([0.0, 1e-5, 1e-3]), rng.choice([0.9, 0.95, 0.99])
        bound = one_run_audit(scores, included, delta=delta, confidence=confidence).epsilon_lower_bound
        epsilon = rng.uniform(0.5, 1.5) * bound if bound > 0 else rng.uniform(0, 1)
        p_value = one_run_audit_p_value(scores, included, epsilon=epsilon, delta=delta)
        assert 0 <= p_value <= 1
        assert (p_value < 1 - confidence) == (bound > epsilon), (m, delta, confidence, bound, epsilon, p_value)
        outcomes.add(bool(bound > epsilon))
    assert outcomes == {True, False}


def test_the_p_value_of_an_honest_claim_is_at_least_its_level():
    """No leak at all: Pr[p < α] <= α, here at α = 10% over 200 runs (the 99.9% quantile of Binomial(200, 0.1))."""
    rng = np.random.default_rng(12)
    p_values = np.array([one_run_audit_p_value(rng.standard_normal(200), rng.random(200) < 0.5, epsilon=0.0,
                                               delta=DELTA) for _ in range(200)])
    assert np.sum(p_values < 0.1) <= 34


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_equal_variance_pair_is_the_gaussian_mechanism(mu):
    # N(mu, 1) vs N(0, 1) is sensitivity 1 under noise sigma = 1/mu (Balle & Wang 2018, via dp_accounting).
    expected = dp_accounting.get_epsilon_gaussian(1.0 / mu, DELTA)
    assert gaussian_pair_epsilon(mu, 1.0, 0.0, 1.0, DELTA) == pytest.approx(expected, rel=1e-6)
    assert gaussian_pair_epsilon(0.0, 2.0, 2.0 * mu, 2.0, DELTA) == pytest.approx(expected, rel=1e-6)
    assert gaussian_pair_epsilon(0.3, 1.0, 0.3, 1.0, DELTA) == 0.0


@pytest.mark.parametrize("pair", [(1.0, 1.3, 0.0, 1.0), (0.5, 0.8, 0.0, 1.0)])
def test_unequal_variances_match_the_integrated_hockey_stick(pair):
    mu_1, sigma_1, mu_0, sigma_0 = pair
    epsilon = gaussian_pair_epsilon(mu_1, sigma_1, mu_0, sigma_0, DELTA)

    def hockey_stick(mu_a, sigma_a, mu_b, sigma_b):
        gap = lambda x: max(norm.pdf(x, mu_a, sigma_a) - math.exp(epsilon) * norm.pdf(x, mu_b, sigma_b), 0.0)
        return quad(gap, -60, 60, points=[mu_a, mu_b], limit=500, epsabs=1e-13)[0]

    worst = max(hockey_stick(mu_1, sigma_1, mu_0, sigma_0), hockey_stick(mu_0, sigma_0, mu_1, sigma_1))
    assert worst == pytest.approx(DELTA, rel=1e-3)


def test_gaussian_estimate_recovers_a_known_mechanism():
    rng = np.random.default_rng(3)
    truth = dp_accounting.get_epsilon_gaussian(1.0, DELTA)  # mu = 1
    estimate = gaussian_epsilon_estimate(rng.normal(1, 1, 4000), rng.normal(0, 1, 4000), DELTA, rng=rng)
    assert estimate.epsilon == pytest.approx(truth, abs=0.4)
    assert estimate.interval[0] <= truth <= estimate.interval[1]
    unasked = gaussian_epsilon_estimate(rng.normal(1, 1, 50), rng.normal(0, 1, 50), DELTA, n_bootstrap=0)
    assert all(map(math.isnan, unasked.interval))


def test_canary_client_cosines_of_a_gaussian_mechanism_estimate_its_epsilon():
    # Andrew et al.'s setting in one round, through the canary clients a DP-FedAvg audit inserts: unit canaries
    # (clip norm 1), half included, isotropic noise sigma = 1 per coordinate; in high dimension (d >> canaries)
    # the cosines' Gaussians recover the mechanism's epsilon.
    rng = np.random.default_rng(5)
    dim, n_canaries, sigma = 10_000, 600, 1.0
    clients = CanaryClients(names=["w"], shapes={"w": (dim,)}, seed=5, count=n_canaries, clip_norm=1.0)
    observed = np.arange(n_canaries) < n_canaries // 2
    model_delta = clients.round_update(np.flatnonzero(observed))["w"] + rng.normal(0.0, sigma, dim)
    cosines = clients.cosines({"w": model_delta})
    truth = dp_accounting.get_epsilon_gaussian(sigma, DELTA)
    pooled = gaussian_epsilon_estimate(cosines[observed], cosines[~observed], DELTA, rng=rng, pooled_variance=True)
    assert pooled.epsilon == pytest.approx(truth, abs=1.0)
    assert pooled.interval[0] <= truth <= pooled.interval[1] and pooled.observed_std == pooled.unobserved_std
    separate = gaussian_epsilon_estimate(cosines[observed], cosines[~observed], DELTA, rng=rng, n_bootstrap=300)
    assert separate.interval[0] <= truth <= separate.interval[1]
