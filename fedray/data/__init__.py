"""Data layer: load, split, partition and preprocess image sets (no Ray).

``load_splits(data_cfg, seed)`` is the entry point: it dispatches on
``data_cfg["name"]`` to a loader and returns :class:`Splits`. Callers then
:func:`partition` the training labels among hospitals, fit
:class:`ColorWhitening` on the training images and apply it, with an
augmentation from :func:`get_augment`, per batch on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fedray.data.augment import AUGMENTATIONS, get_augment, random_flips
from fedray.data.isic import load_isic
from fedray.data.partition import SCHEMES, Partition, partition
from fedray.data.split import stratified_split
from fedray.data.synthetic import load_synthetic
from fedray.data.types import ImageData, Splits
from fedray.data.whitening import METHODS as WHITENING_METHODS
from fedray.data.whitening import ColorWhitening
from fedray.errors import FedrayError

LOADERS: dict[str, Callable[[Mapping, int], Splits]] = {"isic": load_isic, "synthetic": load_synthetic}


def load_splits(data_cfg: Mapping, seed: int) -> Splits:
    """Load the dataset ``data_cfg["name"]`` and split it reproducibly from ``seed``.

    ``data_cfg`` is the resolved ``data`` config group as a plain dict; see
    ``conf/data/*.yaml`` for the keys. Missing optional keys take the defaults
    documented there. ``whitening`` and ``augment`` are only checked here (so
    a typo fails before any decoding); callers apply them.
    """
    name = data_cfg.get("name")
    if name not in LOADERS:
        raise FedrayError(f"unknown dataset data.name={name!r}: use one of {', '.join(LOADERS)}")
    whitening = data_cfg.get("whitening", "auto")
    if whitening not in WHITENING_METHODS:
        raise FedrayError(f"unknown data.whitening '{whitening}': use one of {', '.join(WHITENING_METHODS)}")
    get_augment(data_cfg.get("augment", "flips"))
    return LOADERS[name](data_cfg, seed)


__all__ = [
    "AUGMENTATIONS",
    "SCHEMES",
    "WHITENING_METHODS",
    "ColorWhitening",
    "ImageData",
    "Partition",
    "Splits",
    "get_augment",
    "load_splits",
    "partition",
    "random_flips",
    "stratified_split",
]
