r"""Canary audits from a single training run: a rigorous ε lower bound and a Gaussian ε estimate.

**One-run lower bound** (Steinke, Nasr, Jagielski, "Privacy Auditing with One
(1) Training Run", NeurIPS 2023, arXiv:2305.08846; Theorem 3.1, the game of
Algorithm 1, the code of Appendix D). Each of :math:`m` canaries is included
independently with probability ½ (:math:`S_i \in \{\pm1\}`). From the output
alone the auditor guesses :math:`T_i \in \{+1, -1, 0\}` (0 abstains), with
:math:`r` non-zero guesses, and counts :math:`W` correct ones. If the training
run is :math:`(\varepsilon,\delta)`-DP with respect to each canary then, with
:math:`f(v) = \Pr[\mathrm{Binomial}(r, q) \ge v]`, :math:`q = e^\varepsilon/(1+e^\varepsilon)`
(the accuracy of ε-randomised response),

.. math:: \Pr[W \ge v] \le f(v) + 2m\delta \max_{i=1..v} \frac{f(v-i) - f(v)}{i} =: p_\varepsilon(v).

The bound reported at confidence :math:`c` is the largest ε with
:math:`p_\varepsilon(W) < 1-c`, found like the authors' code by bracketing and
bisection (it keeps :math:`p_{\varepsilon_{lb}}(W) < 1-c`); 0 if even ε = 0 is
not rejected. It needs no shadow models and no assumption on the mechanism
beyond DP, but it is conservative: :math:`m` canaries cap it (all 1000 of
1000 guesses right at δ = 1e-5, 95%: 5.78).

*Choosing the number of guesses honestly.* The theorem holds for guesses that
are a function of the output only, so :math:`k_+, k_-` must not be tuned on the
canaries' membership. :func:`one_run_audit` takes a fixed grid of
:math:`G` pairs :math:`(k_+, k_-)` declared before the scores are seen, tests
each at significance :math:`(1-c)/G` and reports the largest bound. If the run
is :math:`(\varepsilon^*, \delta)`-DP, each grid point exceeds :math:`\varepsilon^*`
with probability at most :math:`(1-c)/G` (since :math:`p_\varepsilon` grows with ε),
so by the union bound all stay below it with probability :math:`\ge c`. We
prefer this to choosing k on half of the canaries: the bound grows with the
number of guesses, and a dozen grid points cost only :math:`\log G` in the
p-value, while a split halves :math:`m`. The same split gives the audit's
p-value against a claimed ε (:func:`one_run_audit_p_value`), which a sweep
corrects over its trials (:mod:`fedray.audit.family`).

*The audit's ceiling.* With :math:`m` canaries, a confidence and δ fixed,
even an adversary whose every guess is right certifies only so much:
:func:`one_run_ceiling` is the largest bound :func:`one_run_audit` can report,
:math:`v = r` at the grid's best :math:`r`, at the per-point confidence. A
bound far below it says the guesses were poor; a bound at it says the
canaries, not the run, limit what can be shown.

**Gaussian estimate** (Andrew et al., "One-shot Empirical Privacy Estimation
for Federated Learning", ICLR 2024, arXiv:2302.03098; Algorithm 1, Sec. 3-4).
Canary clients push random unit directions :math:`c_j \in \mathbb{R}^d`; the
statistic is the cosine between the final model delta and :math:`c_j` (the paper
also takes its maximum over the rounds' updates when every iterate is released;
fedray scores the final delta only: :class:`fedray.audit.canaries.CanaryClients`
makes the directions and their cosines, this module only fits them). Cosines of
canaries that took part ("observed") and of fresh directions that did not
("unobserved", :math:`\approx \mathcal N(0, 1/d)` in high dimension) are fitted by
:math:`\mathcal N(\mu_1, \sigma_1^2)` and :math:`\mathcal N(\mu_0, \sigma_0^2)`, and the
estimate is the ε of that pair at δ: the smallest ε whose hockey-stick
divergence :math:`\sup_E P_a(E) - e^\varepsilon P_b(E)` is at most δ in both
directions. For :math:`\sigma_1 = \sigma_0` it is the Gaussian mechanism with
:math:`\mu = |\mu_1-\mu_0|/\sigma` (Balle & Wang 2018). The paper shows the estimate is
exact for the Gaussian mechanism as :math:`d \to \infty`; otherwise it is an
estimate, not a bound: a bootstrap interval gives its sampling spread under
the Gaussian fit, nothing more. Separate variances make the privacy loss
quadratic and the estimate sensitive to the variance ratio's sampling noise;
an option pools the variance (the Gaussian mechanism's own assumption).

Both can run on the same canaries: include each with probability ½, use the
cosines as scores for :func:`one_run_audit` (the certificate) and as the two
samples of :func:`gaussian_epsilon_estimate` (the estimate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import dp_accounting
import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, log_ndtr, ndtr
from scipy.stats import binom

from fedray.errors import FedrayError

BISECTION_STEPS = 40  # brackets of width 1 shrink to about 1e-12
DEFAULT_GUESS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def one_run_p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    r""":math:`p_\varepsilon(v)` of Theorem 3.1 (module docstring): bounds the chance of ``correct`` or more right guesses."""
    q = float(expit(epsilon))
    tail = binom.sf(correct - 1, guesses, q)
    if delta == 0 or correct == 0:
        return min(float(tail), 1.0)
    # f(v-i) - f(v) = P[v-i <= B < v], accumulated from B = v-1 downward.
    window = np.cumsum(binom.pmf(np.arange(correct - 1, -1, -1), guesses, q))
    slope = float(np.max(window / np.arange(1, correct + 1)))
    return min(float(tail) + 2 * m * delta * slope, 1.0)


def one_run_epsilon_lower_bound(m: int, guesses: int, correct: int, delta: float, confidence: float = 0.95) -> float:
    """Largest ε that ``correct`` right of ``guesses`` over ``m`` canaries reject at ``confidence`` (Steinke et al.).

    Monotone non-decreasing in ``correct``; 0 when the guesses are no better than chance.

    >>> round(one_run_epsilon_lower_bound(1000, 100, 100, 1e-5), 3)
    3.465
    """
    m, guesses, correct = int(m), int(guesses), int(correct)
    if not 0 <= correct <= guesses <= m:
        raise FedrayError(f"need 0 <= correct <= guesses <= m, got correct={correct}, guesses={guesses}, m={m}")
    if not 0 < confidence < 1 or not 0 <= delta <= 1:
        raise FedrayError(f"confidence={confidence} must lie in (0, 1) and delta={delta} in [0, 1]")
    significance = 1.0 - confidence

    def rejected(epsilon: float) -> bool:
        return one_run_p_value(m, guesses, correct, epsilon, delta) < significance

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):
        low, high = high, high + 1.0
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if rejected(middle) else (low, middle)
    return low


def choose_guesses(scores: np.ndarray, k_plus: int, k_minus: int) -> np.ndarray:
    """+1 ("member") for the ``k_plus`` highest scores, -1 for the ``k_minus`` lowest, 0 (abstain) elsewhere.

    Ties are broken by position (a stable sort), which depends on the scores' order only, never on membership.

    >>> choose_guesses(np.array([0.3, 0.9, 0.1, 0.5]), 1, 1)
    array([ 0,  1, -1,  0])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > len(scores):
        raise FedrayError(
            f"k_plus={k_plus} and k_minus={k_minus} must be >= 0 and sum to at most {len(scores)} canaries"
        )
    order = np.argsort(scores, kind="stable")
    guesses = np.zeros(len(scores), dtype=int)
    guesses[order[:k_minus]] = -1
    guesses[order[len(scores) - k_plus:]] = 1
    return guesses


