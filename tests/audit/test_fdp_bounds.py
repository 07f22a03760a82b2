"""The f-DP one-run bound (Mahloujifar, Melis & Chaudhuri 2024) and both analyses' ceilings. Pure: no Ray, no torch."""

import dp_accounting
import numpy as np
import pytest
from scipy.stats import binom

from fedray.audit.canary_bounds import guess_grid, one_run_audit, one_run_ceiling, one_run_epsilon_lower_bound
from fedray.audit.fdp_bounds import (fdp_ceiling, fdp_epsilon_lower_bound, fdp_mu_lower_bound, fdp_one_run_audit,
                                     gdp_epsilon)
from fedray.errors import FedrayError

DELTA = 1e-5
BONFERRONI = 1 - 0.05 / 12  # each point of the default 12-point grid at 95 % overall

# (m, r, v, confidence, delta, epsilon): jax_privacy's `_epsilon_one_run_fdp(0, m, r, v, 1 - confidence, delta)`
# (jax_privacy/auditing.py at google-deepmind/jax_privacy commit 8967688c26d46f3b74bfdfe61ef1f984b887abab, the
# helper behind `CanaryScoreAuditor.epsilon_one_run_fdp`), imported on its own (it needs only numpy, scipy and
# dp_accounting) with the xtol=1e-6 of its final `brentq` in ε tightened to 1e-13, so that the reference's own
# root tolerance does not enter a 1e-6 relative comparison; run once, values pasted here. Unmodified, it gives
# these within that 1e-6 tolerance on ε (4.4e-6 relative at the smallest, 0.0151).
JAX_PRIVACY_FDP = [
    (1000, 10, 10, 0.95, 1e-05, 1.2275529916998327),
    (1000, 50, 50, 0.95, 1e-05, 4.0619149684287),
    (1000, 100, 100, 0.95, 1e-05, 5.549027897691246),
    (1000, 500, 500, 0.95, 1e-05, 9.91938225587046),
    (1000, 1000, 1000, 0.95, 1e-05, 12.33456948097432),
    (1000, 200, 180, 0.95, 1e-05, 2.901242772116334),
    (1000, 1000, 700, 0.95, 1e-05, 1.3719793913011762),
    (1000, 400, 398, 0.95, 1e-05, 7.505915783318426),
    (1000, 200, 110, 0.95, 1e-05, 0.0),
    (1000, 1000, 530, 0.95, 1e-05, 0.015103735838309257),
    (500, 100, 100, 0.99, 1e-05, 4.847861642441397),
    (1000, 200, 190, 0.99, 1e-05, 3.240828833791313),
    (1000, 1000, 1000, BONFERRONI, 1e-05, 8.802716606056743),
    (1000, 200, 180, BONFERRONI, 1e-05, 2.1812502429722618),
    (1000, 1000, 1000, 0.95, 0.001, 9.487156702278732),
    (1000, 400, 330, 0.95, 0.001, 1.5463792982163267),
    (1000, 100, 95, 0.95, 1e-06, 3.7272458838321487),
    (100, 50, 45, 0.99, 0.001, 1.3650200441877283),
    (100, 20, 20, 0.95, 1e-05, 3.239392546283428),
    (1000, 300, 250, 0.9, 1e-05, 2.4833308901599462),
    (10000, 2000, 1965, 0.95, 1e-05, 5.63392570105433),
    (10000, 10000, 9944, 0.95, 1e-05, 8.803060221146652),
    (10000, 10000, 10000, 0.95, 1e-05, 16.11103452485939),
    (10000, 400, 259, 0.95, 1e-05, 0.5224481572263528),
    (40, 20, 18, 0.95, 1e-05, 1.9108165872437286),
    (40, 40, 40, 0.95, 1e-05, 6.352124419075117),
]


@pytest.mark.parametrize("m, guesses, correct, confidence, delta, expected", JAX_PRIVACY_FDP)
def test_agrees_with_the_jax_privacy_reference(m, guesses, correct, confidence, delta, expected):
    bound = fdp_epsilon_lower_bound(m, guesses, correct, delta, confidence)
    assert bound == pytest.approx(expected, rel=1e-6, abs=0 if expected else 1e-12)


def test_mu_converts_to_epsilon_by_the_exact_gdp_curve():
    # δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2) at the reported ε gives back the run's δ.
    from scipy.stats import norm

    mu = fdp_mu_lower_bound(1000, 200, 180)
    epsilon = fdp_epsilon_lower_bound(1000, 200, 180, DELTA)
    assert norm.cdf(-epsilon / mu + mu / 2) - np.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2) == \
        pytest.approx(DELTA, rel=1e-6)
    assert gdp_epsilon(0.0, DELTA) == 0.0 and gdp_epsilon(mu, 0.0) == np.inf  # no Gaussian curve is pure DP


def test_bound_is_monotone_in_correct_guesses_and_zero_at_chance():
    bounds = [fdp_mu_lower_bound(1000, 200, v) for v in range(0, 201, 5)]
    assert np.all(np.diff(bounds) >= 0) and bounds[20] == 0.0  # 100 of 200: chance
    assert fdp_mu_lower_bound(1000, 0, 0) == 0.0


def test_invalid_counts_are_refused():
    with pytest.raises(FedrayError):
        fdp_mu_lower_bound(100, 50, 60)
    with pytest.raises(FedrayError):
        fdp_mu_lower_bound(100, 200, 10)
    with pytest.raises(FedrayError):
        fdp_mu_lower_bound(100, 50, 40, confidence=1.0)


