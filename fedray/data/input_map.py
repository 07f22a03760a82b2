"""The map every model input goes through on its device: colour whitening for images, public-range scaling for rows.

It is decided once per experiment (:func:`fedray.privacy.preprocessing.fit_input_map`,
from each hospital's own statistics, summed, and noised under DP) and
travels to the hospitals, the driver and the auditor as a plain
``state_dict``, so every process feeds its model identical inputs.
"""

from __future__ import annotations

from fedray.data.feature_scaling import FeatureScaling
from fedray.data.whitening import ColorWhitening

InputMap = ColorWhitening | FeatureScaling


def input_map_from_state(state: dict) -> InputMap:
    if state.get("kind") == "feature_scaling":
        return FeatureScaling.from_state_dict(state)
    return ColorWhitening.from_state_dict(state)


__all__ = ["InputMap", "input_map_from_state"]
