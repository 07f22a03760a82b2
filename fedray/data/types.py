"""The two containers every other package receives from :mod:`fedray.data`.

Images are decoded and resized once, at load time, into one uint8 tensor, so
that a training step never touches the file system or PIL. Conversion to float
and colour whitening happen per batch on the training device
(:class:`fedray.data.whitening.ColorWhitening`), which keeps the stored set at a
quarter of the float32 size (2,241 ISIC images at 128 px: 110 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ImageData:
    """A labelled image set.

    Attributes:
        images: uint8 tensor ``[N, 3, S, S]``, RGB, already resized to ``S``.
        labels: int64 array ``[N]`` of class indices into ``class_names``.
        ids: object array ``[N]`` of record identifiers: the path relative to
            the data root (``"Train/melanoma/ISIC_0000.jpg"``) or
            ``"synthetic/000123"``. They let a split or a membership audit name
            the exact records it used.
        class_names: the label vocabulary; index ``c`` names label ``c``.
    """

    images: torch.Tensor
    labels: np.ndarray
    ids: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, S, S], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != n or len(self.ids) != n:
            raise ValueError(f"images, labels and ids disagree in length: {n}, {len(self.labels)}, {len(self.ids)}")

    def subset(self, idx: np.ndarray) -> ImageData:
        """The records at positions ``idx`` (in that order), same class vocabulary."""
        idx = np.asarray(idx, dtype=np.int64)
        return ImageData(
            images=self.images[torch.from_numpy(idx)],
            labels=self.labels[idx],
            ids=self.ids[idx],
            class_names=self.class_names,
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class Splits:
    """Train/validation/test sets of one dataset, disjoint by record.

    Attributes:
        train, val, test: the three sets; they share ``class_names``.
        skipped_files: relative paths of unreadable images that were left out
            (``data.on_corrupt: skip``); empty for synthetic data.
        source: one human-readable line saying where the data came from and
            how it was split, for logs and result files.
    """

    train: ImageData
    val: ImageData
    test: ImageData
    skipped_files: tuple[str, ...]
    source: str
