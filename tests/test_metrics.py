"""classification_metrics on the small validation shards of many hospitals: the documented values, scikit-learn's
balanced accuracy, and none of scikit-learn's warnings about the cases the averaging handles on purpose."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fedray.metrics import classification_metrics


def _metrics_and_warnings(y_true, probs) -> tuple[dict, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = classification_metrics(np.asarray(y_true), np.asarray(probs, dtype=np.float64))
    return metrics, [str(w.message) for w in caught]


def test_a_shard_of_one_class_predicted_right_scores_one_without_a_warning():
    metrics, caught = _metrics_and_warnings([1, 1, 1], [[0.1, 0.8, 0.1]] * 3)
    assert caught == []
    assert metrics["accuracy"] == 1.0 and metrics["balanced_accuracy"] == 1.0
    assert math.isnan(metrics["auc"])  # one class present: AUC is undefined
    assert metrics["confusion_matrix"] == [[0, 0, 0], [0, 3, 0], [0, 0, 0]]


def test_predictions_of_a_class_the_shard_lacks_average_over_its_classes_without_a_warning():
    # y_true holds classes 0 and 1; class 2 is predicted once. Balanced accuracy averages the recalls of the
    # classes present in y_true: (1/2 + 1) / 2.
    probs = [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]
    metrics, caught = _metrics_and_warnings([0, 0, 1, 1], probs)
    assert caught == []
    assert metrics["balanced_accuracy"] == 0.75
    assert metrics["accuracy"] == 0.75
    assert metrics["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]


def test_balanced_accuracy_is_scikit_learn_s_on_any_predictions():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    for n, classes in ((3, 4), (20, 3), (200, 9), (50, 2)):
        y_true, probs = rng.integers(0, classes, n), rng.dirichlet(np.ones(classes), size=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's own warnings on these small random draws
            expected = balanced_accuracy_score(y_true, probs.argmax(axis=1))
        assert classification_metrics(y_true, probs)["balanced_accuracy"] == pytest.approx(expected)
