r"""The one-run canary audit under f-DP: a lower bound on the run's Gaussian trade-off curve, and its ε.

Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential Privacy in One Run"
(ICML 2025, arXiv:2410.22235). The game is Steinke et al.'s
(:mod:`fedray.audit.canary_bounds`): each of :math:`m` canaries is included
independently with probability ½ (:math:`S_i \in \{\pm1\}`); from the output
alone the auditor guesses :math:`T_i \in \{+1, -1, 0\}` (0 abstains), makes
:math:`r` non-zero guesses and gets :math:`W` of them right. A guess is right
when it names the canary's bit, "in" or "out" alike.

**Hypothesis.** :math:`H_\mu`: the run is :math:`\mu`-GDP with respect to each
canary (Dong, Roth & Su 2022), i.e. :math:`G_\mu`-DP with the Gaussian trade-off
curve :math:`G_\mu(\alpha) = \Phi(\Phi^{-1}(1-\alpha) - \mu)`. Equivalently: an
event of probability :math:`x` with a canary's bit one way has probability at
least :math:`\bar f^{-1}(x) = \Phi(\Phi^{-1}(x) - \mu)` with the bit flipped
(the curve is symmetric, so either way).

**The test** (the paper's recursion for reconstruction with abstentions,
``audit_rh_with_cap``, Algorithm 3, with two possible answers per canary).
Suppose :math:`\Pr[W \ge v] \ge \tau`. Draw a canary :math:`J` uniformly and, for
:math:`i = v, v-1, \dots, 0`, let :math:`c_i` (:math:`w_i`) be the probability that
:math:`J` was guessed rightly (wrongly) and :math:`W \ge i`. The recursion starts
from :math:`c_v = \tau v/m`, :math:`w_v = \tau (r-v)/m`. Flipping :math:`J`'s bit
turns a right guess into a wrong one and lowers :math:`W` by one, so
:math:`H_\mu` forces :math:`w_i \ge \max(w_{i+1}, \bar f^{-1}(c_{i+1}))`; the
runs with :math:`W = i` hold right and wrong guesses in the ratio
:math:`i : (r-i)`, so :math:`c_i = c_{i+1} + \frac{i}{r-i}(w_i - w_{i+1})`
(capped at 1, which only weakens the test). Every guess is right or wrong, so
:math:`c_0 + w_0 = r/m`; the paper proves that when the least :math:`c_0 + w_0`
the recursion allows exceeds :math:`r/m`, :math:`\Pr[W \ge v] < \tau` under
:math:`H_\mu`. Observing :math:`W = v` then rejects :math:`H_\mu` at
significance :math:`\tau = 1 - c` (confidence :math:`c`).

**The bound.** :math:`\bar f^{-1}` falls as :math:`\mu` grows, and with it the
recursion's total, so the rejected :math:`\mu` form an interval
:math:`[0, \mu_{lb})`: :func:`fdp_mu_lower_bound` finds its end (Brent's method
on the recursion's excess), 0 when even :math:`\mu = 0` (no leakage) stands.
:func:`fdp_epsilon_lower_bound` reports :math:`\varepsilon_{lb}`, the ε of
:math:`\mu_{lb}`-GDP at the run's δ, the root of the exact conversion
:math:`\delta = \Phi(-\varepsilon/\mu + \mu/2) - e^\varepsilon \Phi(-\varepsilon/\mu - \mu/2)`
(Dong et al., Corollary 2.13; :func:`dp_accounting.get_epsilon_gaussian` with
:math:`\sigma = 1/\mu`). That ε grows with :math:`\mu`, so if the run is
:math:`\mu^*`-GDP, :math:`\varepsilon_{lb}` exceeds :math:`\mu^*`'s ε with
probability at most :math:`1 - c`.

**Assumptions.** (1) The guesses are a function of the output only (and of
the canaries' public designs), never of which canaries were included.
(2) The canaries are included independently with probability ½. (3) The
family is Gaussian: the bound is on the :math:`\mu` of the tightest Gaussian
curve the run satisfies, and :math:`\varepsilon_{lb}` is that curve's ε at δ.
A run whose trade-off curve is not Gaussian (Poisson-subsampled DP-SGD over
few steps; many steps approach one by Dong et al.'s central limit theorem)
may be :math:`(\varepsilon, \delta)`-DP at an ε below :math:`\varepsilon_{lb}`: an
f-DP bound above the accountant's ε refutes a Gaussian curve, not the
accountant's (ε, δ), so only Steinke et al.'s bound raises a violation. Under
pure DP (δ = 0) no Gaussian curve has a finite ε (:func:`gdp_epsilon` is inf):
a run's report then gives :math:`\mu_{lb}` alone. Against Steinke et al.'s bound it trades that assumption for
tightness: there the :math:`2m\delta` term and the randomised-response tail
cap what many canaries can show (m = r = v = 1000, δ = 1e-5, 95 %: 5.78;
here 12.33).

**Guess counts.** As in :func:`fedray.audit.canary_bounds.one_run_audit`, and
so comparable with it: :func:`fdp_one_run_audit` scores the same fixed grid
of :math:`(k_+, k_-)` pairs (:func:`~fedray.audit.canary_bounds.guess_grid`,
declared before the scores are seen), tests each at significance
:math:`(1-c)/G` and reports the largest bound; since each point's rejected
:math:`\mu` form an interval, the union bound keeps all of them below the
run's :math:`\mu^*` with probability :math:`\ge c`. (The reference
implementation, jax_privacy's ``CanaryScoreAuditor.epsilon_one_run_fdp``,
takes a Bonferroni correction over every threshold of "in" guesses instead,
and searches in ε through ``dp_accounting.get_sigma_gaussian``: the same root.)
:func:`fdp_ceiling` is what every guess right would certify.
"""

