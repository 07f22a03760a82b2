"""The guarantee holds: secret and fresh DP noise, nothing un-noised leaves a hospital, private statistics charged.

Streams are drawn from the real trainers and strategy (not a copy of their seeding), and whole runs go
through the engine on the session's Ray.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed, same_params

from fedray.data.feature_scaling import FeatureScaling
from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment
from fedray.privacy.laplace import perturb_hospital_rows
from fedray.privacy.mechanisms import PlanContext, plan_privacy
from fedray.privacy.randomized_response import keep_probability
from fedray.privacy.randomness import DRIVER, NoiseSource, hospital
from fedray.strategies import ClientResult, build_strategy
from fedray.training import build_trainer

DP = [*TINY, "privacy=dpsgd", "privacy.epsilon=3", "audit.enabled=false"]


def _dp_trainer(tmp_path, noise: NoiseSource, k: int = 0):
    cfg = compose_typed(DP, tmp_path)
    prep = prepare_experiment(cfg)
    shard = prep.dealt.train_shards[k]
    return build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes,
                         num_features=None, inputs=shard.inputs, labels=shard.labels,
                         input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=k, noise=noise)


def _draws(trainer, round_idx: int) -> tuple[np.ndarray, np.ndarray]:
    """(Poisson mask draws, Gaussian noise draws) of one round, from the trainer's own generators."""
    poisson = trainer.round_randomness(round_idx)
    noise = trainer.parts.optimizer.generator
    return torch.rand(64, generator=poisson).numpy(), torch.randn(64, generator=noise).numpy()


def test_dp_sgd_streams_differ_across_hospitals_rounds_and_purposes_and_a_retry_never_replays(tmp_path):
    secret = [_dp_trainer(tmp_path, NoiseSource.secret(hospital(k)), k) for k in range(2)]
    first, retried = _draws(secret[0], 1), _draws(secret[0], 1)  # the same round asked for twice
    assert not np.array_equal(first[0], retried[0]) and not np.array_equal(first[1], retried[1])
    streams = [first[0], first[1], *_draws(secret[0], 2), *_draws(secret[1], 1)]
    assert len({s.tobytes() for s in streams}) == len(streams)

    reproducible = [_dp_trainer(tmp_path, NoiseSource.reproducible(0, hospital(k)), k) for k in range(2)]
    again = _dp_trainer(tmp_path, NoiseSource.reproducible(0, hospital(0)), 0)
    assert all(np.array_equal(a, b) for a, b in zip(_draws(reproducible[0], 1), _draws(again, 1)))
    streams = [*_draws(reproducible[0], 1), *_draws(reproducible[0], 2), *_draws(reproducible[1], 1)]
    assert len({s.tobytes() for s in streams}) == len(streams)


def test_dp_fedavg_noise_is_fresh_each_round_and_secret_by_default(tmp_path):
    cfg = compose_typed([*TINY, "privacy=dpfedavg", "privacy.epsilon=5"], tmp_path)
    plan = prepare_experiment(cfg).privacy
    zero = {"w": np.zeros(6)}
    results = [ClientResult(hospital=k, params={"w": np.full(6, 0.1)}, num_samples=None) for k in range(5)]

    def aggregate(noise: NoiseSource, round_idx: int) -> np.ndarray:
        return plan.wrap_strategy(build_strategy(cfg.strategy), noise=noise).aggregate(round_idx, zero, results)["w"]

    assert not np.array_equal(aggregate(NoiseSource.secret(DRIVER), 1), aggregate(NoiseSource.secret(DRIVER), 1))
    assert np.array_equal(aggregate(NoiseSource.reproducible(0, DRIVER), 1),
                          aggregate(NoiseSource.reproducible(0, DRIVER), 1))
    assert not np.array_equal(aggregate(NoiseSource.reproducible(0, DRIVER), 1),
                              aggregate(NoiseSource.reproducible(0, DRIVER), 2))


@pytest.fixture(scope="module")
def default_dp_runs(ray_session, tmp_path_factory):
    """Two DP runs of one config and seed, default (secret) noise."""
    return [run_experiment(compose_typed(DP, tmp_path_factory.mktemp("dp"))) for _ in range(2)]


