"""ISIC 2019 as six centres (FLamby's Fed-ISIC2019): ``data=fed_isic2019`` (layout and centres: :mod:`.loader`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fedray.config.checks import choice, path
from fedray.config.schema import DataCommon, ImageWhitening
from fedray.data.registry import Dataset, register_dataset

# The 8 diagnoses with training images, in the ground truth's column order (its 9th, UNK, has none).
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")


@dataclass
class FedIsic2019Data(ImageWhitening, DataCommon):
    root: str = path()  # ISIC_2019_Training_Input/ and the ground-truth and metadata CSVs
    ham10000_metadata: str = path()  # HAM10000_metadata: which of HAM10000's four sources each image came from
    split_file: Optional[str] = path(nullable=True)  # FLamby's train_test_split (image,...,center,fold); null: cut one
    on_corrupt: str = choice("skip", "fail")


FED_ISIC2019 = register_dataset(Dataset(
    name="fed_isic2019", settings=FedIsic2019Data,
    loader="fedray.data.datasets.fed_isic2019.loader:load_fed_isic2019", class_names=CLASSES,
    licence="CC BY-NC 4.0 (ISIC 2019: BCN_20000, HAM10000, MSK; non-commercial use, attribution)"))
