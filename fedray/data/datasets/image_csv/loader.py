"""Images listed in a CSV: one row per image, its path, its label and (optionally) its site.

Expected layout::

    <data.path>                a CSV with a header row, e.g.
        path,label,site
        centre_a/img_0001.jpg,melanoma,centre_a
        centre_b/img_0412.jpg,nevus,centre_b
    <data.root>/<path>         each image (data.root defaults to the CSV's folder)

Class names are the sorted distinct labels, so label ``c`` means the same
class on every machine. The site column (``data.site_column``) names the
site that holds each image: with ``fl.partition.scheme=natural`` each site
is a hospital (:mod:`fedray.data.partition`), and the split keeps every
site's share of each class (:func:`fedray.data.splits.split_strata`).
Record ids are the paths as the CSV writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedray.data.datasets.image_csv import ImageCsvData
from fedray.data.image_folder import decode_images
from fedray.data.types import Loaded, Records
from fedray.errors import FedrayError


def load_image_csv(data_cfg: ImageCsvData, seed: int) -> Loaded:
    """Decode every listed image once; ``seed`` is unused: decoding is deterministic."""
    csv = Path(data_cfg.path)
    if not csv.is_file():
        raise FedrayError(f"data.path '{csv}' does not exist: point it at a CSV of path,label[,site] rows")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    wanted = [data_cfg.path_column, data_cfg.label_column] + ([data_cfg.site_column] if data_cfg.site_column else [])
    missing = [column for column in wanted if column not in table.columns]
    if missing:
        raise FedrayError(f"{csv} has no column {missing[0]!r} (it has {', '.join(table.columns)}): set "
                          "data.path_column, data.label_column and data.site_column to its column names")
    if table.empty:
        raise FedrayError(f"{csv} lists no images: add one row per image")
    empty = [column for column in wanted if (table[column].str.strip() == "").any()]
    if empty:
        row = int(np.flatnonzero(table[empty[0]].str.strip() == "")[0]) + 2  # 1-based, after the header
        raise FedrayError(f"{csv} line {row} has an empty {empty[0]!r}: fill it in or remove the row")
    root = Path(data_cfg.root) if data_cfg.root else csv.parent
    class_names = tuple(sorted(set(table[data_cfg.label_column])))
    label_of = {name: c for c, name in enumerate(class_names)}
    listed = [(path, label_of[label]) for path, label in zip(table[data_cfg.path_column], table[data_cfg.label_column])]
    decoded = decode_images(root, listed, image_size=data_cfg.image_size, on_corrupt=data_cfg.on_corrupt)
    sites = np.asarray(table[data_cfg.site_column], dtype=object)[decoded.kept] if data_cfg.site_column else None
    described = f"image_csv:{csv}" + (f", {len(set(sites))} sites" if sites is not None else "")
    records = Records(inputs=decoded.images, labels=decoded.labels, ids=decoded.ids, class_names=class_names,
                      sites=sites)
    return Loaded(records=records, consent=None, skipped_files=decoded.skipped, source=described)
