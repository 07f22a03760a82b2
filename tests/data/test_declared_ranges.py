"""Feature ranges the bundled tables ship are public: declared, with a source, never read from the rows.

A range taken from the rows is some patient's exact value; under DP the
mechanisms refuse such a table (``ranges_public=False``). These tests check
that the bundled datasets are not such tables and that a CSV is one exactly
when a feature lacks a declared range (``data.feature_ranges``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import sklearn.datasets
import torch

from conftest import data_cfg

import fedray.data.datasets.breast_cancer.loader as breast_cancer
from fedray.data.datasets.breast_cancer import PUBLIC_RANGES
from fedray.data.datasets.breast_cancer.loader import load_breast_cancer
from fedray.data.datasets.ehr_synthetic import FEATURES
from fedray.data.datasets.ehr_synthetic.loader import load_ehr_synthetic
from fedray.data.feature_scaling import FeatureScaling
from fedray.data.datasets.table.loader import load_table
from fedray.data.declared_ranges import RANGES_KEY

# -- breast_cancer ------------------------------------------------------------------


def _published_summary() -> list[tuple[float, float]]:
    """The (min, max) rows of DESCR's "Summary Statistics" table, in scikit-learn's feature order."""
    descr = sklearn.datasets.load_breast_cancer().DESCR
    rows = re.findall(r"^[a-z ]+\((?:mean|standard error|worst)\):\s+(\S+)\s+(\S+)\s*$", descr, flags=re.M)
    return [(float(low), float(high)) for low, high in rows]


def _widened(low: float, high: float) -> tuple[float, float]:
    """breast_cancer.py's widening rule, rederived: outward to the max's second significant digit."""
    step = 10.0 ** (math.floor(math.log10(high)) - 1)
    wide_low = math.floor(round(low / step, 9)) * step
    if low > 0 and wide_low >= low:
        wide_low -= step
    wide_high = math.ceil(round(high / step, 9)) * step
    if wide_high <= high:
        wide_high += step
    return max(wide_low, 0.0), wide_high


def test_breast_cancer_ranges_are_the_published_table_widened():
    published = _published_summary()
    assert len(published) == 30
    names = tuple(str(n) for n in sklearn.datasets.load_breast_cancer().feature_names)
    assert tuple(name for name, _, _ in PUBLIC_RANGES) == names
    for (name, low, high), pub in zip(PUBLIC_RANGES, published):
        assert (low, high) == pytest.approx(_widened(*pub), abs=1e-12), name


def test_breast_cancer_loads_with_public_ranges_that_hold_every_row_and_equal_none():
    loaded = load_breast_cancer(data_cfg("breast_cancer"), seed=0)
    r = loaded.records
    assert r.ranges_public and "public ranges" in loaded.source
    assert r.feature_ranges.tolist() == [[low, high] for _, low, high in PUBLIC_RANGES]
    x = r.inputs.double().numpy()
    low, high = r.feature_ranges.T
    assert (x <= high).all() and (x >= low).all()
    assert (x < high).all()  # no high is a patient's value
    # No low is either, except the a-priori floor 0 of a non-negative feature that some nuclei reach.
    touching = (x == low).any(axis=0)
    assert (low[touching] == 0).all()


def _drop_extremes(monkeypatch) -> np.ndarray:
    """Make the loader see the table without every row that holds some feature's min or max; those rows."""
    original = sklearn.datasets.load_breast_cancer
    full = original()
    extremes = np.unique(np.concatenate([full.data.argmax(axis=0), full.data.argmin(axis=0)]))
    keep = np.setdiff1d(np.arange(len(full.data)), extremes)

    def without_extremes(*args, **kwargs):
        bunch = original(*args, **kwargs)
        bunch.data, bunch.target = bunch.data[keep], bunch.target[keep]
        return bunch

    monkeypatch.setattr(breast_cancer.sklearn.datasets, "load_breast_cancer", without_extremes)
    return extremes


