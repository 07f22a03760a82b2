"""A table's feature ranges: declared ones are public, ones read from the rows are a patient's values.

:class:`~fedray.data.feature_scaling.FeatureScaling` maps each feature's range
``[low, high]`` onto ``[0, 1]``. A range fixed before seeing the data
(clinical knowledge, a data dictionary, a dataset's published table: its
folder's metadata) is declared in ``data.feature_ranges: {column: [low, high]}``
(:data:`RANGES_KEY`) and is public. A feature without one gets the data's own
min and max, which are single patients' exact values: the table is then
``ranges_public=False``, which every DP mechanism refuses.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedray.errors import FedrayError

# The config key that declares public feature ranges (tables and breast_cancer), {column: [low, high]}.
RANGES_KEY = "data.feature_ranges"


def feature_ranges(inputs: np.ndarray, names: tuple[str, ...], given: Mapping) -> tuple[np.ndarray, bool]:
    """``[D, 2]`` float64 ranges (given ones, else the data's min/max) and whether all were given.

    Only the all-given case is public: a data-derived bound is one patient's exact value.
    """
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise FedrayError(
            f"data.feature_ranges names '{unknown[0]}', which is not a feature column (features: {', '.join(names)})"
            ": fix or remove that entry"
        )
    # Ranges of the stored float32 values, so every input lies inside a data-derived range exactly.
    as_stored = inputs.astype(np.float64)
    ranges = np.stack([as_stored.min(axis=0), as_stored.max(axis=0)], axis=1)
    for j, name in enumerate(names):
        if name in given:
            ranges[j] = _one_range(name, given[name])
        elif ranges[j, 1] <= ranges[j, 0]:
            raise FedrayError(
                f"feature column '{name}' is constant ({ranges[j, 0]:g}): give data.feature_ranges.{name} or remove it"
            )
    return ranges, set(names) <= set(given)


def ranges_note(names: tuple[str, ...], given: Mapping) -> str:
    """``declared public ranges``, or which columns took their range from the data and where to declare it."""
    undeclared = [name for name in names if name not in given]
    if not undeclared:
        return "declared public ranges"
    shown = ", ".join(undeclared[:5]) + (f" and {len(undeclared) - 5} more" if len(undeclared) > 5 else "")
    return (f"ranges from the data for {len(undeclared)} of {len(names)} features ({shown}): "
            f"not public; declare them in {RANGES_KEY}")


def _one_range(name: str, pair: object) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise FedrayError(f"data.feature_ranges.{name} is {pair!r}: give it as [low, high]") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise FedrayError(f"data.feature_ranges.{name} is [{low:g}, {high:g}]: high must be finite and above low")
    return low, high
