"""Data held by sites: an image CSV with a site column becomes one hospital per site, with no re-dealing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

import fedray
from fedray.data.deal import deal_data
from fedray.errors import FedrayError

SITE_SIZES = {"bari": 24, "lyon": 40, "oslo": 64}  # unequal, as multi-centre data are


def site_csv(root, *, sites: bool = True):
    rows = ["path,label,site"] if sites else ["path,label"]
    rng = np.random.default_rng(0)
    for site, n in SITE_SIZES.items():
        (root / site).mkdir(parents=True)
        for i in range(n):
            label = ("melanoma", "nevus")[i % 2]
            colour = (200, 40, 40) if label == "melanoma" else (40, 40, 200)
            pixels = np.clip(rng.normal(colour, 30, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / site / f"{i:03d}.png")
            rows.append(f"{site}/{i:03d}.png,{label}" + (f",{site}" if sites else ""))
    (root / "images.csv").write_text("\n".join(rows) + "\n")
    return root / "images.csv"


def natural(csv, *extra):
    return ["data=image_csv", f"data.path={csv}", "data.site_column=site", "data.image_size=16",
            "fl.partition.scheme=natural", "fl.num_hospitals=3", "model=small_cnn", "train.batch_size=8", *extra]


def test_each_site_is_one_hospital_holding_exactly_its_own_records(tmp_path):
    cfg = fedray.compose(natural(site_csv(tmp_path)), run_dir=tmp_path / "run")
    dealt = deal_data(cfg, fit_input_map=lambda shards: (None, []))
    train_sites = Counter(dealt.splits.train.sites)
    assert [len(s) for s in dealt.train_shards] == [train_sites[s] for s in sorted(SITE_SIZES)]
    for k, site in enumerate(sorted(SITE_SIZES)):
        assert set(dealt.train_shards[k].sites) == {site} and set(dealt.val_shards[k].sites) == {site}
        assert all(i.startswith(f"{site}/") for i in dealt.train_shards[k].ids)
    # every site keeps about the data.split share of its records in training
    for site, n in SITE_SIZES.items():
        assert abs(train_sites[site] - 0.7 * n) <= 2
    assert dealt.dropped == 0


def test_a_natural_run_reports_each_sites_count_in_its_ledger(tmp_path):
    result = fedray.run(natural(site_csv(tmp_path), "cluster=inprocess", "fl.rounds=1", "privacy=dpsgd",
                                "privacy.epsilon=8", "audit.enabled=false"))
    sizes = result.summary.data.hospital_train_sizes
    rows = result.ledger["hospitals"]
    assert [row["training_records"] for row in rows] == sizes and sizes[0] < sizes[1] < sizes[2]
    assert all(row["epsilon"] <= 8.0 + 1e-6 for row in rows)
    assert result.summary.final_test["balanced_accuracy"] >= 0.0


def test_a_wrong_hospital_count_or_no_site_column_is_one_line(tmp_path):
    csv = site_csv(tmp_path / "with")
    with pytest.raises(FedrayError, match=r"the data has 3 sites \(bari, lyon, oslo\) but fl.num_hospitals=5"):
        deal_data(fedray.compose([*natural(csv), "fl.num_hospitals=5"]), fit_input_map=lambda s: (None, []))
    with pytest.raises(FedrayError, match="has no column 'site'"):
        deal_data(fedray.compose(natural(site_csv(tmp_path / "without", sites=False))),
                  fit_input_map=lambda s: (None, []))
