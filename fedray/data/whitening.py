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
hospitals but would give each client different inputs, so callers fit once on
the pooled training split.
"""

from __future__ import annotations

import numpy as np
import torch

from fedray.errors import FedrayError

# "auto": the seed's ZCA whitening, or a pretrained backbone's own input normalisation
# (resolved per experiment by fedray.data.deal, which knows the model).
METHODS = ("auto", "zca", "pca", "none")


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
        under 1% while bounding memory and time.
        """
        if method not in ("zca", "pca", "none"):
            raise FedrayError(f"whitening '{method}' cannot be fitted: use one of zca, pca, none")
        _check_batch(images_uint8)
        if method == "none":
            return cls(method=method, mean=torch.zeros(3), matrix=torch.eye(3))
        pixels = _pixel_sample(images_uint8, max_pixels, seed).to(torch.float64) / 255.0
        mean = pixels.mean(dim=0)
        centred = pixels - mean
        cov = centred.T @ centred / max(len(pixels) - 1, 1)
        lam, u = torch.linalg.eigh(cov)
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
