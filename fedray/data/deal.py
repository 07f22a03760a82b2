"""Deal one experiment's data: decode, split, partition across hospitals, fit the whitening (pure, no Ray).

The validation split is partitioned with the same scheme and seed as the
training split, so every hospital also holds its own validation shard. Under
``mode=centralized`` the shards are pooled into one. The colour whitening is
fitted on the training shards only, or a pretrained backbone's own normalisation (see docs/data.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from fedray.data import load_splits
from fedray.data.partition import partition
from fedray.data.types import ImageData, Splits
from fedray.data.whitening import ColorWhitening
from fedray.errors import FedrayError
from fedray.models import backbone_spec

log = logging.getLogger(__name__)

MODES = ("federated", "centralized", "local")


@dataclass
class Dealt:
    """The data of one experiment after partitioning, before anything touches Ray."""

    splits: Splits
    train_shards: list[ImageData]
    val_shards: list[ImageData]
    dropped: int
    whitening: ColorWhitening


def deal_data(cfg: dict) -> Dealt:
    """Decode, split and partition the data; fit the colour whitening on the training shards."""
    mode = cfg["mode"]
    if mode not in MODES:
        raise FedrayError(f"unknown mode {mode!r}: set mode to one of {', '.join(MODES)}")
    splits = load_splits(cfg["data"], seed=cfg["seed"])
    num_hospitals = int(cfg["fl"]["num_hospitals"])
    if num_hospitals < 1:
        raise FedrayError(f"fl.num_hospitals={num_hospitals}: need at least 1 hospital")
    scheme = cfg["fl"]["partition"]["scheme"]
    alpha = float(cfg["fl"]["partition"].get("alpha", 0.5))
    num_classes = len(splits.train.class_names)
    shards = []
    dropped = 0
    for part_name, data in (("train", splits.train), ("val", splits.val)):
        part = _partition_or_explain(data, num_hospitals, scheme, cfg["seed"], alpha, num_classes, part_name)
        shards.append([data.subset(idx) for idx in part.shards])
        if part_name == "train":
            dropped = len(part.dropped)
    if dropped:
        log.warning("partition %s dropped %d training images (the per-class remainder)", scheme, dropped)
    train_shards, val_shards = shards
    if mode == "centralized":
        train_shards, val_shards = [union(train_shards)], [union(val_shards)]
    whitening = input_map(cfg, union(train_shards).images)
    return Dealt(splits, train_shards, val_shards, dropped, whitening)


def input_map(cfg: dict, train_images: torch.Tensor) -> ColorWhitening:
    """The colour map every model input goes through.

    ``data.whitening=auto`` (the default) is the seed's ZCA whitening fitted on
    the training shards, except for a backbone loaded with pretrained weights:
    its features only mean something under the normalisation those weights
    were trained with, so that fixed normalisation is used instead.
    """
    method = cfg["data"].get("whitening", "auto")
    if method == "auto":
        normalisation = backbone_spec(cfg["model"]["name"]).pretrained_normalisation
        if cfg["model"].get("pretrained") and normalisation is not None:
            return ColorWhitening.standardise(mean=normalisation[0], std=normalisation[1])
        method = "zca"
    return ColorWhitening.fit(train_images, method=method, seed=cfg["seed"])


def _partition_or_explain(data, num_hospitals, scheme, seed, alpha, num_classes, part_name):
    try:
        return partition(data.labels, num_hospitals=num_hospitals, scheme=scheme, seed=seed,
                         alpha=alpha, num_classes=num_classes)
    except FedrayError as err:
        raise FedrayError(f"{part_name} split: {err}") from None


def union(shards: list[ImageData]) -> ImageData:
    return ImageData(
        images=torch.cat([s.images for s in shards]),
        labels=np.concatenate([s.labels for s in shards]),
        ids=np.concatenate([s.ids for s in shards]),
        class_names=shards[0].class_names,
    )
