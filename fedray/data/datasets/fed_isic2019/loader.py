"""ISIC 2019's training set as six centres, as FLamby's Fed-ISIC2019 derives them.

Expected layout (the ISIC 2019 challenge's download, plus HAM10000's metadata)::

    <data.root>/ISIC_2019_Training_Input/<image>.jpg
    <data.root>/ISIC_2019_Training_GroundTruth.csv    image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    <data.root>/ISIC_2019_Training_Metadata.csv       image,...,lesion_id,...
    <data.ham10000_metadata>                          image_id,...,dataset (HAM10000's source of each image)

The centre of an image (FLamby, ``download_isic.py``): the first four
characters of its ``lesion_id`` (``BCN_``, ``HAM_``, ``MSK4``), and for
HAM10000's images the source HAM10000's metadata names (``vidir_molemax``,
``vidir_modern``, ``rosendahl``, ``vienna_dias``). Images without a
``lesion_id`` have no known centre and are left out, as FLamby leaves them
out. The six centres are named ``<k>_<centre>`` with FLamby's index ``k``, so
hospital ``k`` of a natural partition is FLamby's centre ``k``:

    0_BCN, 1_HAM_vidir_molemax, 2_HAM_vidir_modern, 3_HAM_rosendahl, 4_MSK4, 5_HAM_vienna_dias

The label is the ground truth's one diagnosis, among the 8 that have
training images. With ``data.split_file`` (FLamby's ``train_test_split``,
columns ``image``, ``fold``), its ``test`` rows are the test set and the
rest is split into train and validation; without it, the split is cut from
all images, stratified by (centre, class).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedray.data.datasets.fed_isic2019 import CLASSES, FedIsic2019Data
from fedray.data.image_folder import decode_images
from fedray.data.types import Loaded, Records
from fedray.errors import FedrayError

INPUT, TRUTH, METADATA = ("ISIC_2019_Training_Input", "ISIC_2019_Training_GroundTruth.csv",
                          "ISIC_2019_Training_Metadata.csv")
CENTRES = {"BCN_": "0_BCN", "HAM_vidir_molemax": "1_HAM_vidir_molemax", "HAM_vidir_modern": "2_HAM_vidir_modern",
           "HAM_rosendahl": "3_HAM_rosendahl", "MSK4": "4_MSK4", "HAM_vienna_dias": "5_HAM_vienna_dias"}


def load_fed_isic2019(data_cfg: FedIsic2019Data, seed: int) -> Loaded:
    """Decode the images that have a centre, once; ``seed`` is unused: decoding is deterministic."""
    root = Path(data_cfg.root)
    for needed in (root / INPUT, root / TRUTH, root / METADATA, Path(data_cfg.ham10000_metadata)):
        if not needed.exists():
            raise FedrayError(f"'{needed}' does not exist: point data.root at the ISIC 2019 training download "
                              f"({INPUT}/, {TRUTH}, {METADATA}) and data.ham10000_metadata at HAM10000_metadata")
    table = _centres(root, Path(data_cfg.ham10000_metadata))
    listed = [(f"{INPUT}/{image}.jpg", label) for image, label in zip(table["image"], table["label"])]
    decoded = decode_images(root, listed, image_size=data_cfg.image_size, on_corrupt=data_cfg.on_corrupt)
    records = Records(inputs=decoded.images, labels=decoded.labels, ids=decoded.ids, class_names=CLASSES,
                      sites=np.asarray(table["centre"], dtype=object)[decoded.kept])
    source = f"fed_isic2019:{root} ({len(records)} images with a centre)"
    if data_cfg.split_file is None:
        return Loaded(records=records, consent=None, skipped_files=decoded.skipped, source=source)
    test_images = _test_images(Path(data_cfg.split_file))
    is_test = np.isin(np.asarray(table["image"], dtype=object)[decoded.kept], test_images)
    return Loaded(records=records.subset(np.flatnonzero(~is_test)), consent=None, skipped_files=decoded.skipped,
                  source=f"{source}; FLamby's train/test split", test=records.subset(np.flatnonzero(is_test)))


def _centres(root: Path, ham_metadata: Path) -> pd.DataFrame:
    """image, label, centre of every image with a ``lesion_id`` and a diagnosis among :data:`CLASSES`."""
    truth = pd.read_csv(root / TRUTH)
    metadata = pd.read_csv(root / METADATA)
    missing = [c for c in ("image", *CLASSES) if c not in truth.columns] or \
        [c for c in ("image", "lesion_id") if c not in metadata.columns]
    if missing:
        raise FedrayError(f"the ISIC 2019 CSVs have no column {missing[0]!r}: use the challenge's own "
                          f"{TRUTH} and {METADATA}")
    ham = pd.read_csv(ham_metadata).rename(columns={"image_id": "image"})
    if not {"image", "dataset"} <= set(ham.columns):
        raise FedrayError(f"{ham_metadata} has no image_id and dataset columns: use HAM10000's own metadata file")
    table = metadata[["image", "lesion_id"]].merge(truth[["image", *CLASSES]], on="image", how="inner")
    table = table[table["lesion_id"].notna()].merge(ham[["image", "dataset"]], on="image", how="left")
    prefix = table["lesion_id"].astype(str).str[:4]
    key = np.where(prefix == "HAM_", prefix + table["dataset"].astype(str), prefix)
    table = table.assign(centre=[CENTRES.get(k, k) for k in key],
                         label=np.argmax(table[list(CLASSES)].to_numpy(), axis=1),
                         diagnosed=table[list(CLASSES)].to_numpy().max(axis=1) > 0)
    return table[table["diagnosed"]].reset_index(drop=True)


def _test_images(split_file: Path) -> np.ndarray:
    split = pd.read_csv(split_file)
    if not {"image", "fold"} <= set(split.columns):
        raise FedrayError(f"{split_file} has no image and fold columns: use FLamby's train_test_split file")
    return np.asarray(split.loc[split["fold"] == "test", "image"], dtype=object)
