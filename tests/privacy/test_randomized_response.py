"""k-ary randomised response: the stated keep rate, uniform flips, and the ε split of Laplace input perturbation."""

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from fedray.errors import FedrayError
from fedray.privacy.randomized_response import keep_probability, randomize_labels, split_epsilon


@pytest.mark.parametrize(("epsilon", "k"), [(1.0, 2), (0.5, 5), (3.0, 7), (0.0, 3)])
def test_keep_and_flip_probabilities_have_likelihood_ratio_e_to_the_epsilon(epsilon, k):
    keep = keep_probability(epsilon, k)
    each_other = (1 - keep) / (k - 1)
    assert keep / each_other == pytest.approx(math.exp(epsilon))


@pytest.mark.parametrize(("epsilon", "k"), [(1.0, 2), (0.7, 5)])
def test_labels_are_kept_at_the_stated_rate(epsilon, k):
    n = 200_000
    labels = np.random.default_rng(0).integers(0, k, size=n)
    kept = int((randomize_labels(labels, k, epsilon, np.random.default_rng(1)) == labels).sum())
    p = keep_probability(epsilon, k)
    assert abs(kept - n * p) < 5 * math.sqrt(n * p * (1 - p))  # 5 binomial standard deviations


def test_flipped_labels_are_uniform_over_the_other_classes():
    k, n = 6, 120_000
    labels = np.full(n, 2)
    out = randomize_labels(labels, k, 0.3, np.random.default_rng(2))
    flipped = out[out != 2]
    counts = np.bincount(flipped, minlength=k)
    assert counts[2] == 0
    assert chisquare(np.delete(counts, 2)).pvalue > 1e-3


def test_infinite_epsilon_keeps_every_label_and_one_class_is_untouched():
    labels = np.random.default_rng(3).integers(0, 4, size=1000)
    assert np.array_equal(randomize_labels(labels, 4, math.inf, np.random.default_rng(4)), labels)
    assert np.array_equal(randomize_labels(np.zeros(10, dtype=int), 1, 0.1, np.random.default_rng(5)), np.zeros(10))


def test_the_number_of_draws_does_not_depend_on_the_labels():
    a, b = np.random.default_rng(6), np.random.default_rng(6)
    randomize_labels(np.zeros(50, dtype=int), 3, 1.0, a)
    randomize_labels(np.full(50, 2), 3, 1.0, b)
    assert a.integers(2**62) == b.integers(2**62)


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(FedrayError, match=r"\[0, 3\)"):
        randomize_labels(np.array([0, 3]), 3, 1.0, np.random.default_rng(0))
    with pytest.raises(FedrayError):
        keep_probability(-1.0, 3)


def test_split_epsilon_composes_to_the_total():
    features, label = split_epsilon(2.0, 0.25)
    assert (features, label) == (1.5, 0.5) and features + label == 2.0
    assert split_epsilon(math.inf, 0.1) == (math.inf, math.inf)
    for bad_share in (0.0, 1.0, -0.1):
        with pytest.raises(FedrayError, match="label_share"):
            split_epsilon(1.0, bad_share)
    with pytest.raises(FedrayError):
        split_epsilon(0.0, 0.5)
