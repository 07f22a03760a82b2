"""Colour whitening of RGB pixels, fitted on the training split only.

The seed paper says only "PCA normalisation". We read it as PCA colour
whitening of the three RGB channels (the colour PCA of Krizhevsky et al. 2012,
AlexNet), fitted on the training split alone so that no validation or test
statistic leaks into preprocessing.

Maths. Treat every training pixel as a vector ``x = rgb / 255`` in ``[0, 1]^3``.
With mean ``m`` and covariance ``C = E[(x - m)(x - m)^T] = U diag(lam) U^T``
(``eigh``; columns of ``U`` are the colour principal axes):

* ``pca``:  ``W = diag(1 / sqrt(lam + eps)) U^T`` - rotates to the principal
  axes and scales each to unit variance; channel ``k`` of the output is the
  ``k``-th principal component (ascending ``lam``), no longer a colour.
* ``zca``:  ``W = U diag(1 / sqrt(lam + eps)) U^T`` - the same scaling, rotated
  back, so the output channels stay close to R, G, B (the default).
* ``none``: ``m = 0``, ``W = I``: the model sees ``rgb / 255``.

A pixel maps to ``y = W (x - m)``, so ``Cov(y) = W C W^T`` has eigenvalues
``lam / (lam + eps)``: the identity where ``lam >> eps``. ``eps`` (in squared
[0,1] units) stops a near-degenerate colour axis - RGB channels of skin images
are strongly correlated - from being amplified into noise.

Assumptions: one transform for the whole image (spatial statistics are left
alone); a hospital that fits its own transform would leak nothing across
hospitals but would give each client different inputs, so one transform is
fitted for all of them.

Federated fit. ``m`` and ``C`` are functions of sums, so each hospital ``k``
sends only its :class:`ColourMoments`: its image count ``n_k`` and, over its
images ``i``, ``s_k = sum_i a_i`` and ``Q_k = sum_i B_i``, where ``a_i`` and
``B_i`` are image ``i``'s mean pixel and mean outer product ``x x^T``. With
``n, s, Q`` the sums over hospitals, ``m = s / n`` and ``C = Q / n - m m^T``.
Every image weighs the same, so for images of one size (one ``[N, 3, H, W]``
tensor) this is exactly the pixel mean and covariance: :meth:`ColorWhitening.fit`
on the pooled images equals :meth:`ColorWhitening.fit_federated` on the
hospitals' moments. Exact moments are not private: they reveal the statistics
of a hospital's images to whoever sums them.

DP fit: each hospital's moments released through the Gaussian mechanism
(:mod:`fedray.privacy.preprocessing`, which states the sensitivity
:data:`PRIVATE_SENSITIVITY` below), then the same post-processing
(:meth:`ColorWhitening.fit_federated`: ``m`` clipped to ``[0, 1]^3``, the
eigenvalues of ``C`` clipped to ``[0, 3/4]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedray.errors import FedrayError

# "auto": the seed's ZCA whitening, or a pretrained backbone's own input normalisation
# (resolved per experiment by fedray.data.deal, which knows the model).
METHODS = ("auto", "zca", "pca", "none")

# L2 sensitivity of one image's contribution (1, a_i, u(B_i)) to the released sums (module docstring).
PRIVATE_SENSITIVITY = math.sqrt(10.0)
# The largest variance of u^T x, |u| = 1, for x in [0, 1]^3: (sqrt(3))^2 / 4.
_MAX_COLOUR_VARIANCE = 0.75
# Pixels per float64 chunk when summing moments (48 MiB): bounds memory on large image sets.
_CHUNK_PIXELS = 1 << 21
_UPPER = np.triu_indices(3)


@dataclass(frozen=True, eq=False)
class ColourMoments:
    """Sufficient statistics of colour: image count, sum of mean pixels, sum of mean pixel outer products.

    Attributes:
        count: ``n``, the number of images (noisy after :func:`fedray.privacy.preprocessing.private_colour_moments`).
        total: float64 ``[3]``, ``s = sum_i a_i`` in ``[0, 1]`` units.
        second: float64 ``[3, 3]`` symmetric, ``Q = sum_i B_i``.
    """

    count: float
    total: np.ndarray
    second: np.ndarray

    @classmethod
    def of_images(cls, images_uint8: torch.Tensor) -> ColourMoments:
        """The exact moments of ``images_uint8`` (``[N, 3, H, W]``); every pixel is read."""
        _check_batch(images_uint8)
        n, _, h, w = images_uint8.shape
        total, second = np.zeros(3), np.zeros((3, 3))
        for chunk in images_uint8.split(max(1, _CHUNK_PIXELS // max(h * w, 1))):
            x = chunk.reshape(len(chunk), 3, h * w).to(torch.float64) / 255.0
            total += x.mean(dim=2).sum(dim=0).cpu().numpy()
            second += (x @ x.transpose(1, 2)).sum(dim=0).cpu().numpy() / (h * w)
        return cls(count=float(n), total=total, second=second)

    def __add__(self, other: ColourMoments) -> ColourMoments:
        return ColourMoments(self.count + other.count, self.total + other.total, self.second + other.second)

    def as_vector(self) -> np.ndarray:
        """The 10 released coordinates ``(n, s, u(Q))``."""
        return np.concatenate([[self.count], self.total, self.second[_UPPER]])

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> ColourMoments:
        """Inverse of :meth:`as_vector` (``Q`` rebuilt symmetric from its upper triangle)."""
        second = np.zeros((3, 3))
        second[_UPPER] = vector[4:]
        second = second + np.triu(second, 1).T
        return cls(count=float(vector[0]), total=np.asarray(vector[1:4], dtype=np.float64), second=second)

    def mean(self) -> np.ndarray:
        """``m = s / n``, clipped to ``[0, 1]^3`` (a no-op unless ``s`` and ``n`` are noisy)."""
        if not self.count >= 1:
            raise FedrayError(
                f"colour statistics over {self.count:.3g} images: too few images (or too much noise) to "
                "fit whitening; raise data.whitening_epsilon_share, pool more hospitals, or set data.whitening=none"
            )
        return np.clip(self.total / self.count, 0.0, 1.0)

    def covariance(self) -> np.ndarray:
        """``C = Q / n - m m^T`` with its eigenvalues clipped to ``[0, 3/4]``, the range pixel colours allow."""
        m = self.mean()
        cov = self.second / self.count - np.outer(m, m)
        lam, u = np.linalg.eigh((cov + cov.T) / 2)
        return (u * np.clip(lam, 0.0, _MAX_COLOUR_VARIANCE)) @ u.T


class ColorWhitening:
    """An affine per-pixel colour map ``y = W (rgb/255 - m)``.

    Attributes:
        method: ``"zca"``, ``"pca"`` or ``"none"``.
        mean: float32 ``[3]``, the training pixel mean ``m`` in ``[0, 1]`` units.
        matrix: float32 ``[3, 3]``, the whitening matrix ``W``.
    """

    def __init__(self, *, method: str, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        self.method = method
        self.mean = mean.to(torch.float32).cpu()
        self.matrix = matrix.to(torch.float32).cpu()
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(
        cls,
        images_uint8: torch.Tensor,
        *,
        method: str = "zca",
        eps: float = 1e-3,
        max_pixels: int = 2_000_000,
        seed: int = 0,
    ) -> ColorWhitening:
        """Fit ``m`` and ``W`` to the pixels of ``images_uint8`` (``[N, 3, H, W]``).

        Pass the training images only. When they hold more than ``max_pixels``
        pixels, the statistics come from ``max_pixels`` pixels drawn uniformly
        with replacement (seeded), which estimates a 3x3 covariance to well
        under 1% while bounding memory and time. Otherwise the fit equals
        :meth:`fit_federated` on any split of the same images. Not private:
        the DP fit is :func:`fedray.privacy.preprocessing.private_colour_moments` then
        :meth:`fit_federated`.
        """
        _check_method(method)
        _check_batch(images_uint8)
        if method == "none":
            return cls(method=method, mean=torch.zeros(3), matrix=torch.eye(3))
        n, _, h, w = images_uint8.shape
        if n * h * w > max_pixels:
            # A sampled pixel is a one-pixel image: the moments of the sample are its pixel statistics.
            images_uint8 = _pixel_sample(images_uint8, max_pixels, seed).reshape(max_pixels, 3, 1, 1)
        return cls.fit_moments(ColourMoments.of_images(images_uint8), method=method, eps=eps)

    @classmethod
    def fit_federated(cls, moments: Sequence[ColourMoments], *, method: str = "zca",
                      eps: float = 1e-3) -> ColorWhitening:
        """Fit on the sum of the hospitals' (exact or DP) moments: the driver never sees a pixel."""
        _check_method(method)
        if not moments:
            raise FedrayError("no hospital sent colour statistics: whitening needs at least one")
        total = moments[0]
        for part in moments[1:]:
            total = total + part
        return cls.fit_moments(total, method=method, eps=eps)

    @classmethod
    def fit_moments(cls, moments: ColourMoments, *, method: str = "zca", eps: float = 1e-3) -> ColorWhitening:
        """``m`` and ``W`` from summed moments (see the module docstring)."""
        _check_method(method)
        if method == "none":
            return cls(method=method, mean=torch.zeros(3), matrix=torch.eye(3))
        mean = torch.from_numpy(moments.mean())
        lam, u = torch.linalg.eigh(torch.from_numpy(moments.covariance()))
        scale = torch.diag(1.0 / torch.sqrt(lam.clamp(min=0) + eps))
        matrix = scale @ u.T if method == "pca" else u @ scale @ u.T
        return cls(method=method, mean=mean, matrix=matrix)

    @classmethod
    def standardise(cls, *, mean: tuple[float, float, float], std: tuple[float, float, float]) -> ColorWhitening:
        """The fixed per-channel map ``(rgb/255 - mean) / std`` that pretrained weights expect."""
        return cls(method="pretrained", mean=torch.tensor(mean), matrix=torch.diag(1.0 / torch.tensor(std)))

    def apply(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """Whitened float32 ``[B, 3, H, W]`` on the batch's device.

        Folds ``/255`` and ``-m`` into one einsum plus a bias:
        ``y = (W/255) x - W m``.
        """
        _check_batch(batch_uint8)
        scaled, bias = self._device_copies(batch_uint8.device)
        out = torch.einsum("ij,bjhw->bihw", scaled, batch_uint8.to(torch.float32))
        return out.sub_(bias.view(1, 3, 1, 1))

    def _device_copies(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = ((self.matrix / 255.0).to(device), (self.matrix @ self.mean).to(device))
        return self._on_device[device]

    def state_dict(self) -> dict:
        """Everything needed to rebuild the transform, for checkpoints."""
        return {"method": self.method, "mean": self.mean.clone(), "matrix": self.matrix.clone()}

    @classmethod
    def from_state_dict(cls, state: dict) -> ColorWhitening:
        """Inverse of :meth:`state_dict`."""
        return cls(method=state["method"], mean=torch.as_tensor(state["mean"]), matrix=torch.as_tensor(state["matrix"]))

    def __repr__(self) -> str:
        return f"ColorWhitening(method={self.method!r}, mean={self.mean.tolist()})"


def _check_method(method: str) -> None:
    if method not in ("zca", "pca", "none"):
        raise FedrayError(f"whitening '{method}' cannot be fitted: use one of zca, pca, none")


def _check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")


def _pixel_sample(images: torch.Tensor, max_pixels: int, seed: int) -> torch.Tensor:
    """``[P, 3]`` RGB vectors: every pixel, or ``max_pixels`` drawn with replacement."""
    n, _, h, w = images.shape
    if n * h * w <= max_pixels:
        return images.permute(0, 2, 3, 1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    at = [torch.from_numpy(rng.integers(0, size, max_pixels)) for size in (n, h, w)]
    return images[at[0], :, at[1], at[2]]
