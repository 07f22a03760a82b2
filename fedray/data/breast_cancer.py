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

from fedray.data.types import Loaded, Records
from fedray.config.schema import BreastCancerData
from fedray.data.table_csv import feature_ranges
from fedray.errors import FedrayError

CLASS_NAMES = ("benign", "malignant")

# (column, low, high), scikit-learn's column names and order. Source: the published "Summary
# Statistics" (min, max) in scikit-learn's documentation of the dataset (DESCR). Widening rule, with
# step = 10 ** (floor(log10(published max)) - 1) (one unit of the max's second significant digit):
# low = the published min rounded down to a multiple of step, one step lower if it already is one,
# never below 0; high = the published max rounded up likewise, one step higher if it already is one.
# Every feature is non-negative by definition (lengths, areas, grey-level deviations, ratios of
# them), so a low of 0 is that a-priori floor, not a patient's value. No row is read to build this;
# tests/test_public_ranges.py rederives it from DESCR and checks every row lies inside.
PUBLIC_RANGES = (
    ("mean radius", 6.0, 29.0),
    ("mean texture", 9.0, 40.0),
    ("mean perimeter", 40.0, 190.0),
    ("mean area", 100.0, 2600.0),
    ("mean smoothness", 0.05, 0.17),
    ("mean compactness", 0.01, 0.35),
    ("mean concavity", 0.0, 0.43),
    ("mean concave points", 0.0, 0.21),
    ("mean symmetry", 0.1, 0.31),
    ("mean fractal dimension", 0.049, 0.098),
    ("radius error", 0.1, 2.9),
    ("texture error", 0.3, 4.9),
    ("perimeter error", 0.0, 22.0),
    ("area error", 0.0, 550.0),
    ("smoothness error", 0.001, 0.032),
    ("compactness error", 0.0, 0.14),
    ("concavity error", 0.0, 0.4),
    ("concave points error", 0.0, 0.054),
    ("symmetry error", 0.007, 0.08),
    ("fractal dimension error", 0.0, 0.031),
    ("worst radius", 7.0, 37.0),
    ("worst texture", 12.0, 50.0),
    ("worst perimeter", 50.0, 260.0),
    ("worst area", 100.0, 4300.0),
    ("worst smoothness", 0.07, 0.23),
    ("worst compactness", 0.0, 1.1),
    ("worst concavity", 0.0, 1.3),
    ("worst concave points", 0.0, 0.3),
    ("worst symmetry", 0.15, 0.67),
    ("worst fractal dimension", 0.05, 0.21),
)


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