def test_breast_cancer_ranges_do_not_move_when_the_extreme_patients_leave(monkeypatch):
    before = load_breast_cancer(data_cfg("breast_cancer"), seed=0).records
    extremes = _drop_extremes(monkeypatch)
    after = load_breast_cancer(data_cfg("breast_cancer"), seed=0).records
    assert len(after) == 569 - len(extremes) and len(extremes) > 10
    assert not np.array_equal(before.inputs.numpy().max(axis=0), after.inputs.numpy().max(axis=0))
    assert np.array_equal(before.feature_ranges, after.feature_ranges) and after.ranges_public


def test_breast_cancer_declared_ranges_replace_their_columns_only():
    declared = {"mean radius": [0.0, 50.0]}
    r = load_breast_cancer(data_cfg("breast_cancer", feature_ranges=declared), seed=0).records
    assert r.ranges_public
    assert r.feature_ranges[0].tolist() == [0.0, 50.0]
    assert r.feature_ranges[1:].tolist() == [[low, high] for _, low, high in PUBLIC_RANGES[1:]]


# -- ehr_synthetic ------------------------------------------------------------------


def test_ehr_ranges_are_the_generator_constants_for_any_rows():
    generated = [load_ehr_synthetic(data_cfg("ehr_synthetic", num_records=n), seed).records
                 for n, seed in ((2000, 0), (2000, 1), (3, 7))]
    constants = [[low, high] for _, low, high in FEATURES]
    for r in generated:
        assert r.ranges_public and r.feature_ranges.tolist() == constants
        x = r.inputs.double().numpy()
        assert (x >= r.feature_ranges[:, 0]).all() and (x <= r.feature_ranges[:, 1]).all()


# -- table (a user's CSV) -------------------------------------------------------------

ROWS = "age,bmi,outcome\n34,22.5,0\n71,31.0,1\n55,27.2,1\n62,24.0,0\n48,29.9,0\n95,41.0,1\n"


def _csv(tmp_path, text=ROWS, **cfg):
    path = tmp_path / "patients.csv"
    path.write_text(text)
    return load_table(data_cfg("table", **{"path": str(path), "label_column": "outcome", **cfg}), seed=0)


def test_csv_without_declared_ranges_is_not_public_and_says_where_to_declare_them(tmp_path):
    loaded = _csv(tmp_path)
    r = loaded.records
    assert not r.ranges_public
    assert r.feature_ranges.tolist() == [[34, 95], [22.5, 41.0]]  # the patients' own extremes
    assert RANGES_KEY == "data.feature_ranges" and RANGES_KEY in loaded.source and "age, bmi" in loaded.source


def test_csv_with_some_ranges_declared_is_not_public(tmp_path):
    loaded = _csv(tmp_path, feature_ranges={"age": [18, 90]})
    assert not loaded.records.ranges_public and "1 of 2 features (bmi)" in loaded.source


def test_csv_with_every_range_declared_is_public_and_clipped_to_them(tmp_path):
    declared = {"age": [18, 90], "bmi": [15, 40]}
    loaded = _csv(tmp_path, feature_ranges=declared)
    r = loaded.records
    assert r.ranges_public and r.feature_ranges.tolist() == [[18, 90], [15, 40]]
    assert "declared public ranges" in loaded.source
    # The records keep their values; scaling clips the ones outside (age 95, bmi 41) to the range's end.
    assert r.inputs[5].tolist() == [95.0, 41.0]
    y = FeatureScaling.from_ranges(r.feature_ranges).apply(r.inputs)
    assert torch.equal(y[5], torch.tensor([1.0, 1.0]))
    assert y[0].tolist() == pytest.approx([(34 - 18) / 72, (22.5 - 15) / 25])
    # Independent of the rows: without the patient holding both maxima the ranges stay.
    without_max = _csv(tmp_path, ROWS.rsplit("95,", 1)[0], feature_ranges=declared).records
    assert np.array_equal(without_max.feature_ranges, r.feature_ranges) and without_max.ranges_public
