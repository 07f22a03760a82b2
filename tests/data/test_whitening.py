"""Colour whitening: whitened training pixels have zero mean and unit covariance."""

import pytest
import numpy as np
import torch

from fedray.data.whitening import ColorWhitening
from fedray.errors import FedrayError


def _correlated_images(n=40, size=16, seed=0, shift=0.0):
    """uint8 images whose RGB channels are strongly correlated, like skin photos."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, size, size, generator=g)
    mixing = torch.tensor([[0.6], [0.45], [0.35]]).view(1, 3, 1, 1)
    rgb = 0.2 + shift + base * mixing + 0.08 * torch.rand(n, 3, size, size, generator=g)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def _pixel_stats(x):
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3).double()
    return pixels.mean(0), torch.cov(pixels.T)


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitened_training_pixels_have_zero_mean_identity_covariance(method):
    train = _correlated_images()
    whitening = ColorWhitening.fit(train, method=method, eps=1e-8)
    mean, cov = _pixel_stats(whitening.apply(train))
    assert torch.allclose(mean, torch.zeros(3, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(cov, torch.eye(3, dtype=torch.float64), atol=1e-3)


def test_zca_stays_close_to_rgb_and_pca_rotates():
    train = _correlated_images()
    zca = ColorWhitening.fit(train, method="zca").matrix
    pca = ColorWhitening.fit(train, method="pca").matrix
    assert torch.allclose(zca, zca.T, atol=1e-5)  # ZCA is symmetric: no rotation away from RGB
    assert not torch.allclose(pca, pca.T, atol=1e-2)


def test_eps_damps_small_colour_axes():
    train = _correlated_images()
    _, cov = _pixel_stats(ColorWhitening.fit(train, eps=1.0).apply(train))
    assert torch.linalg.eigvalsh(cov).max() < 0.5  # lam / (lam + eps) with lam << 1


def test_statistics_come_from_the_images_it_is_fitted_on():
    train, val = _correlated_images(seed=0), _correlated_images(seed=1, shift=0.3)
    whitening = ColorWhitening.fit(train)
    train_mean = train.double().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(whitening.mean.double(), train_mean, atol=1e-5)
    val_mean, _ = _pixel_stats(whitening.apply(val))
    assert val_mean.norm() > 1  # the shifted val set is not centred by train statistics


def test_subsampled_fit_is_close_to_the_full_fit():
    train = _correlated_images()
    full = ColorWhitening.fit(train)
    sampled = ColorWhitening.fit(train, max_pixels=4000, seed=3)
    assert torch.allclose(full.mean, sampled.mean, atol=0.01)
    assert torch.allclose(full.matrix, sampled.matrix, rtol=0.15, atol=0.5)


def test_none_is_divide_by_255():
    train = _correlated_images()
    assert torch.allclose(ColorWhitening.fit(train, method="none").apply(train), train.float() / 255, atol=1e-6)


def test_state_dict_roundtrip_preserves_the_transform():
    train = _correlated_images()
    whitening = ColorWhitening.fit(train, method="pca")
    restored = ColorWhitening.from_state_dict(whitening.state_dict())
    assert restored.method == "pca"
    assert torch.equal(restored.apply(train), whitening.apply(train))


def test_apply_preserves_shape_and_returns_float32():
    train = _correlated_images(n=3, size=8)
    out = ColorWhitening.fit(train).apply(train)
    assert out.shape == train.shape and out.dtype == torch.float32


def test_unknown_method_is_a_user_error():
    with pytest.raises(FedrayError, match="zca, pca, none"):
        ColorWhitening.fit(_correlated_images(n=2), method="imagenet")


def test_auto_uses_a_pretrained_backbones_own_normalisation_and_zca_otherwise():
    from fedray.config import compose_config
    from fedray.privacy.preprocessing import fit_input_map
    from fedray.data.types import Records

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    train = Records(inputs=images, labels=np.zeros(4, dtype=np.int64), ids=np.arange(4).astype(object),
                    class_names=("a",))

    def input_map(overrides):
        fitted, private_statistics = fit_input_map(compose_config(overrides), [train])
        assert private_statistics == []  # nothing charged without DP
        return fitted

    pretrained = input_map(["model=efficientnet_lite0"])
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert pretrained.method == "pretrained" and torch.allclose(pretrained.apply(white), torch.ones(1, 3, 2, 2))
    assert input_map(["model=efficientnet_lite0", "model.pretrained=false"]).method == "zca"
    assert input_map(["data.whitening=pca"]).method == "pca"
