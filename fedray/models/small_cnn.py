"""A small CNN for smoke tests, CI and quick sweeps (about 24k parameters).

Three blocks, each ``Conv3x3 -> GroupNorm -> ReLU -> MaxPool2``, with 16, 32
and 64 channels, then a global average pool and a linear head::

    [B,3,H,W] -> [B,16,H/2,W/2] -> [B,32,H/4,W/4] -> [B,64,H/8,W/8] -> [B,64] -> [B,C]

Assumptions: H, W >= 8, so that the three halvings leave at least one pixel.
GroupNorm (8 groups) rather than BatchNorm because its statistics are computed
per sample, so DP-SGD (Opacus) can train it as it is: BatchNorm mixes the
samples of a batch, which breaks per-sample gradient clipping.
"""

from torch import Tensor, nn

CHANNELS = (16, 32, 64)
GROUPNORM_GROUPS = 8
MIN_IMAGE_SIZE = 2 ** len(CHANNELS)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.GroupNorm(GROUPNORM_GROUPS, out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """``features`` (three conv blocks) -> global average pool -> ``head`` (Linear)."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        widths = (in_channels, *CHANNELS)
        self.features = nn.Sequential(*(_conv_block(c_in, c_out) for c_in, c_out in zip(widths, widths[1:])))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(CHANNELS[-1], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.pool(self.features(images)).flatten(1))
