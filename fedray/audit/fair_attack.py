r"""Held-out membership-inference bounds: choose on one part of the audit pool, certify on the other.

Two biases of scoring an attack on the records that tuned it, and their fix:

1. *Threshold chosen on the scored records.* Taking the best of about n
   thresholds of a 95% bound certifies ε > 0 far more often than 5% when
   nothing leaks (about 7% at n = 1000). Here :func:`split_for_threshold`
   splits the pool at random; the *choose* part picks the threshold, the
   *eval* part, which played no role in the choice, certifies it. Given the
   choose part the threshold is fixed, so the eval part's Clopper-Pearson
   bounds keep their nominal coverage.
2. *Best of k attacks.* :func:`select_attack_heldout` picks the attack on the
   choose part too and reports it, by name, on the eval part. Every attack's
   own figures are returned as well; their maximum is labelled as a maximum
   over k attacks, next to a Bonferroni version (each attack at confidence
   :math:`1-(1-c)/k`) that is valid at :math:`c`.

**Bound** (Kairouz et al. 2015, Thm 2.1; Jagielski et al. 2020; Nasr et al.
2021). A membership test of an :math:`(\varepsilon,\delta)`-DP mechanism obeys
:math:`\mathrm{FPR} + e^\varepsilon\mathrm{FNR} \ge 1-\delta` and
:math:`\mathrm{FNR} + e^\varepsilon\mathrm{FPR} \ge 1-\delta`, hence at the one
held-out threshold

.. math:: \varepsilon_{lb} = \max\Big(\log\frac{1-\delta-\overline{\mathrm{FNR}}}{\overline{\mathrm{FPR}}},\
          \log\frac{1-\delta-\overline{\mathrm{FPR}}}{\overline{\mathrm{FNR}}},\ 0\Big),

with :math:`\overline{\cdot}` one-sided Clopper-Pearson upper bounds at level
:math:`1-(1-c)/2` each (Bonferroni: both hold with probability :math:`\ge c`).
Without leakage (FPR = TPR) the two upper bounds sum to at least 1 whenever
they hold, so :math:`\varepsilon_{lb} > 0` has probability at most :math:`1-c`.

**Advantage** (Yeom et al. 2018): TPR - FPR on the eval part at its own
threshold (the best TPR - FPR on the choose part), with a
Clopper-Pearson interval for each rate at :math:`1-(1-c)/2` combined into
:math:`[\underline{\mathrm{TPR}}-\overline{\mathrm{FPR}},\ \overline{\mathrm{TPR}}-\underline{\mathrm{FPR}}]`:
coverage :math:`\ge c` guaranteed (a flag claims a violation, so no
approximate interval). Adding the two DP inequalities gives
:math:`\mathrm{FPR}+\mathrm{FNR} \ge 2(1-\delta)/(1+e^\varepsilon)`, so the
advantage is at most :math:`(e^\varepsilon - 1 + 2\delta)/(e^\varepsilon + 1)`.

**Assumption.** The rates treat each eval record's outcome as an independent
draw. That is exact when scores do not depend on membership (so the
no-leakage guarantee above is exact), and when memberships are independent
coin flips per trial; for fixed member and non-member pools scored against
one model, the records share that model and the figure is an honest estimate
rather than a proof. The rigorous single-run certificate is
:func:`fedray.audit.canary_bounds.one_run_audit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import rankdata

from fedray.errors import FedrayError
from fedray.audit.membership import clopper_pearson_upper, epsilon_from_error_rates


def split_for_threshold(
    n: int, rng: np.random.Generator, choose_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint, sorted (choose_idx, eval_idx) over ``range(n)``; the choose part has round(choose_fraction * n).

    The split ignores membership, so each part is a random sample of the pool.
    """
    if not 0 < choose_fraction < 1 or n < 2:
        raise FedrayError(f"need 0 < choose_fraction={choose_fraction} < 1 and at least 2 records, got n={n}")
    order = rng.permutation(n)
    cut = min(max(1, round(choose_fraction * n)), n - 1)
    return np.sort(order[:cut]), np.sort(order[cut:])


