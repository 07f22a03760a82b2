"""Model registry: image backbones (Opacus-ready), table models and tree families, by name.

Pure torch/torchvision (no Ray). See docs/models.md for the backbones,
their minimum image sizes and the fine-tuning modes, and
:mod:`fedray.models.tabular` for the table models.
"""

from fedray.errors import FedrayError
from fedray.models.finetune import (frozen_state_names, last_layer_bias, set_frozen_eval,
                                    trainable_parameter_names)
from fedray.models.registry import (BackboneSpec, backbone_names, backbone_spec, build_model, pretrained_head_weight,
                                    register_backbone)
from fedray.models.tabular import TORCH_TABLE_MODELS, TREE_MODELS, build_table_model


def model_family(name: str) -> str:
    """``"image"`` (a backbone), ``"table"`` (a torch model on rows) or ``"tree"`` (a tree ensemble)."""
    if name in TORCH_TABLE_MODELS:
        return "table"
    if name in TREE_MODELS:
        return "tree"
    if name in backbone_names():
        return "image"
    known = ", ".join([*backbone_names(), *TORCH_TABLE_MODELS, *TREE_MODELS])
    raise FedrayError(f"unknown model {name!r}: set model= one of {known}")


__all__ = [
    "BackboneSpec",
    "TORCH_TABLE_MODELS",
    "TREE_MODELS",
    "backbone_names",
    "backbone_spec",
    "build_model",
    "build_table_model",
    "frozen_state_names",
    "last_layer_bias",
    "model_family",
    "pretrained_head_weight",
    "register_backbone",
    "set_frozen_eval",
    "trainable_parameter_names",
]
