"""The map every model input goes through on its device: colour whitening for images, public-range scaling for rows.

It is decided once per experiment, in the caller's process, and travels to the
hospitals, the driver and the auditor as a plain ``state_dict``, so every
process feeds its model identical inputs.
"""

from __future__ import annotations

from fedray.data.feature_scaling import FeatureScaling
from fedray.data.types import Records
from fedray.data.whitening import ColorWhitening
from fedray.models import backbone_spec, model_family

InputMap = ColorWhitening | FeatureScaling


def fit_input_map(cfg: dict, train: Records) -> InputMap:
    """The input map of one experiment, fitted on (or, for tables, read from the public ranges of) ``train``.

    Tables are scaled by their public feature ranges, never by statistics of
    the private rows. For images, ``data.whitening=auto`` (the default) is the
    seed's ZCA whitening fitted on the training shards, except for a backbone
    loaded with pretrained weights: its features only mean something under the
    normalisation those weights were trained with, so that fixed normalisation
    is used instead.
    """
    if train.kind == "table":
        return FeatureScaling.from_ranges(train.feature_ranges)
    method = cfg["data"].get("whitening", "auto")
    if method == "auto":
        name = cfg["model"]["name"]
        normalisation = backbone_spec(name).pretrained_normalisation if model_family(name) == "image" else None
        if cfg["model"].get("pretrained") and normalisation is not None:
            return ColorWhitening.standardise(mean=normalisation[0], std=normalisation[1])
        method = "zca"
    return ColorWhitening.fit(train.inputs, method=method, seed=cfg["seed"])


def input_map_from_state(state: dict) -> InputMap:
    if state.get("kind") == "feature_scaling":
        return FeatureScaling.from_state_dict(state)
    return ColorWhitening.from_state_dict(state)


__all__ = ["InputMap", "fit_input_map", "input_map_from_state"]