from __future__ import annotations

from dataclasses import dataclass

import dp_accounting
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

from fedray.audit.canary_bounds import OneRunAudit, grid_ceiling, grid_counts, per_point_confidence
from fedray.errors import FedrayError

MU_TOLERANCE = 1e-12  # absolute, on μ: far below what the conversion to ε or a report can show


def gaussian_least_mass(mass: float, mu: float) -> float:
    r""":math:`\bar f^{-1}` of :math:`G_\mu`: the least probability the neighbouring run gives an event of ``mass``."""
    return float(ndtr(ndtri(mass) - mu))


def gdp_excess(m: int, guesses: int, correct: int, mu: float, significance: float) -> float:
    r""":math:`c_0 + w_0 - r/m` of the recursion started at :math:`\Pr[W \ge v] = ` ``significance`` (module
    docstring): positive exactly when ``correct`` of ``guesses`` right rejects :math:`\mu`-GDP."""
    right = significance * correct / m
    wrong = significance * (guesses - correct) / m
    for i in range(correct - 1, -1, -1):
        least_wrong = max(wrong, gaussian_least_mass(right, mu))
        if least_wrong == wrong:  # a fixed point: no later step changes either mass
            break
        right = min(right + i / (guesses - i) * (least_wrong - wrong), 1.0)
        wrong = least_wrong
    return right + wrong - guesses / m


def fdp_mu_lower_bound(m: int, guesses: int, correct: int, confidence: float = 0.95) -> float:
    """Largest μ whose μ-GDP ``correct`` right of ``guesses`` over ``m`` canaries reject at ``confidence``; 0 if none.

    >>> round(fdp_mu_lower_bound(1000, 100, 100), 4)
    1.2255
    """
    m, guesses, correct = int(m), int(guesses), int(correct)
    if not 0 <= correct <= guesses <= m:
        raise FedrayError(f"need 0 <= correct <= guesses <= m, got correct={correct}, guesses={guesses}, m={m}")
    if not 0 < confidence < 1:
        raise FedrayError(f"confidence={confidence} must lie in (0, 1)")

    def excess(mu: float) -> float:
        return gdp_excess(m, guesses, correct, mu, 1.0 - confidence)

    if excess(0.0) <= 0:
        return 0.0
    low, high = 0.0, 1.0
    while excess(high) > 0:  # the excess falls as μ grows, and is negative for μ large enough
        low, high = high, 2 * high
    return float(brentq(excess, low, high, xtol=MU_TOLERANCE))


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε of μ-GDP at ``delta`` (the exact conversion, module docstring); 0 for μ = 0, inf for μ > 0 at δ = 0."""
    if not 0 <= delta <= 1:
        raise FedrayError(f"delta={delta} must lie in [0, 1]")
    return 0.0 if mu == 0 else float(dp_accounting.get_epsilon_gaussian(1.0 / mu, delta))


def fdp_epsilon_lower_bound(m: int, guesses: int, correct: int, delta: float, confidence: float = 0.95) -> float:
    """ε at ``delta`` of the largest μ-GDP that ``correct`` right of ``guesses`` reject at ``confidence``.

    >>> round(fdp_epsilon_lower_bound(1000, 100, 100, 1e-5), 3)
    5.549
    """
    return gdp_epsilon(fdp_mu_lower_bound(m, guesses, correct, confidence), delta)


@dataclass
class FdpAudit(OneRunAudit):
    """The f-DP bounds (valid at ``confidence`` over the whole grid), ε and the μ it comes from, and the grid point
    that attained them."""

    mu_lower_bound: float


def fdp_one_run_audit(scores, included, *, delta: float, confidence: float = 0.95,
                      grid: list[tuple[int, int]] | None = None) -> FdpAudit:
    """The f-DP bound from canary ``scores`` (higher = "included"), Bonferroni over ``grid`` (default
    :func:`~fedray.audit.canary_bounds.guess_grid`, fixed before the scores are seen).

    ``epsilon_lower_bound`` is inf under δ = 0 when μ > 0 is certified (no Gaussian curve is pure DP).
    """
    counts = grid_counts(scores, included, grid)
    m, per_point = len(scores), per_point_confidence(confidence, len(counts))
    best_mu, best_point = 0.0, counts[0]  # nothing certified: the first point, as one_run_audit reports it
    for k_plus, k_minus, correct in counts:
        # A point that cannot reject the best μ so far cannot raise the bound: skip its search.
        if gdp_excess(m, k_plus + k_minus, correct, best_mu, 1.0 - per_point) > 0:
            best_mu = fdp_mu_lower_bound(m, k_plus + k_minus, correct, per_point)
            best_point = (k_plus, k_minus, correct)
    k_plus, k_minus, correct = best_point
    return FdpAudit(gdp_epsilon(best_mu, delta), k_plus, k_minus, k_plus + k_minus, correct, m, len(counts),
                    confidence, delta, mu_lower_bound=best_mu)


def fdp_ceiling(m: int, delta: float, confidence: float = 0.95, grid: list[tuple[int, int]] | None = None) -> float:
    """The largest bound :func:`fdp_one_run_audit` can report with ``m`` canaries: every guess right.

    >>> round(fdp_ceiling(1000, 1e-5, grid=[(500, 500)]), 2)  # one grid point: no Bonferroni
    12.33
    """
    return grid_ceiling(fdp_epsilon_lower_bound, m, delta, confidence, grid)
