"""Pareto frontier on hand-made points: maximise utility, minimise epsilon (pure numpy/pandas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedray.sweep.pareto import mark_pareto, pareto_mask

INF, NAN = math.inf, math.nan

# (utility, epsilon, optimal?, why)
POINTS = [
    (0.80, 1.0, True, "best utility among finite epsilons"),
    (0.70, 0.5, True, "tie with the next point: identical points do not dominate each other"),
    (0.70, 0.5, True, "tie with the previous point"),
    (0.75, 2.0, False, "dominated by (0.80, 1.0): more useful and more private"),
    (0.90, INF, True, "non-private but strictly the most useful"),
    (0.80, INF, False, "non-private and no more useful than (0.80, 1.0)"),
    (NAN, 0.1, False, "no utility (failed trial): never optimal"),
    (0.60, 0.1, True, "most private valid point; the NaN point at the same epsilon does not dominate it"),
    (0.65, 0.5, False, "dominated by (0.70, 0.5): same epsilon, less useful"),
]


def test_pareto_mask_matches_hand_made_table():
    utility = np.array([p[0] for p in POINTS])
    epsilon = np.array([p[1] for p in POINTS])
    expected = [p[2] for p in POINTS]
    assert pareto_mask(utility, epsilon).tolist() == expected


def test_missing_epsilon_is_never_optimal_and_never_dominates():
    mask = pareto_mask(np.array([0.9, 0.5]), np.array([NAN, 1.0]))
    assert mask.tolist() == [False, True]


def test_non_private_ties_at_the_top_are_all_optimal():
    mask = pareto_mask(np.array([0.9, 0.9, 0.7]), np.array([INF, INF, 1.0]))
    assert mask.tolist() == [True, True, True]


def test_empty_and_mismatched_inputs():
    assert pareto_mask(np.array([]), np.array([])).tolist() == []
    with pytest.raises(ValueError, match="one length"):
        pareto_mask(np.array([0.5, 0.6]), np.array([1.0]))


def test_mark_pareto_overall_and_per_group():
    frame = pd.DataFrame({
        "backbone": ["cnn", "cnn", "cnn", "vit", "vit", None],
        "u": [0.8, 0.7, 0.6, 0.75, 0.9, 0.99],
        "eps": [1.0, 0.5, 2.0, 2.0, INF, 0.01],
    }, index=[10, 11, 12, 13, 14, 15])
    overall = mark_pareto(frame, utility="u", epsilon="eps")
    assert overall.dtype == bool and list(overall.index) == list(frame.index)
    assert overall.tolist() == [False, False, False, False, False, True]
    per_group = mark_pareto(frame, utility="u", epsilon="eps", group="backbone")
    # cnn: (0.6, 2.0) is dominated by (0.8, 1.0); vit: both optimal; a missing group is never optimal.
    assert per_group.tolist() == [True, True, False, True, True, False]


def test_mark_pareto_on_an_empty_frame():
    frame = pd.DataFrame({"u": pd.Series([], dtype=float), "epsilon_spent": pd.Series([], dtype=float)})
    assert mark_pareto(frame, utility="u").tolist() == []
