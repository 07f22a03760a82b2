"""torchvision backbones made Opacus-safe (imported only when such a backbone is built).

torchvision blocks add or activate in place inside ``forward`` (ResNet's
``out += identity``, MobileNetV3's ``result += input``, Inception's
``F.relu(x, inplace=True)``). Opacus' backward hooks fail on a layer output
that a later op overwrites ("Output 0 of BackwardHookFunction is a view and
is being modified inplace"), so those blocks are re-classed to subclasses that
compute the same maths out of place; weights, buffers and state-dict keys are
unchanged.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import inception, mobilenetv3, resnet

from fedray.errors import FedrayError


def build(name: str, pretrained: bool) -> nn.Module:
    """The torchvision model ``name`` with its native head, optionally with ImageNet weights, out of place."""
    model = _BUILDERS.get(name, _generic)(name, pretrained)
    swap_in_place_blocks(model)
    return model


def swap_in_place_blocks(model: nn.Module) -> None:
    """Re-class torchvision's in-place blocks to their out-of-place twins."""
    for module in model.modules():
        if type(module) in _OUT_OF_PLACE:
            # Only forward differs, so re-classing the instance keeps its weights and buffers.
            module.__class__ = _OUT_OF_PLACE[type(module)]


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


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        # Looked up on torch.hub at call time (not torchvision's bound copy) so that tests can stub it.
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
        reason = " ".join(str(err).split())
        raise FedrayError(
            f"ImageNet weights for {name} are unavailable offline ({reason}): connect once to cache them in "
            f"{torch.hub.get_dir()}, set model.pretrained=false, or use model=efficientnet_lite0 (or lite1, lite2), which ship their weights"
        ) from err


def _generic(name: str, pretrained: bool) -> nn.Module:
    model = torchvision.models.get_model(name, weights=None)
    if pretrained:
        model.load_state_dict(_imagenet_state_dict(name))
    return model


def _inception_v3(name: str, pretrained: bool) -> nn.Module:
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


_BUILDERS: dict[str, Callable[[str, bool], nn.Module]] = {"inception_v3": _inception_v3}
