"""Min-max scaling of table rows to ``[0, 1]`` from fixed, public feature ranges.

The tabular counterpart of :class:`fedray.data.whitening.ColorWhitening`, with
the same interface: built once, sent to every hospital as a ``state_dict()``,
applied per batch on the training device.

Maths. Feature ``j`` with range ``[l_j, h_j]`` (``h_j > l_j``) maps to::

    y_j = (min(max(x_j, l_j), h_j) - l_j) / (h_j - l_j)   in [0, 1]

Values outside the range are clipped to its ends, so one implausible
measurement (a typo of 1700 for a BMI of 17.0) cannot dominate a batch or a
gradient.

Why public ranges. A fitted standardiser ``(x - mean) / std`` carries the
training set's means and standard deviations, and so does every model and
checkpoint that depends on it: a statistic of the private records that
DP-SGD's guarantee does not cover (the noise protects the gradients, not the
preprocessing). Ranges fixed a priori from clinical knowledge (age 18-90,
systolic pressure 80-220 mmHg) are a function of no patient, so the map leaks
nothing and is the same at every hospital without any exchange. Where a
loader had to take the ranges from the data it flags them
``Records.ranges_public = False``; the scaling works the same, but that
guarantee is gone.

Assumptions: one range per feature for all hospitals; no centring, so the
model sees positive inputs (a first linear layer absorbs the offset).
"""

from __future__ import annotations

import numpy as np
import torch

KIND = "feature_scaling"


class FeatureScaling:
    """The per-feature clip-and-scale ``y = (clip(x, low, high) - low) / (high - low)``.

    Attributes:
        ranges: float64 ``[D, 2]``, column 0 the lows ``l``, column 1 the highs ``h``.
    """

    def __init__(self, ranges: np.ndarray) -> None:
        ranges = np.array(ranges, dtype=np.float64)
        if ranges.ndim != 2 or ranges.shape[1] != 2:
            raise ValueError(f"feature ranges must be [D, 2] (low, high), got shape {ranges.shape}")
        # Checked in float32, the precision apply() computes in, so the width is never 0 there.
        low, high = ranges.astype(np.float32).T
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise ValueError(f"every feature range needs finite low < high, got {ranges.tolist()}")
        self.ranges = ranges
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_ranges(cls, ranges: np.ndarray) -> FeatureScaling:
        """The scaling for ``Records.feature_ranges`` (``[D, 2]``)."""
        return cls(ranges)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled float32 ``[B, D]`` on ``x``'s device, every value in ``[0, 1]``."""
        if x.ndim != 2 or x.shape[1] != len(self.ranges):
            raise ValueError(f"expected table rows [B, {len(self.ranges)}], got {tuple(x.shape)}")
        low, high, width = self._device_copies(x.device)
        # Dividing by high - low (not multiplying by its inverse) maps x = high to exactly 1.
        return (torch.clamp(x.to(torch.float32), low, high) - low).div_(width)

    def _device_copies(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            low, high = torch.from_numpy(self.ranges.astype(np.float32)).to(device).unbind(dim=1)
            self._on_device[device] = (low, high, high - low)
        return self._on_device[device]

    def state_dict(self) -> dict:
        """Everything needed to rebuild the transform, as plain lists (checkpoints, JSON)."""
        return {"kind": KIND, "low": self.ranges[:, 0].tolist(), "high": self.ranges[:, 1].tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureScaling:
        """Inverse of :meth:`state_dict`."""
        if state.get("kind") != KIND:
            raise ValueError(f"not a feature scaling state (kind {state.get('kind')!r})")
        return cls(np.stack([state["low"], state["high"]], axis=1))

    def __repr__(self) -> str:
        return f"FeatureScaling(ranges={self.ranges.tolist()})"
