"""A run that learned nothing says so in its last lines, with the likely causes (pure: no Ray)."""

from __future__ import annotations

import math

from conftest import run_summary

from fedray.__main__ import _learned_nothing_line
from fedray.metrics import learned_nothing


def test_a_majority_class_model_and_a_chance_level_model_are_named_and_a_learning_one_is_not():
    assert learned_nothing([[30, 0, 0], [28, 0, 0], [31, 0, 0]]) == "every test record is predicted as one class"
    chance = learned_nothing([[10, 10, 10], [10, 10, 10], [10, 11, 9]])
    assert chance is not None and "within noise of chance (0.333 for 3 classes)" in chance
    assert learned_nothing([[25, 3, 2], [2, 26, 2], [3, 1, 26]]) is None
    assert learned_nothing([]) is None


def test_the_warning_names_the_dp_knobs_under_dp_and_the_optimiser_without():
    one_class = [[30, 0], [30, 0]]
    private = _learned_nothing_line(run_summary(final_test_confusion_matrix=one_class, privacy={"epsilon": 1.0}))
    assert private.startswith("warning: the model learned nothing: every test record is predicted as one class")
    assert all(knob in private for knob in ("privacy.epsilon", "fl.rounds", "train.batch_size", "train.lr"))
    plain = _learned_nothing_line(run_summary(final_test_confusion_matrix=one_class, privacy={"epsilon": math.inf}))
    assert "train.lr" in plain and "privacy.epsilon" not in plain
    assert _learned_nothing_line(run_summary(final_test_confusion_matrix=[[9, 1], [1, 9]],
                                             privacy={"epsilon": 1.0})) is None
