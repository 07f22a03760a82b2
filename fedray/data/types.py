"""The containers every other package receives from :mod:`fedray.data`.

A :class:`Records` set is either images or table rows; everything downstream
(partition, hospitals, driver, audit) handles both through the same fields.

Images are decoded and resized once, at load time, into one uint8 tensor, so
that a training step never touches the file system or PIL. Conversion to float
and colour whitening happen per batch on the training device
(:class:`fedray.data.whitening.ColorWhitening`), which keeps the stored set at a
quarter of the float32 size (2,241 ISIC images at 128 px: 110 MB).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Records:
    """A labelled set of images or table rows.

    Attributes:
        inputs: images as a uint8 tensor ``[N, 3, S, S]`` (RGB, already
            resized to ``S``), or table rows as a float32 tensor ``[N, D]`` in
            the features' own units (age in years, not yet scaled).
        labels: int64 array ``[N]`` of class indices into ``class_names``.
        ids: object array ``[N]`` of record identifiers: the path relative to
            the data root (``"Train/melanoma/ISIC_0000.jpg"``) or
            ``"synthetic/000123"``. They let a split or a membership audit name
            the exact records it used.
        class_names: the label vocabulary; index ``c`` names label ``c``.
        feature_names: tables only: the name of each of the ``D`` columns.
        feature_ranges: tables only: float64 ``[D, 2]``, a public (low, high)
            range per feature, known without looking at any patient's record
            (clinical limits, a data dictionary). Inputs are scaled by it, and
            Laplace input perturbation clips to it; a range fitted on the
            private data would void that guarantee (``ranges_public=False``
            says so, and the run summary repeats it).
        ranges_public: whether ``feature_ranges`` are a priori public.
        sites: object array ``[N]`` naming the site (hospital, centre) that
            holds each record, for data that arrive already federated; None
            for data pooled in one place. ``fl.partition.scheme=natural`` makes
            each site a hospital.
    """

    inputs: torch.Tensor
    labels: np.ndarray
    ids: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    feature_ranges: np.ndarray | None = None
    ranges_public: bool = True
    sites: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        image = self.inputs.dtype == torch.uint8 and self.inputs.ndim == 4 and self.inputs.shape[1] == 3
        table = self.inputs.dtype == torch.float32 and self.inputs.ndim == 2
        if not (image or table):
            raise ValueError("inputs must be uint8 images [N, 3, S, S] or float32 rows [N, D], "
                             f"got {self.inputs.dtype} {tuple(self.inputs.shape)}")
        if len(self.labels) != n or len(self.ids) != n or (self.sites is not None and len(self.sites) != n):
            raise ValueError(f"inputs, labels, ids and sites disagree in length: {n}, {len(self.labels)}, "
                             f"{len(self.ids)}, {None if self.sites is None else len(self.sites)}")
        if table and (len(self.feature_names) != self.inputs.shape[1] or self.feature_ranges is None
                      or np.shape(self.feature_ranges) != (self.inputs.shape[1], 2)):
            raise ValueError("table rows need one name and one (low, high) range per feature")

    @property
    def kind(self) -> str:
        """``"image"`` or ``"table"``."""
        return "table" if self.inputs.ndim == 2 else "image"

    def subset(self, idx: np.ndarray) -> Records:
        """The records at positions ``idx`` (in that order), same class vocabulary."""
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self, inputs=self.inputs[torch.from_numpy(idx)], labels=self.labels[idx], ids=self.ids[idx],
            sites=None if self.sites is None else self.sites[idx])

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class Splits:
    """Train/validation/test sets of one dataset, disjoint by record.

    Attributes:
        train, val, test: the three sets; they share ``class_names``.
        skipped_files: relative paths of unreadable images that were left out
            (``data.on_corrupt: skip``); empty for synthetic data.
        source: one human-readable line saying where the data came from and
            how it was split, for logs and result files.
        without_consent: records left out before splitting because they carry
            no informed consent; they are in none of the three sets.
        fold: ``(i, k)`` when the test set is fold ``i`` of a stratified
            ``k``-fold cross-validation, else None (a single hold-out split).
        test_from_same_pool: whether the test set was cut from the same
            records as train and validation (False for a dataset's own fixed
            test set): only then is it a sample of the members' population.
    """

    train: Records
    val: Records
    test: Records
    skipped_files: tuple[str, ...]
    source: str
    without_consent: int = 0
    fold: tuple[int, int] | None = None
    test_from_same_pool: bool = True


@dataclass(frozen=True)
class Loaded:
    """What a dataset loader returns: every record, before consent filtering and splitting.

    Attributes:
        records: all readable records of the dataset.
        consent: bool ``[N]``, True where the record carries informed consent;
            None when the dataset has no consent information (then every
            record counts as consented unless ``data.consent_list`` says otherwise).
        skipped_files: as in :class:`Splits`.
        source: one line saying where the data came from (the split is added later).
        test: a fixed test set (ISIC's ``Test/`` folder), or None to cut one from ``records``.
    """

    records: Records
    consent: np.ndarray | None
    skipped_files: tuple[str, ...]
    source: str
    test: Records | None = None
