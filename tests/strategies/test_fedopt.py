"""FedAvgM, FedAdagrad, FedAdam, FedYogi and FedProx against hand computations, and through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.federation.experiment import run_experiment
from fedray.privacy.randomness import DRIVER, NoiseSource
from fedray.strategies import ClientResult, FedAdagrad, FedAdam, FedAvgM, FedProx, FedYogi, build_strategy
from fedray.strategies.dp_fedavg import DPFedAvg
from fedray.sweep.space import axis_paths, grid, trial_config
from fedray.training.proximal import add_proximal_gradient, anchor_of

ADAPTIVE = dict(weighting="samples", server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.1)


def _round(strategy, global_params: dict, value: float, server_round: int) -> dict:
    """Every hospital returns ``value``: FedAvg's mean is ``value`` and the pseudo-gradient ``value - w``."""
    results = [ClientResult(hospital=k, params={"w": np.array([value]), "steps": np.array([7])}, num_samples=10 + k)
               for k in range(3)]
    return strategy.aggregate(server_round, global_params, results)


@pytest.mark.parametrize("strategy, expected", [
    # m1 = 0.1, v1 = 0.99·0.01 + 0.01 = 0.0199, w1 = 0.1·0.1/(√0.0199 + 0.1); round 2 from Δ2 = 1 - w1.
    (FedAdam(**ADAPTIVE), [0.0414821816, 0.1103247517]),
    # v1 = 0.01 - 0.01·1·sign(0.01 - 1) = 0.02; v2 = 0.02 + 0.01·Δ2² (sign negative again).
    (FedYogi(**ADAPTIVE), [0.0414213562, 0.1100423115]),
    # v1 = 0.01 + 1 = 1.01, w1 = 0.1·0.1/(√1.01 + 0.1).
    (FedAdagrad(**ADAPTIVE), [0.0090498756, 0.0215613232]),
    # u1 = Δ1 = 1, w1 = 1; Δ2 = 0, u2 = 0.9·1 = 0.9, w2 = 1.9.
    (FedAvgM(weighting="samples", server_lr=1.0, server_momentum=0.9), [1.0, 1.9]),
])
def test_two_server_steps_match_the_hand_computation(strategy, expected):
    params = {"w": np.array([0.0]), "steps": np.array([3])}
    for server_round, want in enumerate(expected, start=1):
        params = _round(strategy, params, 1.0, server_round)
        assert params["w"][0] == pytest.approx(want, rel=1e-8)
        assert params["steps"][0] == 7  # integer buffers take FedAvg's average, no optimizer


def test_server_state_survives_a_checkpoint():
    first, resumed = FedAdam(**ADAPTIVE), FedAdam(**ADAPTIVE)
    params = _round(first, {"w": np.array([0.0]), "steps": np.array([3])}, 1.0, 1)
    resumed.load_state_dict(first.state_dict())
    assert _round(first, params, 1.0, 2)["w"] == pytest.approx(_round(resumed, params, 1.0, 2)["w"])


def test_dp_fedavg_hands_its_noised_mean_to_the_server_optimizer():
    noise = NoiseSource.reproducible(0, DRIVER)
    global_params = {"w": np.zeros(4)}
    results = [ClientResult(hospital=k, params={"w": np.full(4, 0.2)}, num_samples=5) for k in range(5)]
    plain = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, noise=noise, expected_clients=5,
                     server=build_strategy(compose_typed([], ".").strategy))
    adam = DPFedAvg(clip_norm=1.0, noise_multiplier=1.0, noise=noise, expected_clients=5, server=FedAdam(**ADAPTIVE))
    noised_mean = plain.aggregate(1, global_params, results)["w"]  # the same noise stream for both
    stepped = adam.aggregate(1, global_params, results)["w"]
    expected = 0.1 * (0.1 * noised_mean) / (np.sqrt(0.99 * 0.01 + 0.01 * noised_mean**2) + 0.1)
    np.testing.assert_allclose(stepped, expected, rtol=1e-10)


def test_fedprox_strategy_averages_like_fedavg_and_its_term_pulls_towards_the_global_model():
    strategy = FedProx(weighting="uniform", proximal_mu=0.5)
    assert _round(strategy, {"w": np.array([0.0]), "steps": np.array([3])}, 2.0, 1)["w"][0] == 2.0
    model = torch.nn.Linear(3, 2)
    anchor = anchor_of(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    add_proximal_gradient(anchor, 0.5)
    torch.testing.assert_close(model.weight.grad, 0.5 * torch.ones_like(model.weight))  # μ(w - w_t)
    add_proximal_gradient(anchor, 0.5)  # a second term adds to the gradient already there, doubling it here
    torch.testing.assert_close(model.weight.grad, torch.ones_like(model.weight))


@pytest.mark.parametrize("strategy", ["fedprox", "fedadam"])
def test_strategies_compose_with_record_level_dp_sgd(ray_session, tmp_path, strategy):
    result = run_experiment(compose_typed([*TINY, f"strategy={strategy}", "privacy=dpsgd", "privacy.epsilon=3",
                                           "audit.enabled=false"], tmp_path))
    assert result.summary.privacy["epsilon"] <= 3 and np.isfinite(result.summary.final_test["loss"])


def test_strategy_and_secure_aggregation_are_sweep_axes(tmp_path):
    base = ["+sweep=privacy_tradeoff", *TINY, "+sweep.space.strategy=[fedavg,fedadam]",
            "+sweep.space.secure_aggregation=[false,true]"]
    cfg = compose_typed(base, tmp_path)
    paths = axis_paths(cfg.sweep, cfg)
    trials = [trial_config(base, params, paths) for params in grid(cfg.sweep.space)]
    assert len(trials) == 3 * 4 * 2 * 2
    assert {(t.strategy.name, t.fl.secure_aggregation) for t in trials} == {
        ("fedavg", False), ("fedavg", True), ("fedadam", False), ("fedadam", True)}
    assert {t.strategy.server_lr for t in trials if t.strategy.name == "fedadam"} == {0.01}  # its file's value
