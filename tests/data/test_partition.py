"""Invariants of the hospital partitions and the stratified splits."""

import numpy as np
import pytest
import torch

from fedray.data.partition import SCHEMES, partition
from fedray.data.types import Records
from fedray.data.split import stratified_split
from fedray.errors import FedrayError

# 4 classes with 23, 17, 9 and 31 records, shuffled
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(4), [23, 17, 9, 31]))


def _covers_once(part, n):
    everything = np.concatenate([*part.shards, part.dropped])
    assert np.array_equal(np.sort(everything), np.arange(n)), "shards + dropped must cover each index once"
    for shard in part.shards:
        assert np.array_equal(shard, np.sort(shard))


DEALT = [scheme for scheme in SCHEMES if scheme != "natural"]  # the schemes that deal pooled records out


@pytest.mark.parametrize("scheme", DEALT)
def test_shards_are_disjoint_and_cover_everything(scheme):
    part = partition(LABELS, num_hospitals=3, scheme=scheme, seed=1, alpha=1.0)
    assert len(part.shards) == 3
    _covers_once(part, len(LABELS))


@pytest.mark.parametrize("scheme", DEALT)
def test_same_seed_same_shards_other_seed_other_shards(scheme):
    a = partition(LABELS, num_hospitals=3, scheme=scheme, seed=7)
    b = partition(LABELS, num_hospitals=3, scheme=scheme, seed=7)
    c = partition(LABELS, num_hospitals=3, scheme=scheme, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.shards, b.shards))
    assert not all(np.array_equal(x, y) for x, y in zip(a.shards, c.shards))


