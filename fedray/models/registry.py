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
EfficientNet-Lite0's come from an installed pip package and never need a network.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import inception, mobilenetv3, resnet

from fedray.errors import FedrayError
from fedray.models.efficientnet_lite import efficientnet_lite0
from fedray.models.finetune import Block, freeze_for_finetune, set_frozen_eval
from fedray.models.small_cnn import MIN_IMAGE_SIZE as SMALL_CNN_MIN_IMAGE_SIZE
from fedray.models.small_cnn import SmallCNN

# Five stride-2 stages take 32 px to 1 px; inception_v3's unpadded stem needs 75 px.
FIVE_HALVINGS_MIN_SIZE = 32
INCEPTION_MIN_SIZE = 75
MODEL_CONFIG_KEYS = ("name", "pretrained", "finetune", "finetune_last_n")


@dataclass(frozen=True)
class BackboneSpec:
    """What callers need to know before building: the smallest usable image side, whether BatchNorm is inside."""

    name: str
    min_image_size: int
    has_batchnorm: bool


@dataclass(frozen=True)
class _Backbone:
    spec: BackboneSpec
    build: Callable[[bool], nn.Module]  # pretrained -> model with its native (1000-class) head
    head: str  # dotted name of the final nn.Linear
    blocks: Callable[[nn.Module], list[Block]]  # feature blocks, input to output, for finetune=last_n


class _OutOfPlaceBasicBlock(resnet.BasicBlock):
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _OutOfPlaceBottleneck(resnet.Bottleneck):
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class _OutOfPlaceInvertedResidual(mobilenetv3.InvertedResidual):
    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        return result + x if self.use_res_connect else result


class _OutOfPlaceBasicConv2d(inception.BasicConv2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


_OUT_OF_PLACE = {
    resnet.BasicBlock: _OutOfPlaceBasicBlock,
    resnet.Bottleneck: _OutOfPlaceBottleneck,
    mobilenetv3.InvertedResidual: _OutOfPlaceInvertedResidual,
    inception.BasicConv2d: _OutOfPlaceBasicConv2d,
}


def _compute_out_of_place(model: nn.Module) -> None:
    """Turn off every in-place operation in ``model`` (same maths, same parameters, same state_dict keys)."""
    for module in model.modules():
        if type(module) in _OUT_OF_PLACE:
            # Only forward differs, so re-classing the instance keeps its weights and buffers.
            module.__class__ = _OUT_OF_PLACE[type(module)]
        if getattr(module, "inplace", False):
            module.inplace = False


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        # Looked up on torch.hub at call time (not torchvision's bound copy) so that tests can stub it.
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
        reason = " ".join(str(err).split())
        raise FedrayError(
            f"ImageNet weights for {name} are unavailable offline ({reason}): connect once to cache them in "
            f"{torch.hub.get_dir()}, set model.pretrained=false, or use model=efficientnet_lite0 which ships its weights"
        ) from err


def _torchvision(name: str) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None)
        if pretrained:
            model.load_state_dict(_imagenet_state_dict(name))
        return model

    return build


def _inception_v3(pretrained: bool) -> nn.Module:
    """Inception-v3 without its auxiliary classifier, fed normalised images as they are.

    The aux head (a second classifier on Mixed_6e, weighted 0.4 in the loss)
    only helps deep networks train from scratch; the seed paper does not use
    it; and it would give a forward pass two outputs and Opacus a second set of
    per-sample gradients to hold. ``transform_input=False``: the data pipeline
    normalises, the model does not re-normalise.
    """
    model = torchvision.models.inception_v3(
        weights=None, aux_logits=False, transform_input=False, init_weights=not pretrained
    )
    if pretrained:
        state = _imagenet_state_dict("inception_v3")
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("AuxLogits.")})
    return model


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


def _lite0_blocks(model: nn.Module) -> list[Block]:
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
            BackboneSpec("resnet18", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True),
            _torchvision("resnet18"),
            head="fc",
            blocks=_resnet_blocks,
        ),
        _Backbone(
            BackboneSpec("resnet50", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True),
            _torchvision("resnet50"),
            head="fc",
            blocks=_resnet_blocks,
        ),
        _Backbone(
            BackboneSpec("vgg19", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=False),
            _torchvision("vgg19"),
            head="classifier.6",
            blocks=_sequential_then_hidden_linears("features", ("classifier.0", "classifier.3")),
        ),
        _Backbone(
            BackboneSpec("inception_v3", INCEPTION_MIN_SIZE, has_batchnorm=True),
            _inception_v3,
            head="fc",
            blocks=_inception_blocks,
        ),
        _Backbone(
            BackboneSpec("mobilenet_v3_small", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True),
            _torchvision("mobilenet_v3_small"),
            head="classifier.3",
            blocks=_sequential_then_hidden_linears("features", ("classifier.0",)),
        ),
        _Backbone(
            BackboneSpec("mobilenet_v3_large", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True),
            _torchvision("mobilenet_v3_large"),
            head="classifier.3",
            blocks=_sequential_then_hidden_linears("features", ("classifier.0",)),
        ),
        _Backbone(
            BackboneSpec("efficientnet_lite0", FIVE_HALVINGS_MIN_SIZE, has_batchnorm=True),
            efficientnet_lite0,
            head="_fc",
            blocks=_lite0_blocks,
        ),
    )
}


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


def build_model(model_cfg: Mapping[str, Any], *, num_classes: int, image_size: int) -> nn.Module:
    """Build the backbone ``model_cfg["name"]`` for ``num_classes`` classes and square images of side ``image_size``.

    ``model_cfg`` keys: ``name``; ``pretrained`` (default False: ImageNet
    weights); ``finetune`` (default ``"all"``; ``"head"`` | ``"last_n"``);
    ``finetune_last_n`` (default 1). The model comes back in train mode with
    its frozen parts in eval mode; call :func:`set_frozen_eval` again after any
    later ``model.train()``.
    """
    unknown = sorted(set(model_cfg) - set(MODEL_CONFIG_KEYS))
    if unknown:
        raise FedrayError(f"unknown model config key(s) {unknown}: use only {', '.join(MODEL_CONFIG_KEYS)}")
    backbone = _lookup(model_cfg.get("name"))
    name, min_size = backbone.spec.name, backbone.spec.min_image_size
    if image_size < min_size:
        raise FedrayError(f"image size {image_size} is below {name}'s minimum of {min_size}: set data.image_size>={min_size}")
    pretrained = model_cfg.get("pretrained", False)
    if not isinstance(pretrained, bool):
        raise FedrayError(f"model.pretrained={pretrained!r} is not a boolean: set it to true or false")

    model = backbone.build(pretrained)
    old_head = model.get_submodule(backbone.head)
    if not (pretrained and old_head.out_features == num_classes):
        model.set_submodule(backbone.head, nn.Linear(old_head.in_features, num_classes))
    _compute_out_of_place(model)
    freeze_for_finetune(
        model,
        mode=model_cfg.get("finetune", "all"),
        head=backbone.head,
        blocks=backbone.blocks(model),
        last_n=model_cfg.get("finetune_last_n", 1),
    )
    model.train()
    set_frozen_eval(model)
    return model
