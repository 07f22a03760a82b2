"""The Breast Cancer Wisconsin (diagnostic) table, "breast_cancer", as shipped with scikit-learn.

569 patients, 30 numeric features of the cell nuclei in a fine-needle
aspirate image (radius, texture, ..., fractal dimension: the mean, standard
error and worst value of each), and the diagnosis. It comes with
scikit-learn (``sklearn.datasets.load_breast_cancer``), so nothing is
downloaded.

Labels. scikit-learn codes malignant as 0; fedray uses ``y = 1 - target``, so
that label 1 is the condition to detect, as in every fedray table:
``class_names = ("benign", "malignant")``, 212 malignant and 357 benign.
Ids are ``breast_cancer/000123``, the row index in scikit-learn's order.

Feature ranges. scikit-learn documents each feature's minimum and maximum,
but they are computed from these same 569 patients, so using them as
scaling ranges reveals something about the data: ``feature_ranges`` are the
data's own min and max, flagged ``ranges_public=False``. In a real deployment
the ranges would come from clinical knowledge (e.g. a nucleus radius in
micrometres), fixed before any patient is seen; a CSV with such ranges goes
through :func:`fedray.data.table_csv.load_table`, and ``data.feature_ranges``
declares them here too (``{column: [low, high]}``, every column: the ranges
are then public and the DP note about them goes away).

Consent. The dataset records none, so ``Loaded.consent`` is None (every
record counts as consented unless ``data.consent_list`` says otherwise).
"""

from __future__ import annotations


import numpy as np
import sklearn.datasets
import torch

from fedray.data.types import Loaded, Records
from fedray.config.schema import BreastCancerData
from fedray.data.table_csv import feature_ranges

CLASS_NAMES = ("benign", "malignant")


def load_breast_cancer(data_cfg: BreastCancerData, seed: int) -> Loaded:
    """All 569 records; ``seed`` is unused (the table is fixed, the split draws from it later)."""
    bunch = sklearn.datasets.load_breast_cancer()
    inputs = bunch.data.astype(np.float32)
    names = tuple(str(name) for name in bunch.feature_names)
    ranges, public = feature_ranges(inputs, names, data_cfg.feature_ranges or {})
    n = len(inputs)
    records = Records(
        inputs=torch.from_numpy(inputs),
        labels=(1 - bunch.target).astype(np.int64),
        ids=np.array([f"breast_cancer/{i:06d}" for i in range(n)], dtype=object),
        class_names=CLASS_NAMES,
        feature_names=names,
        feature_ranges=ranges,
        ranges_public=public,
    )
    return Loaded(
        records=records,
        consent=None,
        skipped_files=(),
        source=f"breast_cancer (scikit-learn's Wisconsin diagnostic table, {n} records, "
               f"{'declared public ranges' if public else 'ranges from the data'})",
    )