def test_equal_per_class_deals_floor_and_drops_remainder():
    n_hosp = 4
    part = partition(LABELS, num_hospitals=n_hosp, scheme="equal_per_class", seed=0)
    counts = np.bincount(LABELS)
    for shard in part.shards:
        assert np.array_equal(np.bincount(LABELS[shard], minlength=4), counts // n_hosp)
    assert len(part.dropped) == (counts % n_hosp).sum()


def test_equal_per_class_too_many_hospitals_names_class_and_limit():
    with pytest.raises(FedrayError, match="class 2.*at most 9 hospitals"):
        partition(LABELS, num_hospitals=10, scheme="equal_per_class", seed=0)


def test_iid_is_balanced_and_drops_nothing():
    part = partition(LABELS, num_hospitals=3, scheme="iid", seed=0)
    assert sorted(len(s) for s in part.shards) == [26, 27, 27]
    assert len(part.dropped) == 0
    with pytest.raises(FedrayError, match="at most 80"):
        partition(LABELS, num_hospitals=81, scheme="iid", seed=0)


def test_dirichlet_small_alpha_skews_labels_large_alpha_does_not():
    labels = np.repeat(np.arange(4), 100)

    def mean_dominant_share(alpha):
        part = partition(labels, num_hospitals=5, scheme="dirichlet", seed=0, alpha=alpha)
        assert min(len(s) for s in part.shards) >= 2
        return np.mean([np.bincount(labels[s], minlength=4).max() / len(s) for s in part.shards])

    assert mean_dominant_share(0.1) > 0.7  # most of each hospital is one class
    assert mean_dominant_share(1000.0) < 0.35  # close to the pooled 0.25


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_dirichlet_rejects_non_positive_alpha(alpha):
    with pytest.raises(FedrayError, match="alpha"):
        partition(LABELS, num_hospitals=3, scheme="dirichlet", seed=0, alpha=alpha)


def test_dirichlet_gives_up_when_hospitals_cannot_get_two_records():
    with pytest.raises(FedrayError, match="dirichlet"):
        partition(np.arange(10) % 2, num_hospitals=5, scheme="dirichlet", seed=0, alpha=0.01)


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(FedrayError, match="equal_per_class, iid, dirichlet"):
        partition(LABELS, num_hospitals=3, scheme="pathological", seed=0)


def test_num_classes_allows_absent_classes():
    part = partition(LABELS, num_hospitals=2, scheme="equal_per_class", seed=0, num_classes=6)
    _covers_once(part, len(LABELS))


def test_stratified_split_fractions_disjoint_and_stratified():
    labels = np.repeat(np.arange(3), [100, 50, 30])
    train, val, test = stratified_split(labels, fractions=(0.7, 0.1, 0.2), seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(len(labels)))
    assert (len(train), len(val), len(test)) == (126, 18, 36)
    for c, n in enumerate([100, 50, 30]):
        assert abs((labels[test] == c).sum() - 0.2 * n) <= 1


def test_stratified_split_zero_test_fraction_and_determinism():
    labels = np.repeat(np.arange(2), 20)
    train, val, test = stratified_split(labels, fractions=(0.8, 0.2, 0.0), seed=3)
    assert len(test) == 0 and len(val) == 8
    assert np.array_equal(train, stratified_split(labels, fractions=(0.8, 0.2, 0.0), seed=3)[0])


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_stratified_split_rejects_bad_fractions(fractions):
    with pytest.raises(FedrayError, match="sum to 1"):
        stratified_split(np.zeros(10, dtype=int), fractions=fractions, seed=0)


def test_stratified_split_names_a_class_too_small():
    labels = np.array([0] * 20 + [1])
    with pytest.raises(FedrayError, match="'rare' has 1"):
        stratified_split(labels, fractions=(0.7, 0.1, 0.2), seed=0, class_names=("common", "rare"))


# three sites of unequal size, as multi-centre data arrive: 40, 25 and 15 of the 80 records
SITES = np.random.default_rng(1).permutation(np.repeat(np.array(["oslo", "lyon", "bari"], dtype=object), [40, 25, 15]))


def test_a_natural_partition_makes_each_site_a_hospital_in_sorted_order_whatever_the_seed():
    part = partition(LABELS, num_hospitals=3, scheme="natural", seed=1, sites=SITES)
    _covers_once(part, len(LABELS))
    assert [len(s) for s in part.shards] == [15, 25, 40]  # bari, lyon, oslo
    assert [set(SITES[s]) for s in part.shards] == [{"bari"}, {"lyon"}, {"oslo"}]
    again = partition(LABELS, num_hospitals=3, scheme="natural", seed=99, sites=SITES)
    assert all(np.array_equal(a, b) for a, b in zip(part.shards, again.shards))


def test_a_natural_partition_names_the_sites_when_the_hospital_count_or_the_sites_are_wrong():
    with pytest.raises(FedrayError, match=r"the data has 3 sites \(bari, lyon, oslo\) but fl.num_hospitals=5: "
                                          r"set fl.num_hospitals=3"):
        partition(LABELS, num_hospitals=5, scheme="natural", seed=1, sites=SITES)
    with pytest.raises(FedrayError, match="needs each record's site, and this data has none"):
        partition(LABELS, num_hospitals=3, scheme="natural", seed=1)


def test_a_split_of_data_held_by_sites_keeps_every_sites_share_of_each_class():
    from fedray.data.splits import split_strata

    records = Records(inputs=torch.zeros((80, 3, 8, 8), dtype=torch.uint8), labels=LABELS,
                      ids=np.array([f"r{i}" for i in range(80)], dtype=object), class_names=("a", "b", "c", "d"),
                      sites=SITES)
    strata, names = split_strata(records)
    train, val, test = stratified_split(strata, fractions=(0.6, 0.2, 0.2), seed=0, class_names=names)
    for site in ("oslo", "lyon", "bari"):
        share = {part: np.mean(SITES[idx] == site) for part, idx in (("train", train), ("test", test))}
        assert abs(share["train"] - share["test"]) < 0.1, (site, share)
    assert all(name.count(" / ") == 1 or name.startswith("rare") for name in names)
