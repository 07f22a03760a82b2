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

Feature ranges. :data:`PUBLIC_RANGES`, a constant table, never the rows
loaded at run time. Source: the "Summary Statistics" table of minima and
maxima in the dataset's published documentation, as scikit-learn ships it
(``load_breast_cancer().DESCR``: fixed text, printed in scikit-learn's user
guide, not computed when fedray runs), widened outward to round numbers so
that no bound is a patient's exact value (rule at :data:`PUBLIC_RANGES`).
That table was computed once from these 569 patients, long before any fedray
run, and is public; fedray treats it as public side information, as one
treats a published data dictionary, so ``ranges_public=True``. A stricter deployment would take the ranges from
clinical knowledge (a nucleus radius in micrometres) and declare them in
``data.feature_ranges`` (``{column: [low, high]}``; a column given there
replaces its row of the table). Values outside a range are clipped when the
rows are scaled (:class:`~fedray.data.feature_scaling.FeatureScaling`).

Consent. The dataset records none, so ``Loaded.consent`` is None (every
record counts as consented unless ``data.consent_list`` says otherwise).
"""

from __future__ import annotations

import numpy as np
import sklearn.datasets
import torch

from fedray.data.datasets.breast_cancer import CLASS_NAMES, PUBLIC_RANGES, BreastCancerData
from fedray.data.declared_ranges import feature_ranges
from fedray.data.types import Loaded, Records
from fedray.errors import FedrayError


def load_breast_cancer(data_cfg: BreastCancerData, seed: int) -> Loaded:
    """All 569 records; ``seed`` is unused (the table is fixed, the split draws from it later)."""
    bunch = sklearn.datasets.load_breast_cancer()
    inputs = bunch.data.astype(np.float32)
    names = tuple(str(name) for name in bunch.feature_names)
    table = {name: (low, high) for name, low, high in PUBLIC_RANGES}
    if set(names) != set(table):
        differing = ", ".join(sorted(set(names) ^ set(table)))
        raise FedrayError(
            f"scikit-learn's breast cancer columns differ from fedray's table of public ranges ({differing}): "
            "install a scikit-learn version pyproject.toml allows")
    ranges, public = feature_ranges(inputs, names, {**table, **(data_cfg.feature_ranges or {})})
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
               f"{'declared' if data_cfg.feature_ranges else 'published'} public ranges)",
    )
