"""A generated image set, "synthetic", so that fedray runs with no download.

Each image is a tinted, striped blob on a skin-coloured background - a
cartoon of a dermoscopy image. Class ``c`` of ``K`` fixes two things:

* tint: RGB ``0.5 + 0.3 * cos(h_c - 2*pi*k/3)`` for channel ``k``, hue
  ``h_c = 2*pi*c/K``;
* stripe frequency ``f_c = 2 + 4*c/K`` cycles per image width.

Everything else varies per image and carries no label: blob centre, radius,
stripe orientation and phase, background shade, tint jitter (``noise / 2``
per channel) and Gaussian pixel noise (std ``noise``, in [0, 1] units). Tint
and frequency are invariant under flips, so :func:`random_flips` keeps labels
valid. With the default ``noise`` the classes overlap enough that a small CNN
needs a few epochs and stays below perfect test accuracy.

Generation is vectorised numpy from ``np.random.default_rng(seed)``:
identical for the same arguments on every machine.
"""

from __future__ import annotations


import numpy as np
import torch

from fedray.data.datasets.synthetic import SyntheticData
from fedray.data.types import Loaded, Records

BACKGROUND_RGB = np.array([0.85, 0.65, 0.55])  # a light skin tone


def make_synthetic(
    *, num_classes: int, samples_per_class: int, image_size: int, noise: float, seed: int
) -> Records:
    """``num_classes * samples_per_class`` images, grouped by class, ids ``synthetic/000123``."""
    rng = np.random.default_rng(seed)
    n, s = num_classes * samples_per_class, image_size
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), samples_per_class)

    def per_image(low: float, high: float) -> np.ndarray:
        """One uniform draw per image, shaped to broadcast over [N, S, S]."""
        return rng.uniform(low, high, size=(n, 1, 1))

    ys, xs = np.meshgrid(np.arange(s) / s, np.arange(s) / s, indexing="ij")  # [S, S] in [0, 1)
    cx, cy, radius = per_image(0.3, 0.7), per_image(0.3, 0.7), per_image(0.2, 0.35)
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))  # [N, S, S] in (0, 1]

    angle, phase = per_image(0, np.pi), per_image(0, 2 * np.pi)
    frequency = (2 + 4 * labels / num_classes)[:, None, None]
    along = xs * np.cos(angle) + ys * np.sin(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * along + phase)

    hue = 2 * np.pi * labels / num_classes
    tint = 0.5 + 0.3 * np.cos(hue[:, None] - 2 * np.pi * np.arange(3) / 3)  # [N, 3]
    tint = tint + rng.normal(0, noise / 2, size=tint.shape)
    background = BACKGROUND_RGB * rng.uniform(0.85, 1.15, size=(n, 1))

    lesion = tint[:, :, None, None] * (0.6 + 0.4 * stripes[:, None])  # [N, 3, S, S]
    images = background[:, :, None, None] * (1 - blob[:, None]) + lesion * blob[:, None]
    images += rng.normal(0, noise, size=images.shape)
    pixels = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return Records(
        inputs=torch.from_numpy(pixels),
        labels=labels,
        ids=np.array([f"synthetic/{i:06d}" for i in range(n)], dtype=object),
        class_names=tuple(f"synthetic_class_{c}" for c in range(num_classes)),
    )


def load_synthetic(data_cfg: SyntheticData, seed: int) -> Loaded:
    """Generate the set ``data_cfg`` describes (``conf/data/synthetic.yaml``)."""
    data = make_synthetic(num_classes=data_cfg.num_classes, samples_per_class=data_cfg.samples_per_class,
                          image_size=data_cfg.image_size, noise=data_cfg.noise, seed=seed)
    return Loaded(records=data, consent=None, skipped_files=(),
                  source=f"synthetic (generated, seed {seed}, {data_cfg.num_classes} classes x "
                         f"{data_cfg.samples_per_class})")
