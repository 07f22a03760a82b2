"""Deal one experiment's data: load, split, partition across hospitals, decide the input map (pure, no Ray).

The validation split is partitioned with the same scheme and seed as the
training split, so every hospital also holds its own validation shard. Under
``mode=centralized`` the shards are pooled into one. The input map is fitted
from the training shards' own statistics only, by the caller's ``fit_input_map``
(:func:`fedray.privacy.preprocessing.fit_input_map`, which releases them under
DP; a resumed run passes the map it kept). Under k-fold
cross-validation (``cv.folds`` > 1) the config's ``cv.fold`` picks the test fold.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedray.data.splits import load_splits
from fedray.data.partition import partition
from fedray.data.input_map import InputMap
from fedray.data.types import Records, Splits
from fedray.config.schema import Config, CrossValidation
from fedray.errors import FedrayError

log = logging.getLogger(__name__)

@dataclass
class Dealt:
    """The data of one experiment after partitioning, before anything touches Ray."""

    splits: Splits
    train_shards: list[Records]
    val_shards: list[Records]
    dropped: int
    input_map: InputMap
    preprocessing: list[dict]  # ledger entries of the private statistics the input map was fitted on

    @property
    def hospital_sites(self) -> tuple[str, ...]:
        """Each hospital's site when every hospital is one site (a natural partition), else ()."""
        sites = [None if s.sites is None else {str(site) for site in s.sites} for s in self.train_shards]
        if any(found is None or len(found) != 1 for found in sites):
            return ()
        return tuple(found.pop() for found in sites)


def deal_data(cfg: Config, *, fit_input_map: Callable[[list[Records]], tuple[InputMap, list[dict]]]) -> Dealt:
    """Load, split and partition the data; ``fit_input_map(training shards)`` gives the map and its ledger entries.
    """
    splits = load_splits(cfg.data, seed=cfg.seed, fold=cv_fold(cfg.cv))
    num_hospitals = cfg.fl.num_hospitals
    scheme = cfg.fl.partition.scheme
    alpha = cfg.fl.partition.alpha
    num_classes = len(splits.train.class_names)
    shards = []
    dropped = 0
    for part_name, data in (("train", splits.train), ("val", splits.val)):
        part = _partition_or_explain(data, num_hospitals, scheme, cfg.seed, alpha, num_classes, part_name)
        shards.append([data.subset(idx) for idx in part.shards])
        if part_name == "train":
            dropped = len(part.dropped)
    if dropped:
        log.warning("partition %s dropped %d training records (the per-class remainder)", scheme, dropped)
    train_shards, val_shards = shards
    if cfg.mode == "centralized":
        train_shards, val_shards = [union(train_shards)], [union(val_shards)]
    input_map, preprocessing = fit_input_map(train_shards)
    return Dealt(splits, train_shards, val_shards, dropped, input_map, preprocessing)


def cv_fold(cv: CrossValidation) -> tuple[int, int] | None:
    """``(fold, folds)`` under k-fold cross-validation (``cv.folds`` > 1), else None."""
    return (cv.fold, cv.folds) if cv.folds > 1 else None


def _partition_or_explain(data, num_hospitals, scheme, seed, alpha, num_classes, part_name):
    try:
        return partition(data.labels, num_hospitals=num_hospitals, scheme=scheme, seed=seed,
                         alpha=alpha, num_classes=num_classes, sites=data.sites)
    except FedrayError as err:
        raise FedrayError(f"{part_name} split: {err}") from None


def union(shards: list[Records]) -> Records:
    return dataclasses.replace(
        shards[0],
        inputs=torch.cat([s.inputs for s in shards]),
        labels=np.concatenate([s.labels for s in shards]),
        ids=np.concatenate([s.ids for s in shards]),
        sites=np.concatenate([s.sites for s in shards]) if all(s.sites is not None for s in shards) else None,
    )
