"""Held-out membership-inference bounds: honest thresholds, honest attack choice, the DP ceiling and the flags."""

import math

import numpy as np
import pytest

from fedray.errors import FedrayError
from fedray.audit.fair_attack import (
    advantage_interval,
    audit_flags,
    dp_advantage_ceiling,
    epsilon_lower_bound_heldout,
    select_attack_heldout,
    split_for_threshold,
)

DELTA = 1e-5


def _pool(n: int, shift: float, rng):
    """n members scoring N(shift, 1) and n non-members scoring N(0, 1)."""
    return np.r_[rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)], np.r_[np.ones(n), np.zeros(n)]


def test_split_is_a_random_disjoint_cover():
    choose, held = split_for_threshold(11, np.random.default_rng(0))
    assert len(choose) == 6 and len(held) == 5
    assert sorted(np.r_[choose, held].tolist()) == list(range(11))
    with pytest.raises(FedrayError):
        split_for_threshold(10, np.random.default_rng(0), choose_fraction=1.0)


def test_no_leakage_certifies_at_most_five_percent():
    # 1000 members and 1000 non-members from one distribution, 1000 repetitions.
    rng = np.random.default_rng(2026)
    repetitions, n = 1000, 1000
    is_member = np.r_[np.ones(n), np.zeros(n)]
    positive = 0
    for _ in range(repetitions):
        choose, held = split_for_threshold(2 * n, rng)
        bound = epsilon_lower_bound_heldout(rng.standard_normal(2 * n), is_member, choose, held, DELTA)
        positive += bound.epsilon_lower_bound > 0
    assert positive / repetitions <= 0.05


def test_leaky_scores_give_a_clearly_positive_bound():
    rng = np.random.default_rng(1)
    scores, is_member = _pool(1000, 3.0, rng)
    choose, held = split_for_threshold(len(scores), rng)
    bound = epsilon_lower_bound_heldout(scores, is_member, choose, held, DELTA, attack="loss")
    assert bound.epsilon_lower_bound > 1.5
    assert bound.n_members + bound.n_nonmembers == len(held)
    assert bound.auc > 0.95 and bound.advantage_interval[0] > 0.6
    assert bound.advantage == pytest.approx(
        bound.advantage_true_positives / bound.n_members - bound.advantage_false_positives / bound.n_nonmembers
    )
    assert bound.advantage >= bound.tpr - bound.fpr - 0.05  # the advantage threshold is chosen for it


def test_overlapping_parts_are_refused():
    scores, is_member = _pool(20, 1.0, np.random.default_rng(0))
    with pytest.raises(FedrayError):
        epsilon_lower_bound_heldout(scores, is_member, np.arange(25), np.arange(20, 40), DELTA)


def test_advantage_interval_covers_the_truth():
    rng = np.random.default_rng(4)
    tpr, fpr, n = 0.3, 0.1, 200
    covered = [
        low <= tpr - fpr <= high
        for low, high in (
            advantage_interval(rng.binomial(n, tpr), n, rng.binomial(n, fpr), n, 0.9) for _ in range(500)
        )
    ]
    assert np.mean(covered) >= 0.9
    assert advantage_interval(0, 50, 0, 50) == pytest.approx((-0.0839, 0.0839), abs=1e-4)


def test_ceiling_formula_and_its_limits():
    assert dp_advantage_ceiling(0.0, 0.0) == 0.0
    assert dp_advantage_ceiling(math.log(3), 0.0) == pytest.approx(0.5)
    assert dp_advantage_ceiling(1.0, 0.01) == pytest.approx((math.e - 1 + 0.02) / (math.e + 1))
    assert dp_advantage_ceiling(math.inf, 0.0) == 1.0
    # Brute force over the (ε, δ)-DP region FPR + e^ε FNR >= 1-δ, FNR + e^ε FPR >= 1-δ.
    epsilon, delta = 1.3, 0.02
    fpr, fnr = np.meshgrid(np.linspace(0, 1, 2001), np.linspace(0, 1, 2001))
    allowed = (fpr + math.exp(epsilon) * fnr >= 1 - delta) & (fnr + math.exp(epsilon) * fpr >= 1 - delta)
    assert (1 - fnr - fpr)[allowed].max() == pytest.approx(dp_advantage_ceiling(epsilon, delta), abs=1e-3)


def test_select_attack_names_the_choice_and_labels_the_maximum():
    rng = np.random.default_rng(9)
    n = 1000
    is_member = np.r_[np.ones(n), np.zeros(n)]
    attacks = {
        "random": rng.standard_normal(2 * n),
        "leaky": np.r_[rng.normal(2.0, 1.0, n), rng.normal(0.0, 1.0, n)],
    }
    choose, held = split_for_threshold(2 * n, rng)
    selection = select_attack_heldout(attacks, is_member, choose, held, DELTA)
    assert selection.strongest.attack == "leaky"
    assert [a.attack for a in selection.attacks] == ["random", "leaky"]
    best = selection.max_over_attacks
    assert best["k"] == 2 and "maximum over 2 attacks" in best["label"]
    assert 0 < best["epsilon_lower_bound_bonferroni"] <= best["epsilon_lower_bound"]
    assert (selection.n_choose, selection.n_eval) == (len(choose), len(held))


def _report(bound: float, advantage: float, interval: tuple[float, float], bonferroni: float = 0.0) -> dict:
    strongest = {"attack": "lira", "confidence": 0.95, "epsilon_lower_bound": bound,
                 "advantage": advantage, "advantage_interval": interval}
    return {"strongest": strongest, "max_over_attacks": {"k": 2, "epsilon_lower_bound_bonferroni": bonferroni}}


def test_flags():
    accountant, ceiling = 1.0, dp_advantage_ceiling(1.0, DELTA)  # about 0.462
    assert audit_flags(_report(0.5, 0.3, (0.2, 0.4)), accountant, DELTA) == []

    flags = audit_flags(_report(1.5, 0.3, (0.2, 0.4)), accountant, DELTA)
    assert len(flags) == 1 and flags[0].startswith("violation: attack 'lira' certifies epsilon >= 1.5")

    assert audit_flags(_report(0.5, 0.3, (0.2, 0.4), bonferroni=1.2), accountant, DELTA)[0].startswith(
        "violation: the best of 2 attacks"
    )

    above = audit_flags(_report(0.5, 0.7, (ceiling + 0.01, 0.8)), accountant, DELTA)
    assert len(above) == 1 and above[0].startswith("violation:") and "whole interval" in above[0]

    noisy = audit_flags(_report(0.5, ceiling + 0.02, (ceiling - 0.1, 0.6)), accountant, DELTA)
    assert len(noisy) == 1 and noisy[0].startswith("consistent with noise:")


def test_flags_read_a_selection_directly():
    rng = np.random.default_rng(11)
    scores, is_member = _pool(1000, 4.0, rng)
    choose, held = split_for_threshold(len(scores), rng)
    selection = select_attack_heldout({"loss": scores}, is_member, choose, held, DELTA)
    flags = audit_flags(selection, accountant_epsilon=0.5, delta=DELTA)
    assert any(f.startswith("violation: attack 'loss'") for f in flags)
    assert any("whole interval" in f for f in flags)
