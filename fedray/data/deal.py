"""Deal one experiment's data: load, split, partition across hospitals, decide the input map (pure, no Ray).

The validation split is partitioned with the same scheme and seed as the
training split, so every hospital also holds its own validation shard. Under
``mode=centralized`` the shards are pooled into one. The input map is fitted
on the training shards only (:mod:`fedray.data.input_map`). Under k-fold
cross-validation (``cv.folds`` > 1) the config's ``cv.fold`` picks the test fold.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from fedray.data import load_splits
from fedray.data.partition import partition
from fedray.data.input_map import InputMap, fit_input_map
from fedray.data.types import Records, Splits
from fedray.errors import FedrayError

log = logging.getLogger(__name__)

MODES = ("federated", "centralized", "local")


@dataclass
class Dealt:
    """The data of one experiment after partitioning, before anything touches Ray."""

    splits: Splits
    train_shards: list[Records]
    val_shards: list[Records]
    dropped: int
    input_map: InputMap


def deal_data(cfg: dict) -> Dealt:
    """Load, split and partition the data; fit the input map on the training shards."""
    mode = cfg["mode"]
    if mode not in MODES:
        raise FedrayError(f"unknown mode {mode!r}: set mode to one of {', '.join(MODES)}")
    splits = load_splits(cfg["data"], seed=cfg["seed"], fold=cv_fold(cfg))
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
        log.warning("partition %s dropped %d training records (the per-class remainder)", scheme, dropped)
    train_shards, val_shards = shards
    if mode == "centralized":
        train_shards, val_shards = [union(train_shards)], [union(val_shards)]
    return Dealt(splits, train_shards, val_shards, dropped, fit_input_map(cfg, union(train_shards)))


def cv_folds(cfg: dict) -> int:
    """``cv.folds``: 1 for a single hold-out split, k >= 2 for k-fold cross-validation."""
    folds = int((cfg.get("cv") or {}).get("folds", 1))
    if folds < 1:
        raise FedrayError(f"cv.folds={folds}: use 1 (a single hold-out split) or k >= 2 folds")
    return folds


def cv_fold(cfg: dict) -> tuple[int, int] | None:
    """``(fold, folds)`` under k-fold cross-validation (``cv.folds`` > 1), else None."""
    folds = cv_folds(cfg)
    return (int(cfg["cv"].get("fold", 0)), folds) if folds > 1 else None


def _partition_or_explain(data, num_hospitals, scheme, seed, alpha, num_classes, part_name):
    try:
        return partition(data.labels, num_hospitals=num_hospitals, scheme=scheme, seed=seed,
                         alpha=alpha, num_classes=num_classes)
    except FedrayError as err:
        raise FedrayError(f"{part_name} split: {err}") from None


def union(shards: list[Records]) -> Records:
    return dataclasses.replace(
        shards[0],
        inputs=torch.cat([s.inputs for s in shards]),
        labels=np.concatenate([s.labels for s in shards]),
        ids=np.concatenate([s.ids for s in shards]),
    )