def _gaussian_runs(rng, mu: float, m: int, runs: int, **audit) -> np.ndarray:
    """μ of each audited run of the Gaussian mechanism: scores inclusion·μ + N(0, 1), top and bottom guessed."""
    bounds = []
    for _ in range(runs):
        included = rng.random(m) < 0.5
        bounds.append(fdp_one_run_audit(included * mu + rng.standard_normal(m), included, **audit).mu_lower_bound)
    return np.array(bounds)


@pytest.mark.parametrize("mu, m, grid, confidence", [
    (2.0, 1000, None, 0.95),  # as a run audits: the default grid, Bonferroni over it
    (1.0, 1000, [(100, 100)], 0.95),
    (2.0, 2000, [(200, 200)], 0.5),  # at 50 % the bound is close enough to the truth to exceed it at times
])
def test_the_bound_exceeds_a_known_gaussian_mechanism_at_most_at_its_significance(mu, m, grid, confidence):
    runs = 240
    rng = np.random.default_rng(int(mu * 10 + m + 100 * confidence))
    bounds = _gaussian_runs(rng, mu, m, runs, delta=DELTA, confidence=confidence, grid=grid)
    true_epsilon = dp_accounting.get_epsilon_gaussian(1 / mu, DELTA)
    violations = sum(gdp_epsilon(b, DELTA) > true_epsilon for b in bounds)
    # At most 1 - confidence of the runs, up to the binomial's 99.9 % quantile.
    assert violations <= binom.ppf(0.999, runs, 1 - confidence)
    assert np.median(bounds) > mu / 4  # and the audit does see the mechanism: the check is not vacuous


@pytest.mark.parametrize("m", [1000, 10000])
def test_all_right_guesses_certify_more_than_steinke_et_al(m):
    """The paper's point: with many canaries the 2mδ term and the randomised-response tail cap Steinke et al.'s
    bound, the Gaussian curve's far less."""
    for r in sorted({k_plus + k_minus for k_plus, k_minus in guess_grid(m)}):
        assert fdp_epsilon_lower_bound(m, r, r, DELTA) >= one_run_epsilon_lower_bound(m, r, r, DELTA)
    assert fdp_epsilon_lower_bound(m, m, m, DELTA) > 2 * one_run_epsilon_lower_bound(m, m, m, DELTA)


def test_no_audit_exceeds_its_ceiling_and_perfect_guesses_reach_it():
    rng = np.random.default_rng(4)
    ceiling, ceiling_fdp = one_run_ceiling(1000, DELTA), fdp_ceiling(1000, DELTA)
    for mu in (0.5, 2.0, 8.0):
        included = rng.random(1000) < 0.5
        scores = included * mu + rng.standard_normal(1000)
        assert fdp_one_run_audit(scores, included, delta=DELTA).epsilon_lower_bound <= ceiling_fdp
        assert one_run_audit(scores, included, delta=DELTA).epsilon_lower_bound <= ceiling
    # Scores that separate the canaries, half of them in: every guess right at every grid point, (500, 500) too.
    perfect = rng.permutation(1000) < 500
    assert fdp_one_run_audit(perfect.astype(float), perfect, delta=DELTA).epsilon_lower_bound == \
        pytest.approx(ceiling_fdp, rel=1e-9)
    assert one_run_audit(perfect.astype(float), perfect, delta=DELTA).epsilon_lower_bound == pytest.approx(ceiling)


def test_ceilings_have_known_values():
    # Steinke et al. with one grid point: all 1000 of 1000 right at 95 % (the canary_bounds docstring's 5.78).
    assert one_run_ceiling(1000, DELTA, grid=[(500, 500)]) == pytest.approx(5.782283, abs=1e-5)
    # Over the default 12-point grid each point is tested at 1 - 0.05/12; r = 1000 is still the best point.
    assert one_run_ceiling(1000, DELTA) == pytest.approx(one_run_epsilon_lower_bound(1000, 1000, 1000, DELTA,
                                                                                     BONFERRONI))
    assert one_run_ceiling(1000, DELTA) == pytest.approx(5.085036, abs=1e-5)
    # The f-DP ceilings are JAX_PRIVACY_FDP's all-right rows at m = r = 1000.
    assert fdp_ceiling(1000, DELTA, grid=[(500, 500)]) == pytest.approx(12.334569, abs=1e-5)
    assert fdp_ceiling(1000, DELTA) == pytest.approx(8.802717, abs=1e-5)


def test_the_audit_reports_its_grid_point_and_zero_without_leakage():
    rng = np.random.default_rng(6)
    included = rng.random(1000) < 0.5
    audit = fdp_one_run_audit(rng.normal(4.0 * included, 1.0), included, delta=DELTA)
    assert audit.epsilon_lower_bound > 3 and audit.grid_size == 12
    assert audit.epsilon_lower_bound == pytest.approx(
        fdp_epsilon_lower_bound(1000, audit.guesses, audit.correct, DELTA, BONFERRONI))
    assert audit.guesses == audit.k_plus + audit.k_minus and audit.correct <= audit.guesses
    unleaky = [fdp_one_run_audit(rng.standard_normal(1000), rng.random(1000) < 0.5, delta=DELTA).mu_lower_bound
               for _ in range(100)]
    assert sum(b > 0 for b in unleaky) <= binom.ppf(0.999, 100, 0.05)
