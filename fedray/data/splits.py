"""One dataset loaded, its records without consent removed, and split reproducibly (no Ray, no training).

The split is a stratified hold-out split (``data.split``, 70/10/20 by
default), or fold ``i`` of a stratified k-fold cross-validation; a dataset
that brings its own test set (ISIC's ``Test/`` folder) keeps it, and the
splits say so (``test_from_same_pool``). Data held by sites (``Records.sites``)
are stratified by (site, class), so every site keeps its share of each class in
train, validation and test and a natural partition gives each hospital its own
validation shard (:func:`split_strata`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from fedray.config.schema import DataCommon
from fedray.data.consent import apply_consent
from fedray.data.registry import dataset
from fedray.data.split import kfold_split, split_fractions, stratified_split
from fedray.data.types import Loaded, Records, Splits
from fedray.errors import FedrayError


def load_splits(data_cfg: DataCommon, seed: int, *, fold: tuple[int, int] | None = None) -> Splits:
    """Load the dataset ``data_cfg.name``, drop records without consent, split reproducibly from ``seed``.

    ``data_cfg`` is the typed ``data`` config section; see
    ``conf/data/*.yaml`` for the keys. ``fold=(i, k)`` makes the test set fold
    ``i`` of a stratified ``k``-fold split of the consented records (the
    validation set is then ``split.val / (split.train + split.val)`` of the
    rest). ``whitening`` and ``augment`` are applied by the callers.
    """
    loaded: Loaded = dataset(data_cfg.name).load(data_cfg, seed)
    if loaded.records.kind == "table" and data_cfg.augment != "none":
        raise FedrayError(f"data.augment={data_cfg.augment!r} flips images; tables take data.augment=none")
    records, fixed_test, without_consent = apply_consent(loaded, data_cfg)
    fractions = split_fractions(data_cfg.split)
    strata, strata_names = split_strata(records)
    if fold is not None:
        if fixed_test is not None:
            raise FedrayError("cross-validation cuts its own test folds: set data.use_test_folder=false or cv.folds=1")
        train_f, val_f, _ = fractions
        train, val, test = kfold_split(strata, fold=fold[0], folds=fold[1], val_share=val_f / (train_f + val_f),
                                       seed=seed, class_names=strata_names)
        how = f"stratified {fold[1]}-fold CV, test = fold {fold[0] + 1}"
    elif fixed_test is not None:
        train_f, val_f, _ = fractions
        train, val, test = stratified_split(strata, fractions=(train_f / (train_f + val_f),
                                                              val_f / (train_f + val_f), 0.0),
                                            seed=seed, class_names=strata_names)
        how = "train/val split " + "/".join(f"{100 * f:g}" for f in (train_f, val_f))
    else:
        train, val, test = stratified_split(strata, fractions=fractions, seed=seed, class_names=strata_names)
        how = "split " + "/".join(f"{100 * f:g}" for f in fractions)
    consent_note = f", {without_consent} without consent left out" if without_consent else ""
    return Splits(
        train=records.subset(train),
        val=records.subset(val),
        test=fixed_test if fixed_test is not None else records.subset(test),
        skipped_files=loaded.skipped_files,
        source=f"{loaded.source}; {how}{consent_note}",
        without_consent=without_consent,
        fold=fold,
        test_from_same_pool=fixed_test is None,
    )


STRATUM_MIN = 5  # a (site, class) pair with fewer records is stratified with its site's other rare classes


def split_strata(records: Records) -> tuple[np.ndarray, tuple[str, ...]]:
    """(a stratum index per record, the strata's names): the class, or for data held by sites (site, class),
    with a pair of fewer than :data:`STRATUM_MIN` records pooled into its site's rare classes, and a site's rare
    pool smaller than that into one rare pool of all sites (a stratum needs records on both sides of a cut)."""
    if records.sites is None:
        return records.labels, records.class_names
    pairs = [f"{site} / {records.class_names[label]}" for site, label in zip(records.sites, records.labels)]
    counts = Counter(pairs)
    keys = [pair if counts[pair] >= STRATUM_MIN else f"{site} / rare classes"
            for pair, site in zip(pairs, records.sites)]
    counts = Counter(keys)
    keys = [key if counts[key] >= STRATUM_MIN else "rare classes of small sites" for key in keys]
    names = tuple(sorted(set(keys)))
    index = {name: k for k, name in enumerate(names)}
    return np.array([index[key] for key in keys], dtype=np.int64), names
