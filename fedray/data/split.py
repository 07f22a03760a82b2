"""Stratified train/validation/test index splits.

Each split keeps every class's share of the whole set (up to rounding), so a
rare class such as dermatofibroma (95 of 2,241 ISIC images) still appears in
validation and test. The test set is cut first, then validation is cut from the
rest; both are sized as a share of the whole set and cut with
:func:`sklearn.model_selection.train_test_split`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedray.config.schema import Split
from fedray.errors import FedrayError

def split_fractions(split: Split) -> tuple[float, float, float]:
    """``data.split`` as a ``(train, val, test)`` tuple (checked to sum to 1 with the config)."""
    return split.train, split.val, split.test


def stratified_split(
    labels: np.ndarray,
    *,
    fractions: tuple[float, float, float],
    seed: int,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into sorted train, val and test index arrays.

    Args:
        labels: class index per record.
        fractions: ``(train, val, test)`` shares; non-negative, summing to 1. A
            zero share gives an empty array (used when ``Test/`` supplies the
            test set).
        seed: makes the split reproducible.
        class_names: only to name a class in error messages.

    Raises:
        FedrayError: if the fractions are invalid or a class has too few
            records to appear on both sides of a cut.
    """
    train_f, val_f, test_f = (float(f) for f in fractions)
    if min(train_f, val_f, test_f) < 0 or train_f == 0 or abs(train_f + val_f + test_f - 1) > 1e-6:
        raise FedrayError(
            f"data.split fractions {train_f}/{val_f}/{test_f} are invalid: "
            "give non-negative train/val/test that sum to 1, with train > 0"
        )
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    # counts of the whole set, so val is 10% of all records, not of the remainder
    rest, test = _cut(everything, labels, round(test_f * len(labels)), seed, class_names)
    train, val = _cut(rest, labels, round(val_f * len(labels)), seed, class_names)
    return np.sort(train), np.sort(val), np.sort(test)


def _cut(
    idx: np.ndarray, labels: np.ndarray, count: int, seed: int, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (kept, cut) with ``count`` records in ``cut``, stratified."""
    from sklearn.model_selection import train_test_split  # only the caller splits; parties import this package

    if count == 0:
        return idx, idx[:0]
    try:
        kept, cut = train_test_split(idx, test_size=count, random_state=seed, stratify=labels[idx])
    except ValueError as err:
        classes, counts = np.unique(labels[idx], return_counts=True)
        smallest = classes[np.argmin(counts)]
        name = class_names[smallest] if class_names is not None else f"class {smallest}"
        raise FedrayError(
            f"cannot cut {count} stratified records from {len(idx)} records of "
            f"{len(classes)} classes ('{name}' has {counts.min()}; sklearn: {err}): "
            "add images to small classes or change data.split"
        ) from None
    return kept, cut


def kfold_split(
    labels: np.ndarray,
    *,
    fold: int,
    folds: int,
    val_share: float,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold ``fold`` of a stratified ``folds``-fold split: (train, val, test) sorted index arrays.

    The test set is fold ``fold`` of :class:`sklearn.model_selection.StratifiedKFold`
    (shuffled with ``seed``, so every record is tested exactly once over the
    folds); validation is a stratified ``val_share`` of the remaining records.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if folds < 2:
        raise FedrayError(f"cv.folds={folds}: use at least 2 folds, or 1 for a single hold-out split")
    if folds > counts.min():
        smallest = classes[np.argmin(counts)]
        name = class_names[smallest] if class_names is not None else f"class {smallest}"
        raise FedrayError(
            f"cv.folds={folds} is larger than the smallest class ('{name}' has {counts.min()} records): "
            f"set cv.folds to at most {counts.min()}"
        )
    if not 0 <= fold < folds:
        raise FedrayError(f"fold {fold} does not exist in a {folds}-fold split")
    from sklearn.model_selection import StratifiedKFold

    rest, test = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels))[fold]
    train, val = _cut(rest, labels, round(val_share * len(rest)), seed, class_names)
    return np.sort(train), np.sort(val), np.sort(test)
