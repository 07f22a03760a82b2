"""Federated and DP colour statistics: the federated fit is the pooled fit; the DP fit adds the stated noise."""

import math

import dp_accounting
import numpy as np
import pytest
import torch

from fedray.data import whitening
from fedray.data.whitening import PRIVATE_SENSITIVITY, ColorWhitening, ColourMoments
from fedray.privacy.preprocessing import private_colour_moments
from fedray.errors import FedrayError


def _images(n=30, size=12, seed=0):
    """uint8 images with correlated RGB channels and a per-image brightness, like skin photos."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, size, size, generator=g) * torch.rand(n, 1, 1, 1, generator=g)
    rgb = 0.15 + base * torch.tensor([0.7, 0.5, 0.4]).view(1, 3, 1, 1) + 0.1 * torch.rand(n, 3, size, size, generator=g)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def _shards(images):
    return [images[:4], images[4:17], images[17:]]


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_the_federated_fit_equals_the_pooled_fit(method):
    images = _images()
    pooled = ColorWhitening.fit(images, method=method)
    federated = ColorWhitening.fit_federated([ColourMoments.of_images(s) for s in _shards(images)], method=method)
    assert federated.method == method
    assert torch.allclose(federated.mean, pooled.mean, atol=1e-7)
    assert torch.allclose(federated.matrix, pooled.matrix, rtol=1e-5, atol=1e-5)


def test_moments_give_the_pixel_mean_and_covariance():
    images = _images()
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy() / 255
    moments = ColourMoments.of_images(images)
    assert moments.count == len(images)
    np.testing.assert_allclose(moments.mean(), pixels.mean(0), atol=1e-12)
    np.testing.assert_allclose(moments.covariance(), np.cov(pixels.T, bias=True), atol=1e-12)


def test_summing_in_chunks_changes_nothing(monkeypatch):
    images = _images(n=9)
    whole = ColourMoments.of_images(images)
    monkeypatch.setattr(whitening, "_CHUNK_PIXELS", 300)  # two 12x12 images per chunk
    chunked = ColourMoments.of_images(images)
    np.testing.assert_allclose(chunked.as_vector(), whole.as_vector(), rtol=1e-13)


def test_vector_roundtrip_keeps_the_symmetric_second_moment():
    moments = ColourMoments.of_images(_images(n=5))
    back = ColourMoments.from_vector(moments.as_vector())
    np.testing.assert_array_equal(back.as_vector(), moments.as_vector())
    np.testing.assert_allclose(back.second, moments.second, rtol=1e-15)


def test_one_image_moves_the_released_sums_by_at_most_the_sensitivity():
    white = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert np.linalg.norm(ColourMoments.of_images(white).as_vector()) == pytest.approx(math.sqrt(10))
    for image in _images(n=20).split(1):
        assert np.linalg.norm(ColourMoments.of_images(image).as_vector()) <= PRIVATE_SENSITIVITY


def test_dp_noise_has_the_stated_sigma_and_the_sigma_meets_the_target():
    images = _images(n=8, size=6)
    exact = ColourMoments.of_images(images).as_vector()
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(3000):
        noisy, entry = private_colour_moments(images, epsilon=1.0, delta=1e-5, rng=rng)
        draws.append(noisy.as_vector() - exact)
    residual = np.stack(draws)
    assert residual.std() == pytest.approx(entry["sigma"], rel=0.03)
    assert np.abs(residual.mean(axis=0)).max() < 5 * entry["sigma"] / math.sqrt(len(draws))
    assert entry["sigma"] == pytest.approx(entry["noise_multiplier"] * PRIVATE_SENSITIVITY)
    assert dp_accounting.get_epsilon_gaussian(entry["noise_multiplier"], 1e-5) <= 1.0


def test_the_ledger_entry_names_the_mechanism():
    _, entry = private_colour_moments(_images(n=4), epsilon=0.5, delta=1e-6, rng=np.random.default_rng(1))
    assert entry["statistic"] == "colour mean and covariance"
    assert entry["mechanism"] == "gaussian"
    assert entry["unit"] == "image"
    assert (entry["epsilon"], entry["delta"]) == (0.5, 1e-6)
    assert entry["sensitivity"] == pytest.approx(math.sqrt(10))
    assert entry["sigma"] > 0


def test_noisy_covariance_is_projected_onto_what_pixel_colours_allow():
    vector = ColourMoments.of_images(_images(n=10)).as_vector()
    vector[4] -= 3.0  # the first diagonal entry of Q: variance of red below zero
    vector[7] += 40.0  # green's second moment far above any [0, 1] pixel's
    eigenvalues = np.linalg.eigvalsh(ColourMoments.from_vector(vector).covariance())
    assert eigenvalues.min() >= 0.0 and eigenvalues.max() <= 0.75 + 1e-12
    fitted = ColorWhitening.fit_moments(ColourMoments.from_vector(vector), method="zca")
    assert torch.isfinite(fitted.matrix).all() and ((fitted.mean >= 0) & (fitted.mean <= 1)).all()


def test_the_dp_fit_of_several_hospitals_is_close_to_the_exact_fit():
    images = _images(n=3000, size=4, seed=5)
    rng = np.random.default_rng(2)
    noisy = [private_colour_moments(shard, epsilon=2.0, delta=1e-5, rng=rng)[0] for shard in images.split(1000)]
    private, exact = ColorWhitening.fit_federated(noisy), ColorWhitening.fit(images)
    assert torch.allclose(private.mean, exact.mean, atol=0.02)
    assert torch.isfinite(private.matrix).all()


def test_too_few_images_for_the_noise_and_bad_budgets_are_user_errors():
    with pytest.raises(FedrayError, match="too few images"):
        ColourMoments.from_vector(np.zeros(10)).mean()
    with pytest.raises(FedrayError, match="finite epsilon"):
        private_colour_moments(_images(n=2), epsilon=math.inf, delta=1e-5, rng=np.random.default_rng(0))
    with pytest.raises(FedrayError):
        private_colour_moments(_images(n=2), epsilon=1.0, delta=0.0, rng=np.random.default_rng(0))
    with pytest.raises(FedrayError, match="at least one"):
        ColorWhitening.fit_federated([])