def guess_grid(m: int, fractions: tuple[float, ...] = DEFAULT_GUESS_FRACTIONS) -> list[tuple[int, int]]:
    """The fixed grid of (k_plus, k_minus): k = round(fraction * m), one-sided (k, 0) and symmetric (k, k)."""
    ks = sorted({max(1, round(f * m)) for f in fractions if 2 * max(1, round(f * m)) <= m})
    return [(k, 0) for k in ks] + [(k, k) for k in ks]


@dataclass
class OneRunAudit:
    """The one-run bound (valid at ``confidence`` over the whole grid) and the grid point that attained it."""

    epsilon_lower_bound: float
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    m: int
    grid_size: int
    confidence: float
    delta: float

    def as_dict(self) -> dict:
        return asdict(self)


def grid_counts(scores: np.ndarray, included: np.ndarray,
                grid: list[tuple[int, int]] | None = None) -> list[tuple[int, int, int]]:
    """(k_plus, k_minus, correct guesses) at every point of ``grid`` (default :func:`guess_grid`) on these canaries.

    ``included[i]`` is whether canary i was in the run (drawn independently with probability ½ before training).
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included).astype(bool)
    grid = guess_grid(len(scores)) if grid is None else list(grid)
    if len(scores) == 0 or len(included) != len(scores) or not grid:
        raise FedrayError(
            f"need as many inclusion flags as canary scores ({len(included)} vs {len(scores)}) and a non-empty grid"
        )
    truth = np.where(included, 1, -1)
    return [(k_plus, k_minus, int(np.sum(choose_guesses(scores, k_plus, k_minus) == truth)))
            for k_plus, k_minus in grid]


def per_point_confidence(confidence: float, grid_size: int) -> float:
    """Bonferroni: each of ``grid_size`` points is tested at significance (1 - confidence) / grid_size."""
    return 1.0 - (1.0 - confidence) / grid_size


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    grid: list[tuple[int, int]] | None = None,
) -> OneRunAudit:
    """Steinke et al.'s bound from canary ``scores`` (higher = "included") with a Bonferroni correction over ``grid``.

    ``grid`` defaults to :func:`guess_grid`; it must be fixed before looking at the scores.
    """
    counts = grid_counts(scores, included, grid)
    m, per_point = len(scores), per_point_confidence(confidence, len(counts))
    best = None
    for k_plus, k_minus, correct in counts:
        bound = one_run_epsilon_lower_bound(m, k_plus + k_minus, correct, delta, per_point)
        if best is None or bound > best.epsilon_lower_bound:
            best = OneRunAudit(bound, k_plus, k_minus, k_plus + k_minus, correct, m, len(counts), confidence, delta)
    return best


def one_run_audit_p_value(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    epsilon: float,
    delta: float,
    grid: list[tuple[int, int]] | None = None,
) -> float:
    r"""The p-value of ":math:`(\varepsilon, \delta)`-DP with respect to each canary" on these canaries.

    :math:`\min(1, G \min_g p_\varepsilon(W_g))` over the :math:`G` points of ``grid`` (default :func:`guess_grid`),
    the Bonferroni split :func:`one_run_audit` makes: it is below :math:`1-c` exactly when that audit's bound at
    confidence :math:`c` exceeds ``epsilon`` (up to the bisection's tolerance), since :math:`p_\varepsilon` grows with
    ε. Valid under the module's assumptions: if the run is :math:`(\varepsilon, \delta)`-DP,
    :math:`\Pr[p < \alpha] \le \alpha` for every α, so a sweep can correct many of them together.
    """
    counts = grid_counts(scores, included, grid)
    smallest = min(one_run_p_value(len(scores), k_plus + k_minus, correct, epsilon, delta)
                   for k_plus, k_minus, correct in counts)
    return min(1.0, len(counts) * smallest)


def grid_ceiling(bound: Callable[[int, int, int, float, float], float], m: int, delta: float, confidence: float,
                 grid: list[tuple[int, int]] | None) -> float:
    """The largest ``bound(m, r, r, delta, per-point confidence)`` over the grid's guess counts r: all guesses right."""
    grid = guess_grid(m) if grid is None else list(grid)
    per_point = per_point_confidence(confidence, len(grid))
    return max(bound(m, r, r, delta, per_point) for r in sorted({k_plus + k_minus for k_plus, k_minus in grid}))


def one_run_ceiling(m: int, delta: float, confidence: float = 0.95,
                    grid: list[tuple[int, int]] | None = None) -> float:
    """The largest bound :func:`one_run_audit` can report with ``m`` canaries: every guess right (module docstring).

    >>> round(one_run_ceiling(1000, 1e-5, grid=[(500, 500)]), 2)  # one grid point: no Bonferroni
    5.78
    """
    return grid_ceiling(one_run_epsilon_lower_bound, m, delta, confidence, grid)


def _log_mass_where_loss_exceeds(epsilon: float, a: float, b: float, c: float, mu: float, sigma: float) -> float:
    r"""log P[a x^2 + b x + c > ε] for x ~ N(mu, sigma^2): the privacy loss is that quadratic in x."""
    shift = c - epsilon
    if a == 0:
        if b == 0:
            return 0.0 if shift > 0 else -np.inf
        cut = -shift / b
        return float(log_ndtr((mu - cut) / sigma) if b > 0 else log_ndtr((cut - mu) / sigma))
    discriminant = b * b - 4 * a * shift
    if discriminant <= 0:  # the quadratic never crosses ε: its sign is the sign of a
        return 0.0 if a > 0 else -np.inf
    # Roots without cancellation (Numerical Recipes 5.6): q/a and shift/q.
    q = -0.5 * (b + np.copysign(np.sqrt(discriminant), b))
    left, right = sorted((q / a, shift / q))
    low, high = (left - mu) / sigma, (right - mu) / sigma
    if a > 0:  # mass outside the roots
        return float(np.logaddexp(log_ndtr(low), log_ndtr(-high)))
    # Mass between the roots, differenced in the tail where both cdfs are small.
    between = ndtr(-low) - ndtr(-high) if low > 0 else ndtr(high) - ndtr(low)
    return float(np.log(between)) if between > 0 else -np.inf


def _hockey_stick(epsilon: float, mu_a: float, sigma_a: float, mu_b: float, sigma_b: float) -> float:
    r"""Hockey-stick divergence :math:`\sup_E P_a(E) - e^\varepsilon P_b(E)`.

    It equals :math:`P_a[L > \varepsilon] - e^\varepsilon P_b[L > \varepsilon]` with :math:`L = \log(p_a/p_b)`.
    """
    a = 0.5 * (sigma_b ** -2 - sigma_a ** -2)
    b = mu_a / sigma_a ** 2 - mu_b / sigma_b ** 2
    c = 0.5 * ((mu_b / sigma_b) ** 2 - (mu_a / sigma_a) ** 2) + np.log(sigma_b / sigma_a)
    log_a = _log_mass_where_loss_exceeds(epsilon, a, b, c, mu_a, sigma_a)
    log_b = _log_mass_where_loss_exceeds(epsilon, a, b, c, mu_b, sigma_b)
    return max(0.0, float(np.exp(log_a) - np.exp(epsilon + log_b)))


def gaussian_pair_epsilon(mu_1: float, sigma_1: float, mu_0: float, sigma_0: float, delta: float) -> float:
    """The smallest ε >= 0 at which N(mu_1, sigma_1²) and N(mu_0, sigma_0²) are (ε, δ)-indistinguishable both ways."""
    if sigma_1 <= 0 or sigma_0 <= 0 or not 0 < delta < 1:
        raise FedrayError(f"need positive standard deviations (got {sigma_1}, {sigma_0}) and 0 < delta={delta} < 1")

    def excess(epsilon: float) -> float:
        worst = max(
            _hockey_stick(epsilon, mu_1, sigma_1, mu_0, sigma_0), _hockey_stick(epsilon, mu_0, sigma_0, mu_1, sigma_1)
        )
        return worst - delta

    if excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:  # the divergence falls as ε grows
        high *= 2
    return float(brentq(excess, 0.0, high, xtol=1e-9))


@dataclass
class GaussianEstimate:
    """Andrew et al.'s ε estimate, the fitted Gaussians, and a bootstrap percentile interval (NaN if not asked)."""

    epsilon: float
    interval: tuple[float, float]
    observed_mean: float
    observed_std: float
    unobserved_mean: float
    unobserved_std: float
    n_observed: int
    n_unobserved: int
    delta: float

    def as_dict(self) -> dict:
        return asdict(self)


def gaussian_epsilon_estimate(
    observed_cosines: np.ndarray,
    unobserved_cosines: np.ndarray,
    delta: float,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    rng: np.random.Generator | None = None,
    pooled_variance: bool = False,
) -> GaussianEstimate:
    r"""ε at ``delta`` of N(mean, std²) fitted to each set of canary cosines, with a ``confidence`` bootstrap interval.

    The interval resamples both sets with replacement ``n_bootstrap`` times
    (0 skips it); it describes the estimate's sampling spread, it is not a
    lower bound on the mechanism's ε.

    With separate variances (the paper's fit) the privacy loss is quadratic,
    so at small δ the estimate is very sensitive to the ratio of the fitted
    standard deviations, whose sampling noise is about :math:`1/\sqrt{n}`:
    with a few hundred canaries of each kind the interval is wide.
    ``pooled_variance=True`` assumes the Gaussian mechanism's equal variances
    and returns its ε for :math:`\mu = |\mu_1-\mu_0|/\sigma_{pooled}` (dp_accounting),
    far more stable; the reported standard deviations are then both the pooled one.
    """
    observed = np.asarray(observed_cosines, dtype=np.float64)
    unobserved = np.asarray(unobserved_cosines, dtype=np.float64)
    if len(observed) < 2 or len(unobserved) < 2:
        raise FedrayError(
            f"need at least 2 observed and 2 unobserved canaries, got {len(observed)} and {len(unobserved)}"
        )

    def spreads(obs: np.ndarray, unobs: np.ndarray) -> tuple[float, float]:
        if not pooled_variance:
            return float(obs.std(ddof=1)), float(unobs.std(ddof=1))
        squares = obs.var(ddof=1) * (len(obs) - 1) + unobs.var(ddof=1) * (len(unobs) - 1)
        pooled = np.sqrt(squares / (len(obs) + len(unobs) - 2))
        return float(pooled), float(pooled)

    def estimate(obs: np.ndarray, unobs: np.ndarray) -> float:
        sigma_1, sigma_0 = spreads(obs, unobs)
        if pooled_variance:
            gap = abs(obs.mean() - unobs.mean())
            return 0.0 if gap == 0 else float(dp_accounting.get_epsilon_gaussian(sigma_1 / gap, delta))
        return gaussian_pair_epsilon(obs.mean(), sigma_1, unobs.mean(), sigma_0, delta)

    interval = (float("nan"), float("nan"))
    if n_bootstrap > 0:
        rng = np.random.default_rng() if rng is None else rng
        draws = [
            estimate(rng.choice(observed, len(observed)), rng.choice(unobserved, len(unobserved)))
            for _ in range(n_bootstrap)
        ]
        tail = (1.0 - confidence) / 2
        interval = tuple(float(x) for x in np.quantile(draws, [tail, 1.0 - tail]))
    observed_std, unobserved_std = spreads(observed, unobserved)
    return GaussianEstimate(
        epsilon=estimate(observed, unobserved),
        interval=interval,
        observed_mean=float(observed.mean()),
        observed_std=observed_std,
        unobserved_mean=float(unobserved.mean()),
        unobserved_std=unobserved_std,
        n_observed=len(observed),
        n_unobserved=len(unobserved),
        delta=delta,
    )
