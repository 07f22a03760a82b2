"""Deal a training set's records out to simulated hospitals.

Four schemes, all deterministic given ``seed``
(``np.random.default_rng(seed)``):

``equal_per_class`` (the seed paper's)
    For each class ``c`` with ``n_c`` records, shuffle them and give each of
    the ``N`` hospitals ``floor(n_c / N)`` of them; the ``n_c mod N`` left over
    go to nobody (:attr:`Partition.dropped`). Every hospital then holds the
    same number of each class: the data are IID across hospitals and
    class-balanced relative to the pooled set.

``iid``
    Shuffle all records and split them as evenly as possible
    (``np.array_split``: sizes differ by at most one); nothing is dropped.

``dirichlet`` (label skew, Hsu et al. 2019, arXiv:1909.06335)
    For each class draw hospital shares ``p ~ Dirichlet(alpha * 1_N)`` and cut
    the class's shuffled records at ``floor(cumsum(p) * n_c)``. Small
    ``alpha`` (0.1) gives each hospital a few dominant classes; large
    ``alpha`` (100) approaches ``iid``. Draws repeat, from the same generator,
    until every hospital holds at least ``MIN_SHARD_SIZE`` records.

``natural`` (data that arrive federated, as FLamby's Fed-ISIC2019)
    Each record already belongs to a site (:attr:`fedray.data.types.Records.sites`):
    site ``k`` in sorted order is hospital ``k``, with all its records and
    nothing re-dealt, so hospitals differ in size and label mix as the sites
    do. The number of hospitals must be the number of sites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedray.errors import FedrayError

SCHEMES = ("equal_per_class", "iid", "dirichlet", "natural")
MIN_SHARD_SIZE = 2  # a hospital needs two records to form a batch statistic
MAX_DIRICHLET_TRIES = 100


@dataclass(frozen=True)
class Partition:
    """Index arrays into the partitioned set.

    Attributes:
        shards: one sorted index array per hospital; pairwise disjoint.
        dropped: sorted indices dealt to nobody (only ``equal_per_class``
            drops any). ``shards`` and ``dropped`` together cover every index
            exactly once.
    """

    shards: tuple[np.ndarray, ...]
    dropped: np.ndarray


def partition(
    labels: np.ndarray,
    *,
    num_hospitals: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    num_classes: int | None = None,
    sites: np.ndarray | None = None,
) -> Partition:
    """Split ``range(len(labels))`` among ``num_hospitals`` hospitals.

    Args:
        labels: class index per record, in ``[0, num_classes)``.
        num_hospitals: number of shards ``N`` (>= 1).
        scheme: one of :data:`SCHEMES` (see the module docstring).
        seed: seeds the one generator the scheme draws from.
        alpha: Dirichlet concentration, > 0; used by ``dirichlet`` only.
        num_classes: size of the label vocabulary; defaults to
            ``labels.max() + 1``. Classes without records are skipped.
        sites: each record's site; ``natural`` only.

    Raises:
        FedrayError: unknown scheme, too many hospitals for the data, or
            ``alpha <= 0``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise FedrayError("there are no training records to partition: check the data config")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    if num_hospitals < 1:
        raise FedrayError(f"num_hospitals is {num_hospitals}: use at least 1 hospital")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if scheme == "equal_per_class":
        shards, dropped = _equal_per_class(by_class, num_hospitals, rng)
    elif scheme == "iid":
        shards, dropped = _iid(len(labels), num_hospitals, rng)
    elif scheme == "dirichlet":
        shards, dropped = _dirichlet(by_class, num_hospitals, alpha, rng)
    elif scheme == "natural":
        shards, dropped = _natural(sites, num_hospitals)
    else:
        raise FedrayError(f"unknown partition scheme '{scheme}': use one of {', '.join(SCHEMES)}")
    return Partition(shards=tuple(np.sort(s) for s in shards), dropped=np.sort(dropped))