def dp_advantage_ceiling(epsilon: float, delta: float) -> float:
    """The largest TPR - FPR an (ε, δ)-DP mechanism allows: (e^ε - 1 + 2δ)/(e^ε + 1)."""
    if np.isinf(epsilon):
        return 1.0
    return float(min(1.0, (np.expm1(epsilon) + 2 * delta) / (np.exp(epsilon) + 1)))


@lru_cache(maxsize=512)
def _clopper_pearson_upper_table(n: int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bounds at ``level`` for every count 0..n, cached for all thresholds and attacks."""
    return clopper_pearson_upper(np.arange(n + 1), n, level)


def _clopper_pearson_upper(count, n: int, level: float):
    """One-sided Clopper-Pearson upper bound at ``level`` on a rate with ``count`` of ``n``."""
    return _clopper_pearson_upper_table(int(n), float(level))[np.asarray(count, dtype=int)]


def _clopper_pearson_lower(count, n: int, level: float):
    """One-sided Clopper-Pearson lower bound at ``level``: the upper bound on the complementary rate, mirrored."""
    return 1.0 - _clopper_pearson_upper(n - np.asarray(count), n, level)


def _epsilon_bound(false_pos, n_nonmembers: int, false_neg, n_members: int, delta: float, confidence: float):
    """The module's ε_lb for error counts (arrays allowed), 0 where no bound is implied."""
    level = 1.0 - (1.0 - confidence) / 2.0
    fpr_ub = _clopper_pearson_upper(false_pos, n_nonmembers, level)
    fnr_ub = _clopper_pearson_upper(false_neg, n_members, level)
    bound = epsilon_from_error_rates(fpr_ub, fnr_ub, delta)
    return np.maximum(np.nan_to_num(bound, nan=0.0, neginf=0.0), 0.0)


def _as_parts(scores, is_member) -> tuple[np.ndarray, np.ndarray, int, int]:
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member).astype(bool)
    n_members, n_nonmembers = int(is_member.sum()), int((~is_member).sum())
    if n_members == 0 or n_nonmembers == 0:
        raise FedrayError(
            f"a part of the audit pool has {n_members} members and {n_nonmembers} non-members: use a larger pool"
        )
    return scores, is_member, n_members, n_nonmembers


def _choose_thresholds(scores, is_member, delta: float, confidence: float) -> tuple[float, float, float, float]:
    """(ε threshold, its ε_lb, advantage threshold, its advantage) on these records.

    The ε threshold has the best ε_lb, ties going to the better advantage; the advantage threshold the best TPR - FPR.

    "Member" means score >= threshold; the candidates are the distinct scores.
    """
    scores, is_member, n_members, n_nonmembers = _as_parts(scores, is_member)
    order = np.argsort(-scores, kind="stable")
    ranked, ranked_member = scores[order], is_member[order]
    true_pos, false_pos = np.cumsum(ranked_member), np.cumsum(~ranked_member)
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    thresholds, true_pos, false_pos = ranked[last_of_tie], true_pos[last_of_tie], false_pos[last_of_tie]
    bounds = _epsilon_bound(false_pos, n_nonmembers, n_members - true_pos, n_members, delta, confidence)
    advantages = true_pos / n_members - false_pos / n_nonmembers
    best_bound, best_advantage = np.lexsort((advantages, bounds))[-1], int(np.argmax(advantages))
    return (float(thresholds[best_bound]), float(bounds[best_bound]),
            float(thresholds[best_advantage]), float(advantages[best_advantage]))


def advantage_interval(
    tpr_count: int, n_members: int, fpr_count: int, n_nonmembers: int, confidence: float = 0.95
) -> tuple[float, float]:
    """A ``confidence`` interval for TPR - FPR: Clopper-Pearson for each rate at 1-(1-c)/2, combined (coverage >= c).

    Each of the four one-sided ends holds with probability 1-(1-c)/4, so all do with probability >= c.
    """
    level = 1.0 - (1.0 - confidence) / 4.0
    low = _clopper_pearson_lower(tpr_count, n_members, level) - _clopper_pearson_upper(fpr_count, n_nonmembers, level)
    high = _clopper_pearson_upper(tpr_count, n_members, level) - _clopper_pearson_lower(fpr_count, n_nonmembers, level)
    return float(low), float(high)


