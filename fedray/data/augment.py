"""Batch augmentations run on the training device.

Only flips: a dermoscopy image has no canonical orientation, so a mirrored
lesion is an equally valid sample, and flips change no pixel value (unlike
crops or colour jitter they cannot interact with colour whitening).
Randomness comes from an explicit :class:`torch.Generator` so that a
hospital's training is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedray.errors import FedrayError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_flips(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of ``[B, C, H, W]`` left-right with p=1/2 and, independently, up-down with p=1/2.

    The masks are drawn on the generator's device (a CPU generator is fine
    for a GPU batch) and moved to the batch's device, so the result is the
    same for a given generator state wherever the batch lives.
    """
    b = batch.shape[0]
    masks = torch.rand(2, b, generator=generator, device=generator.device) < 0.5
    left_right, up_down = masks.to(batch.device).view(2, b, 1, 1, 1)
    out = torch.where(left_right, batch.flip(-1), batch)
    return torch.where(up_down, out.flip(-2), out)


def no_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The identity, with the same signature as :func:`random_flips`."""
    return batch


AUGMENTATIONS: dict[str, Augment] = {"flips": random_flips, "none": no_augment}


def get_augment(name: str) -> Augment:
    """The augmentation that ``data.augment: <name>`` selects."""
    if name not in AUGMENTATIONS:
        raise FedrayError(f"unknown data.augment '{name}': use one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
