"""Images listed in a CSV, each with its label and, for data held by sites, its site: ``data=image_csv``
(columns and layout: :mod:`.loader`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fedray.config.checks import choice, free, path, text
from fedray.config.schema import DataCommon, ImageWhitening
from fedray.data.registry import Dataset, register_dataset


@dataclass
class ImageCsvData(ImageWhitening, DataCommon):
    root: Optional[str] = path(nullable=True)  # the folder image paths are relative to; null: the CSV's folder
    path: str = path()  # the CSV (declared after root: from here on `path` names this field)
    path_column: str = text()
    label_column: str = text()
    site_column: Optional[str] = free()  # null: the records are pooled, not held by sites
    on_corrupt: str = choice("skip", "fail")


IMAGE_CSV = register_dataset(Dataset(
    name="image_csv", settings=ImageCsvData, loader="fedray.data.datasets.image_csv.loader:load_image_csv",
    licence="the user's own images: their licence and consent are the user's to state"))