@dataclass
class HeldoutBound:
    """One attack: thresholds and criteria from the choose part, counts and bounds from the eval part.

    ``threshold`` (chosen for ε_lb) gives ``true_positives``, ``false_positives``,
    ``tpr``, ``fpr`` and ``epsilon_lower_bound``; ``advantage_threshold`` (chosen
    for TPR - FPR) gives the ``advantage_*`` counts, ``advantage`` and its
    interval. AUC uses no threshold.
    """

    attack: str
    threshold: float
    advantage_threshold: float
    epsilon_lower_bound: float
    confidence: float
    delta: float
    true_positives: int
    n_members: int
    false_positives: int
    n_nonmembers: int
    tpr: float
    fpr: float
    advantage_true_positives: int
    advantage_false_positives: int
    advantage: float
    advantage_interval: tuple[float, float]
    auc: float
    choose_epsilon_lower_bound: float
    choose_advantage: float

    def as_dict(self) -> dict:
        return asdict(self)


def epsilon_lower_bound_heldout(
    scores: np.ndarray,
    is_member: np.ndarray,
    choose_idx: np.ndarray,
    eval_idx: np.ndarray,
    delta: float,
    confidence: float = 0.95,
    *,
    attack: str = "attack",
) -> HeldoutBound:
    """Thresholds chosen on ``choose_idx`` (best ε_lb, best advantage); ε_lb, advantage, interval and AUC on ``eval_idx``.

    Scores are "higher = member". ``choose_idx`` and ``eval_idx`` must be disjoint.
    The ε bound and the advantage interval each hold at ``confidence`` on their own.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member).astype(bool)
    choose_idx, eval_idx = np.asarray(choose_idx), np.asarray(eval_idx)
    if np.intersect1d(choose_idx, eval_idx).size:
        raise FedrayError("the choose and eval parts share records: pass disjoint parts from split_for_threshold")
    threshold, choose_bound, advantage_threshold, choose_advantage = _choose_thresholds(
        scores[choose_idx], is_member[choose_idx], delta, confidence
    )
    eval_scores, eval_member, n_members, n_nonmembers = _as_parts(scores[eval_idx], is_member[eval_idx])

    def counts(at: float) -> tuple[int, int]:
        guessed = eval_scores >= at
        return int(np.sum(guessed & eval_member)), int(np.sum(guessed & ~eval_member))

    true_pos, false_pos = counts(threshold)
    adv_true_pos, adv_false_pos = counts(advantage_threshold)
    # AUC = Mann-Whitney U / (n1 n0), ties counting one half.
    auc = rankdata(eval_scores)[eval_member].sum() - n_members * (n_members + 1) / 2
    return HeldoutBound(
        attack=attack,
        threshold=threshold,
        advantage_threshold=advantage_threshold,
        epsilon_lower_bound=float(
            _epsilon_bound(false_pos, n_nonmembers, n_members - true_pos, n_members, delta, confidence)
        ),
        confidence=confidence,
        delta=delta,
        true_positives=true_pos,
        n_members=n_members,
        false_positives=false_pos,
        n_nonmembers=n_nonmembers,
        tpr=true_pos / n_members,
        fpr=false_pos / n_nonmembers,
        advantage_true_positives=adv_true_pos,
        advantage_false_positives=adv_false_pos,
        advantage=adv_true_pos / n_members - adv_false_pos / n_nonmembers,
        advantage_interval=advantage_interval(adv_true_pos, n_members, adv_false_pos, n_nonmembers, confidence),
        auc=float(auc) / (n_members * n_nonmembers),
        choose_epsilon_lower_bound=choose_bound,
        choose_advantage=choose_advantage,
    )


@dataclass
class HeldoutSelection:
    """``strongest``: the attack chosen on the choose part, its figures from the eval part; every attack's figures;
    their maximum."""

    strongest: HeldoutBound
    attacks: list[HeldoutBound]
    max_over_attacks: dict
    n_choose: int
    n_eval: int

    def as_dict(self) -> dict:
        return asdict(self)


def select_attack_heldout(
    attack_scores: Mapping[str, np.ndarray],
    is_member: np.ndarray,
    choose_idx: np.ndarray,
    eval_idx: np.ndarray,
    delta: float,
    confidence: float = 0.95,
) -> HeldoutSelection:
    """Pick the attack with the best choose-part ε_lb (ties: advantage, then given order); report it on the eval part.

    ``max_over_attacks`` holds the largest eval-part figures over the k attacks,
    labelled as such: its ``epsilon_lower_bound`` is not a ``confidence`` bound;
    ``epsilon_lower_bound_bonferroni`` (each attack at 1-(1-c)/k) is.
    """
    if not attack_scores:
        raise FedrayError("no attack scores to choose from: pass at least one attack")
    reports = [
        epsilon_lower_bound_heldout(s, is_member, choose_idx, eval_idx, delta, confidence, attack=name)
        for name, s in attack_scores.items()
    ]
    strongest = max(reports, key=lambda r: (r.choose_epsilon_lower_bound, r.choose_advantage))
    k = len(reports)
    simultaneous = 1.0 - (1.0 - confidence) / k
    bonferroni = max(
        epsilon_lower_bound_heldout(s, is_member, choose_idx, eval_idx, delta, simultaneous).epsilon_lower_bound
        for s in attack_scores.values()
    )
    best_on_eval = max(reports, key=lambda r: r.epsilon_lower_bound)
    max_over_attacks = {
        "label": f"maximum over {k} attacks on the eval part",
        "k": k,
        "attack": best_on_eval.attack,
        "epsilon_lower_bound": best_on_eval.epsilon_lower_bound,
        "epsilon_lower_bound_bonferroni": bonferroni,
        "advantage": max(r.advantage for r in reports),
        "auc": max(r.auc for r in reports),
    }
    return HeldoutSelection(strongest, reports, max_over_attacks, n_choose=len(choose_idx), n_eval=len(eval_idx))


def audit_flags(report: HeldoutSelection | Mapping, accountant_epsilon: float, delta: float) -> list[str]:
    """Messages where the audit contradicts the accountant's (ε, δ); empty when it does not.

    Reads ``report["strongest"]`` and ``report["max_over_attacks"]["epsilon_lower_bound_bonferroni"]``
    (each canary audit flags its own bound: :func:`fedray.audit.canaries.one_run_report`).
    "violation: ..." marks a bound above ε or an advantage interval entirely
    above the DP ceiling; "consistent with noise: ..." marks a point advantage
    above the ceiling whose interval still contains it.
    """
    report = report.as_dict() if isinstance(report, HeldoutSelection) else report
    strongest = report["strongest"]
    level = f"{strongest['confidence']:.0%}"
    flags = []
    if strongest["epsilon_lower_bound"] > accountant_epsilon:
        flags.append(
            f"violation: attack {strongest['attack']!r} certifies epsilon >= {strongest['epsilon_lower_bound']:.3g} "
            f"at {level} (held-out threshold), above the accountant's epsilon = {accountant_epsilon:.3g}"
        )
    best = report["max_over_attacks"]
    if best["epsilon_lower_bound_bonferroni"] > accountant_epsilon:
        flags.append(
            f"violation: the best of {best['k']} attacks certifies epsilon >= "
            f"{best['epsilon_lower_bound_bonferroni']:.3g} at {level} (Bonferroni over attacks), "
            f"above the accountant's epsilon = {accountant_epsilon:.3g}"
        )
    ceiling = dp_advantage_ceiling(accountant_epsilon, delta)
    low, high = strongest["advantage_interval"]
    where = (
        f"attack {strongest['attack']!r} advantage {strongest['advantage']:.3g} "
        f"({level} interval [{low:.3g}, {high:.3g}]) "
        f"vs the ceiling {ceiling:.3g} of ({accountant_epsilon:.3g}, {delta:.3g})-DP"
    )
    if low > ceiling:
        flags.append(f"violation: {where}: the whole interval is above the ceiling")
    elif strongest["advantage"] > ceiling:
        flags.append(f"consistent with noise: {where}: the point is above the ceiling, the interval contains it")
    return flags
