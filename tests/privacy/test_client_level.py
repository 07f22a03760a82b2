"""Client-level DP-FedAvg (clip, noisy mean, accounting) and the Laplace mechanisms."""

import math

import numpy as np
import pytest

from fedray.errors import FedrayError
from fedray.privacy.client_level import clip_update, noisy_mean
from fedray.privacy.ledger import calibrate_noise, compose_epsilon
from fedray.privacy.mechanisms.dpfedavg import round_event
from fedray.privacy.laplace import laplace_mechanism, perturb_features


def _update(rng, scale=1.0):
    return {"conv.weight": rng.normal(0, scale, (4, 3, 3, 3)).astype(np.float32), "fc.bias": rng.normal(0, scale, 5)}


def _norm(update):
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values()))


def test_clip_bounds_the_global_norm_and_keeps_direction():
    rng = np.random.default_rng(0)
    update = _update(rng, scale=3.0)
    clipped, norm = clip_update(update, clip_norm=1.0)
    assert norm == pytest.approx(_norm(update))
    assert _norm(clipped) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped["fc.bias"] * norm, update["fc.bias"], rtol=1e-5)
    assert clipped["conv.weight"].dtype == np.float32
    small, _ = clip_update(update, clip_norm=10 * norm)
    np.testing.assert_array_equal(small["fc.bias"], update["fc.bias"])
    with pytest.raises(FedrayError):
        clip_update(update, clip_norm=0.0)


def test_noisy_mean_without_noise_is_the_uniform_mean():
    rng = np.random.default_rng(1)
    updates = [_update(rng) for _ in range(5)]
    mean = noisy_mean(updates, clip_norm=1.0, noise_multiplier=0.0, rng=rng)
    for name in updates[0]:
        np.testing.assert_allclose(mean[name], np.mean([u[name] for u in updates], axis=0), rtol=1e-5, atol=1e-7)


def test_noisy_mean_noise_has_std_z_s_over_k():
    zero = {"w": np.zeros(200_000)}
    k, z, s = 5, 2.0, 0.5
    mean = noisy_mean([zero] * k, clip_norm=s, noise_multiplier=z, rng=np.random.default_rng(2))
    assert mean["w"].std() == pytest.approx(z * s / k, rel=0.01)
    fixed = noisy_mean([zero] * 3, clip_norm=s, noise_multiplier=z, rng=np.random.default_rng(2), expected_clients=k)
    assert fixed["w"].std() == pytest.approx(z * s / k, rel=0.01)


def test_noisy_mean_rejects_mismatched_updates():
    with pytest.raises(FedrayError):
        noisy_mean([{"a": np.zeros(2)}, {"b": np.zeros(2)}], clip_norm=1.0, noise_multiplier=1.0,
                   rng=np.random.default_rng(0))


def test_client_epsilon_uses_the_participation_rate():
    full = compose_epsilon([round_event(2.0, 1.0, 20)], delta=1e-3)
    assert compose_epsilon([round_event(2.0, 0.4, 20)], delta=1e-3) < full


def test_documented_example_full_participation_needs_large_noise():
    z = calibrate_noise(lambda s: compose_epsilon([round_event(s, 1.0, 20)], delta=1e-3), target=1.0)
    assert 12.5 < z < 13.5  # "z ~ 13" in the docs
    assert compose_epsilon([round_event(1.0, 1.0, 20)], delta=1e-3) == pytest.approx(25, abs=0.5)  # "z = 1: ~25"


def test_laplace_noise_has_scale_sensitivity_over_epsilon():
    rng = np.random.default_rng(3)
    noisy = laplace_mechanism(np.zeros(200_000), sensitivity=2.0, epsilon=0.5, rng=rng)
    b = 2.0 / 0.5
    assert np.mean(np.abs(noisy)) == pytest.approx(b, rel=0.01)  # E|Lap(b)| = b
    assert laplace_mechanism(3.0, sensitivity=1.0, epsilon=math.inf, rng=rng) == 3.0
    with pytest.raises(FedrayError):
        laplace_mechanism(3.0, sensitivity=1.0, epsilon=0.0, rng=rng)


def test_perturb_features_clips_then_splits_epsilon_over_features():
    rng = np.random.default_rng(4)
    X = rng.uniform(-2, 12, size=(100_000, 2))
    ranges = np.array([[0.0, 10.0], [0.0, 1.0]])
    noisy = perturb_features(X, epsilon=1.0, feature_ranges=ranges, rng=rng)
    residual = noisy - np.clip(X, ranges[:, 0], ranges[:, 1])
    np.testing.assert_allclose(np.mean(np.abs(residual), axis=0), [2 * 10.0, 2 * 1.0], rtol=0.02)  # b_j = d r_j / eps
    assert perturb_features(X, epsilon=math.inf, feature_ranges=ranges, rng=rng) is X
    with pytest.raises(FedrayError):
        perturb_features(X, epsilon=1.0, feature_ranges=ranges[:1], rng=rng)