def test_two_default_dp_runs_differ_and_reproducible_runs_equal_a_run_with_a_killed_hospital(default_dp_runs,
                                                                                            reproducible_dp_runs):
    first, second = default_dp_runs
    assert not same_params(first.final_params, second.final_params)  # same config, same seed: secret noise
    assert first.summary.privacy["noise"] == "noise secret (OS entropy)"

    # DP with privacy.reproducible_noise=true, run clean and with hospital 2 killed in round 2 (conftest)
    _, clean, killed = reproducible_dp_runs
    assert killed.summary.hospital_restarts >= 1
    assert same_params(clean.final_params, killed.final_params)  # two runs, one of them retried: equal
    assert "simulation only, no guarantee" in clean.summary.privacy["noise"]


def test_under_dp_the_driver_receives_no_statistic_of_training_records(default_dp_runs, tiny_run):
    result = default_dp_runs[0]
    for record in result.rounds:
        assert [set(c) for c in record["clients"]] == [{"hospital", "num_samples", "local_steps", "dp_steps"}] * 5
        assert record["hospital_val"] == []
    plain = tiny_run  # the session's run of TINY (conftest), whose audit is off too
    assert {"train_loss", "train_accuracy"} <= set(plain.rounds[0]["clients"][0])
    assert len(plain.rounds[0]["hospital_val"]) == 5


@pytest.mark.parametrize("overrides, keys", [
    ([*TINY, "privacy=dpsgd"], {"local_steps", "dp_steps"}), ([*TINY, "privacy=dpfedavg"], set()),
    (["data=breast_cancer", "model=logreg", "privacy=laplace_input"], set()),
    (["data=breast_cancer", "model=random_forest", "privacy=dp_tree"], {"dp_epsilon_spent"})])
def test_each_mechanism_names_exactly_what_a_hospital_may_release(tmp_path, overrides, keys):
    metrics = {"local_steps", "dp_steps", "dp_epsilon_spent", "train_loss", "train_accuracy"}
    for epsilon, expected in (("1.0", keys), ("inf", metrics)):
        cfg = compose_typed([*overrides, f"privacy.epsilon={epsilon}"], tmp_path)
        plan = plan_privacy(cfg, PlanContext(slot_counts=(50,) * 5, num_features=30, num_classes=2))
        assert {m for m in metrics if plan.hospital_releases(0).covers(f"metrics.{m}")} == expected


def test_dp_whitening_is_federated_noised_and_charged_to_the_same_budget(ray_session, tmp_path):
    # Tiny hospitals need a large share for usable statistics; the default 5% suits thousands of images.
    result = run_experiment(compose_typed([*DP, "data.whitening=zca", "data.whitening_epsilon_share=0.5",
                                           "data.samples_per_class=150"], tmp_path))
    ledger = result.summary.privacy
    assert len(ledger["preprocessing"]) == 5 and all(e["unit"] == "image" for e in ledger["preprocessing"])
    assert ledger["preprocessing"][0]["epsilon"] == pytest.approx(0.5 * 3)
    # One accountant composes each hospital's statistic with its training (RDP), within the target.
    assert all(events[0].startswith("GaussianDpEvent") for events in ledger["events"].values())
    assert 2.9 <= ledger["epsilon"] <= 3.0
    auto = prepare_experiment(compose_typed(DP, tmp_path))  # auto under DP fits no private statistic
    assert auto.dealt.preprocessing == [] and auto.dealt.input_map.method == "none"


def test_laplace_input_randomises_labels_at_the_stated_rate():
    rows = np.random.default_rng(0).uniform(0, 1, size=(20_000, 4))
    labels = np.random.default_rng(1).integers(0, 3, size=20_000)
    noisy_rows, responded = perturb_hospital_rows(rows, labels, epsilon=4.0, label_share=0.25, num_classes=3,
                                                  input_map=FeatureScaling.from_ranges(np.array([[0.0, 1.0]] * 4)),
                                                  noise=NoiseSource.secret(hospital(0), release_key=7))
    kept = float(np.mean(responded == labels))
    expected = keep_probability(1.0, 3)  # label_share x epsilon = 1
    assert kept == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / len(labels)))
    assert noisy_rows.shape == rows.shape and not np.allclose(noisy_rows, rows)


@pytest.mark.parametrize("mode", ["local", "centralized"])
def test_dp_fedavg_outside_federated_mode_is_refused_before_ray(tmp_path, mode):
    with pytest.raises(FedrayError, match=f"privacy=dpfedavg with mode={mode}"):
        prepare_experiment(compose_typed([*TINY, "privacy=dpfedavg", f"mode={mode}"], tmp_path))
