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


def test_a_natural_run_reports_each_sites_count_in_its_ledger_and_the_site_bounding_epsilon(tmp_path):
    result = fedray.run(natural(site_csv(tmp_path), "cluster=inprocess", "fl.rounds=1", "privacy=dpsgd",
                                "privacy.epsilon=8", "audit.enabled=false"))
    sizes = result.summary.data.hospital_train_sizes
    rows = result.ledger.hospitals
    assert result.summary.data.hospital_sites == [row.site for row in rows] == sorted(SITE_SIZES)
    assert [row.training_records for row in rows] == sizes and sizes[0] < sizes[1] < sizes[2]
    assert all(row.epsilon <= 8.0 + 1e-6 for row in rows)
    # each site's q and sigma follow its own count; the site whose records spend the most names the run's epsilon
    worst = max(rows, key=lambda row: row.epsilon)
    assert result.ledger.bounding_site == worst.site and result.ledger.epsilon == pytest.approx(worst.epsilon)
    assert len({row.sample_rate for row in rows}) == 3
    assert result.summary.test.balanced_accuracy >= 0.0


def test_an_iid_run_names_no_sites(tmp_path):
    result = fedray.run([*natural(site_csv(tmp_path), "cluster=inprocess", "fl.rounds=1", "audit.enabled=false",
                                  "privacy=dpsgd", "privacy.epsilon=8"), "fl.partition.scheme=iid"])
    assert result.summary.data.hospital_sites is None and "bounding_site" not in result.ledger
    assert all("site" not in row for row in result.ledger.hospitals)


def test_a_wrong_hospital_count_or_no_site_column_is_one_line(tmp_path):
    csv = site_csv(tmp_path / "with")
    with pytest.raises(FedrayError, match=r"the data has 3 sites \(bari, lyon, oslo\) but fl.num_hospitals=5"):
        deal_data(fedray.compose([*natural(csv), "fl.num_hospitals=5"]), fit_input_map=lambda s: (None, []))
    with pytest.raises(FedrayError, match="has no column 'site'"):
        deal_data(fedray.compose(natural(site_csv(tmp_path / "without", sites=False))),
                  fit_input_map=lambda s: (None, []))


# A generated ISIC 2019 layout: (lesion_id prefix, HAM10000 source) -> images, FLamby's centre sizes scaled down
FED_ISIC = {("BCN_", None): 60, ("HAM_", "vidir_molemax"): 40, ("HAM_", "vidir_modern"): 36,
            ("HAM_", "rosendahl"): 30, ("MSK4", None): 24, ("HAM_", "vienna_dias"): 22}
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def fed_isic_layout(root):
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    truth, metadata, ham, split = [["image", *CLASSES]], [["image", "age_approx", "lesion_id"]], \
        [["lesion_id", "image_id", "dx", "dataset"]], [["image", "center", "fold"]]
    n = 0
    for centre, ((prefix, source), count) in enumerate(FED_ISIC.items()):
        for i in range(count + 1):  # one more per centre, without a lesion_id: FLamby leaves it out
            image = f"ISIC_{n:07d}"
            n += 1
            Image.new("RGB", (10, 10), (20 * centre, 8 * i, 90)).save(root / "ISIC_2019_Training_Input" / f"{image}.jpg")
            label = i % 3
            truth.append([image, *("1.0" if c == label else "0.0" for c in range(9))])
            lesion = "" if i == count else f"{prefix}{n:07d}"
            metadata.append([image, "50", lesion])
            if source is not None:
                ham.append([lesion, image, "mel", source])
            split.append([image, str(centre), "test" if i % 4 == 3 else "train"])
    for name, rows in (("ISIC_2019_Training_GroundTruth.csv", truth), ("ISIC_2019_Training_Metadata.csv", metadata),
                       ("HAM10000_metadata", ham), ("train_test_split", split)):
        (root / name).write_text("\n".join(",".join(row) for row in rows) + "\n")
    return root


def test_fed_isic2019_builds_flambys_six_centres_with_their_exact_counts(tmp_path):
    root = fed_isic_layout(tmp_path / "isic2019")
    cfg = fedray.compose(["data=fed_isic2019", f"data.root={root}", f"data.ham10000_metadata={root}/HAM10000_metadata",
                          f"data.split_file={root}/train_test_split", "data.image_size=8",
                          "fl.partition.scheme=natural", "fl.num_hospitals=6"], run_dir=tmp_path / "run")
    dealt = deal_data(cfg, fit_input_map=lambda shards: (None, []))
    names = ["0_BCN", "1_HAM_vidir_molemax", "2_HAM_vidir_modern", "3_HAM_rosendahl", "4_MSK4", "5_HAM_vienna_dias"]
    for k, (name, count) in enumerate(zip(names, FED_ISIC.values())):
        in_test = sum(1 for i in range(count) if i % 4 == 3)  # the split file's test rows of that centre
        held = len(dealt.train_shards[k]) + len(dealt.val_shards[k])
        assert set(dealt.train_shards[k].sites) == {name} and held == count - in_test, name
    assert len(dealt.splits.test) == sum(sum(1 for i in range(c) if i % 4 == 3) for c in FED_ISIC.values())
    assert dealt.splits.train.class_names == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
