"""The Breast Cancer Wisconsin (diagnostic) table as scikit-learn ships it: ``data=breast_cancer`` (:mod:`.loader`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from fedray.config.checks import free
from fedray.config.schema import DataCommon
from fedray.data.registry import Dataset, register_dataset


@dataclass
class BreastCancerData(DataCommon):
    feature_ranges: Optional[Any] = free()  # {column: [low, high]}


CLASS_NAMES = ("benign", "malignant")

# (column, low, high), scikit-learn's column names and order. Source: the published "Summary
# Statistics" (min, max) in scikit-learn's documentation of the dataset (DESCR). Widening rule, with
# step = 10 ** (floor(log10(published max)) - 1) (one unit of the max's second significant digit):
# low = the published min rounded down to a multiple of step, one step lower if it already is one,
# never below 0; high = the published max rounded up likewise, one step higher if it already is one.
# Every feature is non-negative by definition (lengths, areas, grey-level deviations, ratios of
# them), so a low of 0 is that a-priori floor, not a patient's value. No row is read to build this;
# tests/data/test_declared_ranges.py rederives it from DESCR and checks every row lies inside.
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


BREAST_CANCER = register_dataset(Dataset(
    name="breast_cancer", settings=BreastCancerData,
    loader="fedray.data.datasets.breast_cancer.loader:load_breast_cancer",
    licence="CC BY 4.0 (UCI Machine Learning Repository, Wolberg et al. 1995)", class_names=CLASS_NAMES,
    feature_ranges=PUBLIC_RANGES))
