"""The backbone registry: names -> specs and builders, and :func:`build_model`.

Every model that :func:`build_model` returns is ready for Opacus:

* its classifier is a fresh ``nn.Linear(num_classes)`` (kept only when the
  pretrained ImageNet head already has ``num_classes`` outputs);
* nothing computes in place: ``.inplace=False`` on every module, and the
  torchvision blocks that add or activate in place inside ``forward``
  (ResNet's ``out += identity``, MobileNetV3's ``result += input``,
  Inception's ``F.relu(x, inplace=True)``) are swapped for out-of-place
  subclasses, because Opacus' backward hooks fail ("Output 0 of
  BackwardHookFunction is a view and is being modified inplace") on a layer
  output that a later op overwrites;
* parameters outside the fine-tuned part are frozen, and frozen submodules are
  in eval mode (:mod:`fedray.models.finetune`).

Nothing is downloaded unless ``pretrained=true`` is asked for. torchvision
weights then come from ``torch.hub`` (cached under ``torch.hub.get_dir()``);
EfficientNet-Lite0/1/2's come from installed pip packages and never need a network.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from torch import nn

from fedray.config.schema import BackboneModel
from fedray.errors import FedrayError
from fedray.models.efficientnet_lite import VARIANTS as LITE_VARIANTS
from fedray.models.efficientnet_lite import efficientnet_lite
from fedray.models.finetune import Block, freeze_for_finetune, set_frozen_eval
from fedray.models.small_cnn import MIN_IMAGE_SIZE as SMALL_CNN_MIN_IMAGE_SIZE
from fedray.models.small_cnn import SmallCNN

# Five stride-2 stages take 32 px to 1 px; inception_v3's unpadded stem needs 75 px.
FIVE_HALVINGS_MIN_SIZE = 32
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's ImageNet weights
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # inception_v3 (transform_input=False) and EfficientNet-Lite
INCEPTION_MIN_SIZE = 75


@dataclass(frozen=True)
class BackboneSpec:
    """What callers need to know before building: the smallest usable image side, whether BatchNorm is inside."""

    name: str
    min_image_size: int
    has_batchnorm: bool
    # The per-channel (mean, std) its pretrained weights were trained with; None without weights.
    pretrained_normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass(frozen=True)
class _Backbone:
    spec: BackboneSpec
    build: Callable[[bool], nn.Module]  # pretrained -> model with its native (1000-class) head
    head: str  # dotted name of the final nn.Linear
    blocks: Callable[[nn.Module], list[Block]]  # feature blocks, input to output, for finetune=last_n


def _torchvision(name: str) -> Callable[[bool], nn.Module]:
    """A builder that imports torchvision only when called: it costs seconds per actor process."""

    def build(pretrained: bool) -> nn.Module:
        from fedray.models import torchvision_backbones

        return torchvision_backbones.build(name, pretrained)

    return build


def _make_out_of_place(model: nn.Module) -> None:
    """No module computes in place (``.inplace=False``); torchvision blocks were swapped at build time."""
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False


def _small_cnn(pretrained: bool) -> nn.Module:
    if pretrained:
        raise FedrayError("small_cnn has no pretrained weights: set model.pretrained=false")
    return SmallCNN(num_classes=1)  # build_model swaps in the real head


def _children_with_parameters(model: nn.Module, container: str) -> list[Block]:
    parent = model.get_submodule(container)
    prefix = f"{container}." if container else ""
    return [(prefix + name,) for name, child in parent.named_children() if list(child.parameters())]


def _resnet_blocks(model: nn.Module) -> list[Block]:
    return [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]


def _inception_blocks(model: nn.Module) -> list[Block]:
    return [block for block in _children_with_parameters(model, "") if block != ("fc",)]


def _sequential_then_hidden_linears(features: str, hidden: tuple[str, ...]) -> Callable[[nn.Module], list[Block]]:
    def blocks(model: nn.Module) -> list[Block]:
        return _children_with_parameters(model, features) + [(name,) for name in hidden]

    return blocks


def _lite_blocks(model: nn.Module) -> list[Block]:
    return [
        ("_conv_stem", "_bn0"),
        *((f"_blocks.{i}",) for i in range(len(model._blocks))),
        ("_conv_head", "_bn1"),
    ]


_BACKBONES: dict[str, _Backbone] = {
    backbone.spec.name: backbone
    for backbone in (
        _Backbone(
            BackboneSpec("small_cnn", SMALL_CNN_MIN_IMAGE_SIZE, has_batchnorm=False),
            _small_cnn,
            head="head",
            blocks=_sequential_then_hidden_linears("features", ()),
        ),
        _Backbone(
            BackboneSpec("resnet18", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True, pretrained_normalisation=IMAGENET),
            _torchvision("resnet18"),
            head="fc",
            blocks=_resnet_blocks,
        ),
        _Backbone(
            BackboneSpec("resnet50", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True, pretrained_normalisation=IMAGENET),
            _torchvision("resnet50"),
            head="fc",
            blocks=_resnet_blocks,
        ),
        _Backbone(
            BackboneSpec("vgg19", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=False, pretrained_normalisation=IMAGENET),
            _torchvision("vgg19"),
            head="classifier.6",
            blocks=_sequential_then_hidden_linears("features", ("classifier.0", "classifier.3")),
        ),
        _Backbone(
            BackboneSpec("inception_v3", INCEPTION_MIN_SIZE, has_batchnorm=True, pretrained_normalisation=HALF),
            _torchvision("inception_v3"),
            head="fc",
            blocks=_inception_blocks,
        ),
        _Backbone(
            BackboneSpec("mobilenet_v3_small", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True, pretrained_normalisation=IMAGENET),
            _torchvision("mobilenet_v3_small"),
            head="classifier.3",
            blocks=_sequential_then_hidden_linears("features", ("classifier.0",)),
        ),
        _Backbone(
            BackboneSpec("mobilenet_v3_large", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True, pretrained_normalisation=IMAGENET),
            _torchvision("mobilenet_v3_large"),
            head="classifier.3",
            blocks=_sequential_then_hidden_linears("features", ("classifier.0",)),
        ),
    )
    + tuple(
        _Backbone(
            BackboneSpec(name, FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True, pretrained_normalisation=HALF),
            partial(efficientnet_lite, name),
            head="_fc",
            blocks=_lite_blocks,
        )
        for name in LITE_VARIANTS  # efficientnet_lite0, _lite1, _lite2: one builder, one block layout
    )
}


def register_backbone(spec: BackboneSpec, build: Callable[[bool], nn.Module], *, head: str,
                      blocks: Callable[[nn.Module], list[Block]] | None = None) -> BackboneSpec:
    """Add a backbone under ``spec.name``: the one call a new image model needs (docs/extending.md).

    ``build(pretrained)`` returns the model with any final ``nn.Linear`` at the
    dotted name ``head`` (:func:`build_model` swaps in a ``num_classes`` head);
    ``blocks(model)`` lists its feature blocks, input to output, for
    ``finetune=last_n`` (default: its children with parameters, the head left
    out). The model must be Opacus-ready as this module's docstring says: no
    in-place computation inside ``forward``. A second backbone under a known
    name is an error. Register it in every process that builds models (the
    hospitals' and the driver's actors import it through the module that calls this).
    """
    if spec.name in _BACKBONES and _BACKBONES[spec.name].build is not build:
        raise FedrayError(f"a backbone named {spec.name!r} exists already: pick another name")

    def default_blocks(model: nn.Module) -> list[Block]:
        return [block for block in _children_with_parameters(model, "") if block != (head,)]

    _BACKBONES[spec.name] = _Backbone(spec, build, head=head, blocks=blocks or default_blocks)
    return spec


def backbone_names() -> list[str]:
    """Every backbone name, i.e. every valid ``model=`` choice."""
    return list(_BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``; FedrayError if there is no such backbone."""
    return _lookup(name).spec


