"""The step-level observer: its score is the subsampled Gaussian's likelihood ratio, it reads each step in canary
units, the driver places every hospital's report at its canaries, and its sample-aware ε is exactly Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from fedray.audit.canaries import dirac_canaries
from fedray.audit.fdp_bounds import gdp_epsilon
from fedray.audit.gradient_canaries import GradientCanaries
from fedray.audit.step_view import StepScores, StepStatistics, published_sample_epsilon, step_log_likelihood_ratio
from fedray.privacy.opacus_wiring import make_dp_compatible, private_step, wrap_private
from fedray.privacy.randomness import NoiseSource, hospital


def test_step_score_is_the_log_likelihood_ratio_of_the_sampled_gaussian():
    x, q, sigma = np.linspace(-3, 4, 29), 0.2, 1.3
    mixture = (1 - q) * norm.pdf(x, 0, sigma) + q * norm.pdf(x, 1, sigma)
    assert np.allclose(step_log_likelihood_ratio(x, q, sigma), np.log(mixture / norm.pdf(x, 0, sigma)))
    assert np.isfinite(step_log_likelihood_ratio(np.array([1e4]), q, 0.1)).all()  # no overflow far out
    assert step_log_likelihood_ratio(x, q, 0.0) is x  # without noise: the coordinate itself


class _Trainer:
    """What an attachment reads of a hospital's trainer."""

    def __init__(self, model, record_rate, noise_multiplier):
        self.full_model, self.record_rate, self.noise_multiplier = model, record_rate, noise_multiplier


@pytest.mark.parametrize("sigma, mode", [(0.0, None), (2.0, None), (2.0, "ghost"), (2.0, "bookkeeping")])
def test_each_dealt_canary_is_read_in_canary_units_after_the_noise(sigma, mode):
    torch.manual_seed(0)
    model = make_dp_compatible(nn.Sequential(nn.Linear(6, 3)))
    dealt = dirac_canaries([(n, p.numel()) for n, p in model.named_parameters()], 8, 0.5, np.random.default_rng(1))
    included = np.array([True, False] * 4)
    hook = GradientCanaries(dealt, included, observe_steps=True).attach(
        _Trainer(model, 1.0, sigma), NoiseSource.reproducible(0, hospital(0)))
    hook.start_round(0)
    parts = wrap_private(model, torch.optim.SGD(model.parameters(), lr=0.0), noise_multiplier=sigma,
                         max_grad_norm=0.5, sample_rate=0.5, expected_batch_size=4,
                         generator=torch.Generator().manual_seed(3), grad_sample_mode=mode)
    x = torch.randn(4, 6)
    private_step(parts, x, torch.tensor([0, 1, 2, 0]), nn.CrossEntropyLoss(), hooks=[hook])
    params = dict(model.named_parameters())
    coordinate = np.array([params[n].grad.reshape(-1)[i].item() for n, i in zip(dealt.names, dealt.flat_index)])
    read = dealt.signs * coordinate * 4 / 0.5  # one record weighs 1/(qn) = 1/4; a canary is 0.5 (= C) there
    report = hook.round_report()[1]
    assert np.allclose(report["sampled"], read)  # every canary sampled (q = 1): the read-out itself
    assert np.allclose(report["blind"], step_log_likelihood_ratio(read, 1.0, sigma) if sigma else read)
    assert report["mu_squared"].tolist() == [np.inf if sigma == 0 else sigma ** -2] * 8
    if sigma == 0:  # the records' clipped gradients plus 1 where a canary was inserted
        records = read - included
        assert np.all(np.abs(records) <= 4 * 1.0 + 1e-6)  # four records, each clipped to C, in units of C
    hook.start_round(1)
    assert not hook.round_report()[1]["sampled"].any()  # each round reports its own steps


def test_the_driver_places_each_hospitals_report_at_its_canaries_and_checkpoints_them():
    scores = StepScores(np.array([0, 1, 0, 1, 2]))
    scores.observe_reports({1: {"gradient_step": {"blind": [1.0, 2.0], "sampled": [3.0, 4.0],
                                                  "mu_squared": [0.5, 0.25]}}})
    scores.observe_reports({1: {"gradient_step": {"blind": [1.0, 1.0], "sampled": [0.0, 0.0],
                                                  "mu_squared": [0.5, 0.0]}},
                            2: {"gradient_step": {"blind": [7.0], "sampled": [7.0], "mu_squared": [1.0]}}})
    report = scores.report(None, None)
    assert report["blind"].tolist() == [0, 2, 0, 3, 7] and report["mu_squared"].tolist() == [0, 1, 0, 0.25, 1]
    again = StepScores(np.array([0, 1, 0, 1, 2]))
    again.load_state_dict(scores.state_dict())
    assert all(np.array_equal(again.report(None, None)[k], v) for k, v in report.items())


def test_the_sample_known_epsilon_is_the_worst_canarys_gaussian_composition():
    # k sampled steps at noise σ compose to sqrt(k)/σ-GDP: 9 steps at σ = 2 is 1.5-GDP.
    mu_squared = np.array([9 / 4, 1.0, 0.0])
    assert published_sample_epsilon(mu_squared, 1e-5) == pytest.approx(gdp_epsilon(1.5, 1e-5))
    assert published_sample_epsilon(np.array([np.inf, 1.0]), 1e-5) == np.inf  # a step without noise
    assert published_sample_epsilon(mu_squared, 0.0) == np.inf  # no Gaussian curve is pure DP
    assert published_sample_epsilon(np.zeros(3), 1e-5) == 0.0  # never sampled: nothing published about it


def test_a_step_statistic_sums_the_round_and_counts_only_sampled_steps():
    steps = StepStatistics(3, sample_rate=0.25, noise_multiplier=2.0)
    x = np.array([1.0, -0.5, 0.2])
    steps.observe(x, np.array([True, False, True]))
    steps.observe(x, np.array([True, True, False]))
    report = steps.report()
    assert np.allclose(report["blind"], 2 * step_log_likelihood_ratio(x, 0.25, 2.0))
    assert np.allclose(report["sampled"], [2.0, -0.5, 0.2]) and np.allclose(report["mu_squared"], [0.5, 0.25, 0.25])
