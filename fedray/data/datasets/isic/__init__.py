"""ISIC skin-cancer images (9 classes, Kaggle "Skin Cancer ISIC"): ``data=isic`` (layout: :mod:`.loader`)."""

from __future__ import annotations

from dataclasses import dataclass

from fedray.config.checks import boolean, choice, path
from fedray.config.schema import DataCommon, ImageWhitening
from fedray.data.registry import Dataset, register_dataset


@dataclass
class IsicData(ImageWhitening, DataCommon):
    root: str = path()
    use_test_folder: bool = boolean()
    on_corrupt: str = choice("skip", "fail")


ISIC = register_dataset(Dataset(
    name="isic", settings=IsicData, loader="fedray.data.datasets.isic.loader:load_isic",
    licence="CC BY-NC 4.0 (the ISIC Archive; non-commercial use, attribution)"))