def _equal_per_class(
    by_class: list[np.ndarray], n_hosp: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    present = [(c, idx) for c, idx in enumerate(by_class) if len(idx)]
    smallest_class, smallest = min(present, key=lambda item: len(item[1]))
    if len(smallest) < n_hosp:
        raise FedrayError(
            f"equal_per_class cannot give each of {n_hosp} hospitals a record of class {smallest_class} "
            f"({len(smallest)} records): use at most {len(smallest)} hospitals or another partition scheme"
        )
    shards: list[list[np.ndarray]] = [[] for _ in range(n_hosp)]
    dropped = []
    for _, idx in present:
        idx = rng.permutation(idx)
        per_hospital = len(idx) // n_hosp
        for h in range(n_hosp):
            shards[h].append(idx[h * per_hospital : (h + 1) * per_hospital])
        dropped.append(idx[n_hosp * per_hospital :])
    return [np.concatenate(s) for s in shards], np.concatenate(dropped)


def site_names(sites: np.ndarray) -> list[str]:
    """The sites in hospital order: hospital ``k`` is the ``k``-th site name in sorted order."""
    return sorted({str(s) for s in sites})


def _natural(sites: np.ndarray | None, n_hosp: int) -> tuple[list[np.ndarray], np.ndarray]:
    if sites is None:
        raise FedrayError("fl.partition.scheme=natural needs each record's site, and this data has none: "
                          "use data=image_csv with a site column, or another partition scheme")
    names = site_names(sites)
    if len(names) != n_hosp:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise FedrayError(f"the data has {len(names)} sites ({shown}) but fl.num_hospitals={n_hosp}: "
                          f"set fl.num_hospitals={len(names)} (natural partitions make each site a hospital)")
    as_text = np.asarray([str(s) for s in sites], dtype=object)
    shards = [np.flatnonzero(as_text == name) for name in names]
    small = [(name, len(s)) for name, s in zip(names, shards) if len(s) < MIN_SHARD_SIZE]
    if small:
        raise FedrayError(f"site {small[0][0]!r} holds {small[0][1]} record(s) here, fewer than the "
                          f"{MIN_SHARD_SIZE} a hospital needs: give it more records or change data.split")
    return shards, np.empty(0, dtype=np.int64)


def _iid(n: int, n_hosp: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    if n_hosp > n:
        raise FedrayError(
            f"iid partition cannot give {n_hosp} hospitals a record each from {n}: use at most {n} hospitals"
        )
    return np.array_split(rng.permutation(n), n_hosp), np.empty(0, dtype=np.int64)


def _dirichlet(
    by_class: list[np.ndarray], n_hosp: int, alpha: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    if not alpha > 0:
        raise FedrayError(f"dirichlet alpha is {alpha}: the concentration must be > 0 (0.1 = strong skew, 100 = near iid)")
    n = sum(len(idx) for idx in by_class)
    if n < MIN_SHARD_SIZE * n_hosp:
        raise FedrayError(
            f"dirichlet partition needs {MIN_SHARD_SIZE} records per hospital, {n} cannot serve {n_hosp}: "
            f"use at most {n // MIN_SHARD_SIZE} hospitals"
        )
    for _ in range(MAX_DIRICHLET_TRIES):
        shards: list[list[np.ndarray]] = [[] for _ in range(n_hosp)]
        for idx in by_class:
            shares = rng.dirichlet(np.full(n_hosp, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
            for h, part in enumerate(np.split(rng.permutation(idx), cuts)):
                shards[h].append(part)
        merged = [np.concatenate(s) for s in shards]
        if min(len(s) for s in merged) >= MIN_SHARD_SIZE:
            return merged, np.empty(0, dtype=np.int64)
    raise FedrayError(
        f"dirichlet partition with alpha={alpha} left a hospital with < {MIN_SHARD_SIZE} records "
        f"in {MAX_DIRICHLET_TRIES} draws: raise alpha or use fewer hospitals"
    )
