"""Membership-inference audit: ROC figures, the empirical epsilon bound, calibrated attacks, and attack power."""

import math

import dp_accounting
import numpy as np
import pytest
import torch
from torch import nn

from fedray.errors import FedrayError
from fedray.audit.membership import (
    calibrated_scores,
    evaluate_attack,
    loss_threshold_scores,
    per_example_losses,
)

DELTA = 1e-5


def _gaussian_audit(mu: float, n: int, seed: int):
    """Scores of the Gaussian mechanism with sensitivity 1 and sigma = 1/mu: members N(mu, 1), others N(0, 1)."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(mu, 1.0, n), rng.normal(0.0, 1.0, n)])
    return scores, np.r_[np.ones(n), np.zeros(n)]


def test_perfect_separation_is_capped_by_the_sample_size():
    n = 1000
    is_member = np.r_[np.ones(n), np.zeros(n)]
    report = evaluate_attack(is_member + 0.0, is_member, attack="oracle", delta=DELTA)
    assert report.auc == 1.0 and report.advantage == 1.0
    assert report.tpr_at_1pct_fpr == 1.0 and report.tpr_at_0_1pct_fpr == 1.0
    assert 0 < report.epsilon_lower_bound <= math.log(n / 3.7) + 0.01  # the documented cap
    assert report.epsilon_lower_bound_point == math.inf
    assert (report.n_members, report.n_nonmembers) == (n, n)


def test_random_scores_certify_nothing():
    rng = np.random.default_rng(1)
    is_member = np.r_[np.ones(2000), np.zeros(2000)]
    report = evaluate_attack(rng.random(4000), is_member, attack="coin", delta=DELTA)
    assert report.auc == pytest.approx(0.5, abs=0.03)
    assert report.epsilon_lower_bound < 0.2
    assert report.tpr_at_1pct_fpr < 0.05


def test_more_separation_gives_stronger_attacks():
    reports = [evaluate_attack(*_gaussian_audit(mu, 2000, seed=0), attack="g", delta=DELTA) for mu in (0.5, 1, 2, 3)]
    for weaker, stronger in zip(reports, reports[1:]):
        assert stronger.auc > weaker.auc
        assert stronger.advantage > weaker.advantage
        assert stronger.epsilon_lower_bound > weaker.epsilon_lower_bound


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
def test_lower_bound_never_exceeds_the_true_epsilon(mu):
    true_epsilon = dp_accounting.get_epsilon_gaussian(1.0 / mu, DELTA)
    for seed in range(8):
        report = evaluate_attack(*_gaussian_audit(mu, 2000, seed), attack="g", delta=DELTA)
        assert 0 < report.epsilon_lower_bound <= true_epsilon


def test_tpr_at_low_fpr_is_read_conservatively():
    # Non-members at 0..999, members at 999.5 and above except one at -1: the best TPR with FPR <= 1% is 999/1000.
    is_member = np.r_[np.ones(1000), np.zeros(1000)]
    scores = np.r_[np.arange(999) + 999.5, -1.0, np.arange(1000.0)]
    report = evaluate_attack(scores, is_member, attack="t", delta=DELTA)
    assert report.tpr_at_1pct_fpr == report.tpr_at_0_1pct_fpr == pytest.approx(0.999)


def test_per_example_losses_and_loss_threshold_scores():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]])
    losses = per_example_losses(probs, np.array([0, 0, 1]))
    np.testing.assert_allclose(losses, [-math.log(0.9), -math.log(0.2), -math.log(1e-12)])
    scores, is_member = loss_threshold_scores(losses[:1], losses[1:])
    np.testing.assert_allclose(scores, -losses)
    np.testing.assert_array_equal(is_member, [1, 0, 0])


def test_calibration_removes_per_record_difficulty():
    # Hard records have high loss everywhere; membership lowers the target's loss by 0.5.
    rng = np.random.default_rng(0)
    n, r = 400, 16
    difficulty = rng.exponential(2.0, size=n)
    is_member = rng.random(n) < 0.5
    reference = difficulty + rng.normal(0, 0.1, size=(r, n)).clip(-difficulty + 1e-3)
    target = np.maximum(difficulty - 0.5 * is_member + rng.normal(0, 0.1, size=n), 1e-6)
    raw = evaluate_attack(-target, is_member, attack="loss", delta=DELTA).auc
    for method in ("difficulty", "lira"):
        calibrated = evaluate_attack(calibrated_scores(target, reference, method=method), is_member,
                                     attack=method, delta=DELTA).auc
        assert calibrated > 0.9 > raw
    with pytest.raises(FedrayError):
        calibrated_scores(target, reference[:, :-1])


def test_loss_threshold_attack_has_power_on_a_memorising_model():
    torch.manual_seed(0)
    x = torch.randn(128, 16)
    y = torch.randint(0, 4, (128,))  # random labels: only memorisation fits them
    members = slice(0, 64)
    model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[members]), y[members]).backward()
        optimizer.step()
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1).numpy()
    losses = per_example_losses(probs, y.numpy())
    report = evaluate_attack(*loss_threshold_scores(losses[:64], losses[64:]), attack="loss", delta=DELTA)
    assert report.auc > 0.8
    assert report.epsilon_lower_bound > 0
