"""Loaders: ISIC folder layout on tiny fake folders, the synthetic set, dispatch, flips."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from conftest import data_cfg

from fedray.config import compose_config
from fedray.data.augment import random_flips
from fedray.data.splits import load_splits
from fedray.data.datasets.synthetic.loader import make_synthetic
from fedray.errors import FedrayError

CLASSES = ("benign", "melanoma", "nevus")


def _write_images(folder, classes=CLASSES, per_class=10, suffix=".jpg"):
    """Small images of varying sizes, coloured by class so labels are checkable."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (80 * c, 40 + 10 * i, 200 - 60 * c)
            Image.new("RGB", (20 + i, 14 + 2 * i), colour).save(folder / name / f"img_{i:02d}{suffix}")


def _isic_cfg(root, **overrides):
    return data_cfg("isic", **{"root": str(root), "image_size": 12, **overrides})


@pytest.fixture
def isic_root(tmp_path):
    _write_images(tmp_path / "Train")
    return tmp_path


def test_isic_shapes_labels_ids_and_class_order(isic_root):
    splits = load_splits(_isic_cfg(isic_root), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 3, 6)
    assert splits.train.class_names == CLASSES
    assert splits.train.inputs.shape[1:] == (3, 12, 12) and splits.train.inputs.dtype == torch.uint8
    assert splits.train.labels.dtype == np.int64
    everything = np.concatenate([splits.train.ids, splits.val.ids, splits.test.ids])
    assert len(set(everything)) == 30 and "Train/melanoma/img_03.jpg" in everything
    for data in (splits.train, splits.test):
        folder_label = [CLASSES.index(i.split("/")[1]) for i in data.ids]
        assert np.array_equal(data.labels, folder_label)
        red = data.inputs[:, 0].float().mean(dim=(1, 2))  # class c was painted with red = 80 c
        assert torch.allclose(red, torch.from_numpy(80.0 * data.labels).float(), atol=3)
    assert splits.skipped_files == () and str(isic_root) in splits.source


def test_isic_reads_png_and_uppercase_suffixes(tmp_path):
    _write_images(tmp_path / "Train", classes=("a", "b"), per_class=5, suffix=".PNG")
    splits = load_splits(_isic_cfg(tmp_path, split={"train": 0.6, "val": 0.2, "test": 0.2}), seed=0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 10


def test_isic_uses_test_folder_when_asked(isic_root):
    _write_images(isic_root / "Test", classes=("benign", "nevus"), per_class=3)
    splits = load_splits(_isic_cfg(isic_root, use_test_folder=True), seed=0)
    assert len(splits.test) == 6 and all(i.startswith("Test/") for i in splits.test.ids)
    assert set(splits.test.labels) == {0, 2}  # labels follow Train/'s class order
    assert len(splits.train) + len(splits.val) == 30 and len(splits.val) == 4  # 70:10 of 30
    assert "Test/ as test" in splits.source


def test_isic_test_folder_with_unknown_class_is_an_error(isic_root):
    _write_images(isic_root / "Test", classes=("unicorn",), per_class=2)
    with pytest.raises(FedrayError, match="unicorn"):
        load_splits(_isic_cfg(isic_root, use_test_folder=True), seed=0)


def test_corrupt_image_is_skipped_logged_and_recorded(isic_root, caplog):
    (isic_root / "Train" / "nevus" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        splits = load_splits(_isic_cfg(isic_root), seed=0)
    assert splits.skipped_files == ("Train/nevus/broken.jpg",)
    assert "broken.jpg" in caplog.text
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30


def test_corrupt_image_fails_when_asked(isic_root):
    (isic_root / "Train" / "nevus" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(FedrayError, match="broken.jpg"):
        load_splits(_isic_cfg(isic_root, on_corrupt="fail"), seed=0)


@pytest.mark.parametrize("root", [None, "", "???"])
def test_unset_root_says_how_to_set_it(root):
    with pytest.raises(FedrayError, match="data.root is not set"):
        load_splits(data_cfg("isic", root=root), seed=0)


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(FedrayError, match="does not exist"):
        load_splits(_isic_cfg(tmp_path / "nowhere"), seed=0)


def test_root_without_train_folder_is_an_error(tmp_path):
    _write_images(tmp_path / "images")
    with pytest.raises(FedrayError, match="no Train/ folder"):
        load_splits(_isic_cfg(tmp_path), seed=0)


def test_train_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "Train").mkdir()
    with pytest.raises(FedrayError, match="no class folders"):
        load_splits(_isic_cfg(tmp_path), seed=0)


def test_empty_class_folder_is_named(isic_root):
    (isic_root / "Train" / "empty_class").mkdir()
    with pytest.raises(FedrayError, match="empty_class"):
        load_splits(_isic_cfg(isic_root), seed=0)


def test_tiny_image_size_is_an_error_before_any_image_is_read(isic_root):
    with pytest.raises(FedrayError, match=r"data.image_size=4 is not valid: use an integer >= 8"):
        compose_config(["data=isic", f"data.root={isic_root}", "data.image_size=4"])


@pytest.mark.parametrize("override, value", [("data=cifar", "cifar"), ("data.whitening=imagenet", "imagenet"),
                                             ("data.augment=mixup", "mixup")])
def test_unknown_choices_list_the_known_ones(override, value):
    with pytest.raises(FedrayError, match=value):
        compose_config([override])


def test_synthetic_is_deterministic_balanced_and_shaped():
    a = load_splits(data_cfg("synthetic"), seed=0)
    b = load_splits(data_cfg("synthetic"), seed=0)
    assert torch.equal(a.train.inputs, b.train.inputs) and np.array_equal(a.test.ids, b.test.ids)
    assert not torch.equal(a.train.inputs, load_splits(data_cfg("synthetic"), seed=1).train.inputs)
    assert a.train.inputs.shape[1:] == (3, 32, 32)
    assert a.train.class_names == tuple(f"synthetic_class_{c}" for c in range(4))
    for data in (a.train, a.val, a.test):
        counts = np.bincount(data.labels, minlength=4)
        assert counts.max() - counts.min() <= 1
    assert a.test.ids[0].startswith("synthetic/")


def test_synthetic_signal_is_learnable_but_not_trivial():
    def features(data):
        return torch.nn.functional.avg_pool2d(data.inputs.float() / 255, 4).flatten(1).numpy()

    train = make_synthetic(num_classes=4, samples_per_class=60, image_size=32, noise=0.3, seed=0)
    test = make_synthetic(num_classes=4, samples_per_class=30, image_size=32, noise=0.3, seed=1)
    accuracy = LogisticRegression(max_iter=1000).fit(features(train), train.labels).score(features(test), test.labels)
    assert 0.6 < accuracy < 0.99  # chance is 0.25


def test_random_flips_flip_whole_images_and_follow_the_generator():
    batch = torch.arange(64 * 3 * 4 * 4, dtype=torch.float32).view(64, 3, 4, 4)
    out = random_flips(batch, torch.Generator().manual_seed(0))
    same = random_flips(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    variants = [batch, batch.flip(-1), batch.flip(-2), batch.flip(-1).flip(-2)]
    seen = {next(k for k, v in enumerate(variants) if torch.equal(out[i], v[i])) for i in range(64)}
    assert seen == {0, 1, 2, 3}  # every flip combination occurs in 64 draws