def _lookup(name: str) -> _Backbone:
    if name not in _BACKBONES:
        raise FedrayError(f"unknown backbone {name!r}: set model= one of {', '.join(_BACKBONES)}")
    return _BACKBONES[name]


@functools.lru_cache(maxsize=4)
def pretrained_head_weight(name: str) -> np.ndarray:
    """The ``[classes, d]`` weight of backbone ``name``'s pretrained native (ImageNet) classifier: public, shipped
    with the weights, and never trained on a run's records."""
    backbone = _lookup(name)
    return backbone.build(True).get_submodule(backbone.head).weight.detach().double().numpy()


def build_model(model_cfg: BackboneModel, *, num_classes: int, image_size: int) -> nn.Module:
    """Build the backbone ``model_cfg.name`` for ``num_classes`` classes and square images of side ``image_size``.

    ``model_cfg`` (``conf/model/<backbone>.yaml``): ``name``; ``pretrained``
    (ImageNet weights); ``finetune`` (``"all"`` | ``"head"`` | ``"last_n"``);
    ``finetune_last_n``. The model comes back in train mode with its frozen
    parts in eval mode; call :func:`set_frozen_eval` again after any later
    ``model.train()``.
    """
    backbone = _lookup(model_cfg.name)
    name, min_size = backbone.spec.name, backbone.spec.min_image_size
    if image_size < min_size:
        raise FedrayError(f"image size {image_size} is below {name}'s minimum of {min_size}: set data.image_size>={min_size}")
    pretrained = model_cfg.pretrained

    model = backbone.build(pretrained)
    old_head = model.get_submodule(backbone.head)
    if not (pretrained and old_head.out_features == num_classes):
        model.set_submodule(backbone.head, nn.Linear(old_head.in_features, num_classes))
    _make_out_of_place(model)
    freeze_for_finetune(
        model,
        mode=model_cfg.finetune,
        head=backbone.head,
        blocks=backbone.blocks(model),
        last_n=model_cfg.finetune_last_n,
    )
    model.train()
    set_frozen_eval(model)
    return model
