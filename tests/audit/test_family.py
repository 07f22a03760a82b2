"""The sweep's audits as one family: a trial's Bonferroni p-value, and Holm's step-down on a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.audit.family import holm_rejections, trial_p_value


def test_holm_on_a_hand_worked_example():
    """Sorted: 0.001 < 0.05/5; 0.008 < 0.05/4; 0.012 < 0.05/3 = 0.0167; 0.03 >= 0.05/2 stops: 0.04 is kept too,
    although it is below 0.05/1 (step-down: nothing after the first acceptance is rejected)."""
    p_values = [0.03, 0.001, 0.04, 0.012, 0.008]
    assert holm_rejections(p_values, 0.05).tolist() == [False, True, False, True, True]


def test_holm_rejects_everything_below_its_threshold_and_nothing_untested():
    assert holm_rejections([0.001, 0.002, np.nan], 0.05).tolist() == [True, True, False]  # n = 2, not 3
    assert holm_rejections([], 0.05).tolist() == []
    assert holm_rejections([np.nan], 0.05).tolist() == [False]


def test_one_trial_is_rejected_exactly_when_it_is_flagged():
    """A single p-value meets α itself, strictly, like the per-trial flag (a bound above ε)."""
    assert holm_rejections([0.0499], 0.05).tolist() == [True]
    assert holm_rejections([0.05], 0.05).tolist() == [False]


def test_trial_p_value_is_bonferroni_over_its_canary_audits():
    assert trial_p_value([0.3, 0.01]) == pytest.approx(0.02)
    assert trial_p_value([0.6, 0.7]) == 1.0
    assert trial_p_value([0.04]) == 0.04
    assert trial_p_value([0.01, None]) is None and trial_p_value([]) is None
