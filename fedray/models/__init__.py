"""Backbone registry: build any supported image classifier, Opacus-ready, by name.

Pure torch/torchvision (no Ray). See docs/models.md for the backbones,
their minimum image sizes and the fine-tuning modes.
"""

from fedray.models.finetune import set_frozen_eval, trainable_parameter_names
from fedray.models.registry import BackboneSpec, backbone_names, backbone_spec, build_model

__all__ = [
    "BackboneSpec",
    "backbone_names",
    "backbone_spec",
    "build_model",
    "set_frozen_eval",
    "trainable_parameter_names",
]
