"""The ISIC skin-cancer image set (9 classes, Kaggle "Skin Cancer ISIC").

Expected layout, as downloaded::

    <data.root>/Train/<class name>/*.jpg     (.jpeg and .png also read)
    <data.root>/Test/<class name>/*.jpg      optional

Class names are the sorted ``Train/`` sub-folder names, so label ``c`` means
the same class on every machine. Splits (made by :func:`fedray.data.splits.load_splits`):

* default: ``Train/`` is split stratified by ``data.split`` (70/10/20);
* ``data.use_test_folder: true`` and ``Test/`` present: ``Test/`` is the test
  set and ``Train/`` is split into train/val in the ratio
  ``split.train : split.val`` (70:10 -> 87.5/12.5). ``Test/`` may hold fewer
  classes than ``Train/`` but no others.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedray.data.datasets.isic import IsicData
from fedray.data.image_folder import class_folders, decode_images, list_images
from fedray.data.types import Loaded, Records
from fedray.errors import FedrayError

log = logging.getLogger(__name__)

LAYOUT_HINT = "a folder holding Train/<class>/*.jpg"


def load_isic(data_cfg: IsicData, seed: int) -> Loaded:
    """Decode ``data.root`` once; see the module docstring. ``seed`` is unused: decoding is deterministic."""
    root = _root(data_cfg.root)
    image_size = data_cfg.image_size
    on_corrupt = data_cfg.on_corrupt

    class_names = class_folders(root / "Train")
    if not class_names:
        raise FedrayError(f"'{root / 'Train'}' has no class folders: put images in Train/<class name>/")
    train_all, skipped = _decode(root, "Train", class_names, image_size, on_corrupt)
    _require_every_class(train_all, root)

    test_dir = root / "Test"
    if data_cfg.use_test_folder and test_dir.is_dir():
        extra = set(class_folders(test_dir)) - set(class_names)
        if extra:
            raise FedrayError(
                f"Test/ has classes {sorted(extra)} that Train/ lacks: rename or remove them in '{test_dir}'"
            )
        test, test_skipped = _decode(root, "Test", class_names, image_size, on_corrupt)
        return Loaded(records=train_all, consent=None, skipped_files=skipped + test_skipped,
                      source=f"isic:{root} (Test/ as test)", test=test)
    if data_cfg.use_test_folder:
        log.warning("data.use_test_folder is true but %s does not exist: splitting Train/ instead", test_dir)
    return Loaded(records=train_all, consent=None, skipped_files=skipped, source=f"isic:{root}")


def _root(value: object) -> Path:
    if value in (None, "", "???"):
        raise FedrayError(f"data.root is not set: pass data.root=PATH to {LAYOUT_HINT}")
    root = Path(str(value)).expanduser().resolve()
    if not root.is_dir():
        raise FedrayError(f"data.root '{root}' does not exist: point data.root at {LAYOUT_HINT}")
    if not (root / "Train").is_dir():
        raise FedrayError(f"data.root '{root}' has no Train/ folder: point data.root at {LAYOUT_HINT}")
    return root


def _decode(
    root: Path, part: str, class_names: tuple[str, ...], image_size: int, on_corrupt: str
) -> tuple[Records, tuple[str, ...]]:
    records = list_images(root, root / part, class_names)
    decoded = decode_images(root, records, image_size=image_size, on_corrupt=on_corrupt)
    return Records(inputs=decoded.images, labels=decoded.labels, ids=decoded.ids, class_names=class_names), \
        decoded.skipped


def _require_every_class(data: Records, root: Path) -> None:
    """After skipping unreadable files, each Train/ class must keep an image."""
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    for name, count in zip(data.class_names, counts):
        if count == 0:
            raise FedrayError(
                f"every image in '{root / 'Train' / name}' is unreadable: replace them or remove the folder"
            )
