r"""Frozen-feature training: run a backbone's frozen part once per image, then train only its head on the cache.

With ``finetune=head`` the model is :math:`f = h \circ g`: :math:`g` is every
layer before the head's input, has no trainable parameter and runs in eval
mode (BatchNorm with its stored statistics, no dropout, :func:`set_frozen_eval`),
so it is a fixed function of one image; :math:`h` is the head together with
the dropout that the backbone applies to the head's input in train mode.
Training :math:`f` on an image :math:`x` is training :math:`h` on :math:`g(x)`,
so each hospital computes :math:`g` over its own shard once, keeps the
features rather than the images, and every round runs only :math:`h`. The
driver does the same for the validation and test sets, once per experiment.

Augmentation. ``data.augment=flips`` draws two bits per image (left-right,
up-down; :func:`fedray.data.augment.random_flips`). The cache holds
:math:`g` of all four views, index ``lr + 2·ud``, and :func:`pick_flip_view`
draws the same two bits from the same generator: a cached run consumes its
randomness exactly as the uncached one and equals it up to the float rounding
of batched convolutions (``tests/training/test_features.py``). Evaluation uses
view 0, the image itself.

Privacy. :math:`g` is public and fixed: ImageNet weights read from a package
and an input map that is public (a pretrained backbone's own normalisation) or
was released under DP before training (post-processing). DP-SGD clips and
noises per-record gradients of :math:`h`'s parameters, which are the only
gradients :math:`f` has, so the mechanism and its accounting are unchanged;
``docs/privacy.md`` gives the argument.

When it applies (:func:`split_frozen`): every trainable parameter lies in the
head, and no module before the head's input is random in train mode. A
backbone whose frozen part keeps an active dropout (VGG19's classifier, where
frozen Linear layers follow dropouts) is trained uncached, and the summary
says so. ``finetune=last_n`` is not cached: its frozen prefix ends in spatial
feature maps tens of times larger than the head's input.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedray.data.input_map import InputMap
from fedray.progress import Progress

EXTRACT_BATCH_SIZE = 64
FLIP_VIEWS = 4  # identity, left-right, up-down, both


@dataclass
class FrozenSplit:
    """A model cut at its head's input: ``head_side`` shares its parameters with the full model."""

    model: nn.Module
    head: nn.Module
    head_side: nn.Module  # the dropout(s) applied to the head's input in train mode, then the head


def split_frozen(model: nn.Module, head_name: str, sample: torch.Tensor) -> FrozenSplit | None:
    """Cut ``model`` (built, in train mode with frozen parts in eval) at ``head_name``'s input, or None.

    One forward pass of ``sample`` (a normalised batch of one image) in the
    model's training modes records which leaf modules run before the head.
    Dropouts that run after the last module with parameters move to the head
    side; the cut is refused if a trainable parameter lies outside the head
    or a module before the cut would be random (an active dropout).
    """
    head = model.get_submodule(head_name)
    head_params = {id(p) for p in head.parameters()}
    if any(p.requires_grad and id(p) not in head_params for p in model.parameters()):
        return None
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, _i, _o: order.append(m))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[sample.device] if sample.is_cuda else []):
            model(sample)  # its dropout must not advance the training run's generator
    finally:
        for hook in hooks:
            hook.remove()
    before_head = order[:order.index(head)] if head in order else None
    if before_head is None:
        return None
    trailing: list[nn.Module] = []
    for module in reversed(before_head):
        if list(module.parameters()) or not _random_in_train(module):
            break
        trailing.insert(0, module)
    prefix = before_head[:len(before_head) - len(trailing)]
    if any(m.training and _random_in_train(m) for m in prefix):
        return None
    return FrozenSplit(model=model, head=head, head_side=nn.Sequential(*trailing, head))


def _random_in_train(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0


class _HeadInput(Exception):
    def __init__(self, value: torch.Tensor):
        self.value = value


@torch.no_grad()
def head_inputs(split: FrozenSplit, images: torch.Tensor, input_map: InputMap, *, device: torch.device,
                views: int, progress=lambda done, total: None) -> torch.Tensor:
    """:math:`g` of every image and view: float32 ``[n, views, d]`` on ``device`` (``views`` is 1 or 4);
    ``progress(done, total)`` after each batch."""

    def capture(_module, args):
        raise _HeadInput(args[0])

    # prepend: g(x) itself, before any input map a run puts on the head (fedray.training.feature_norm)
    hook = split.head.register_forward_pre_hook(capture, prepend=True)
    modes = {m: m.training for m in split.model.modules()}
    split.model.eval()
    try:
        chunks = []
        for chunk in images.split(EXTRACT_BATCH_SIZE):
            x = input_map.apply(chunk.to(device))
            per_view = []
            for v in range(views):
                view = x.flip(-1) if v % 2 else x
                view = view.flip(-2) if v // 2 else view
                try:
                    split.model(view)
                except _HeadInput as captured:
                    per_view.append(captured.value.float().flatten(1))
            chunks.append(torch.stack(per_view, dim=1))
            progress(sum(len(c) for c in chunks), len(images))
    finally:
        hook.remove()
        for module, training in modes.items():
            module.train(training)
    if not chunks:
        return torch.zeros((0, views, split.head_side[-1].in_features), device=device)
    return torch.cat(chunks)


def pick_flip_view(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Cached ``[B, 4, d]`` -> ``[B, d]``: the view :func:`random_flips` would have made, from the same two draws."""
    b = batch.shape[0]
    left_right, up_down = (torch.rand(2, b, generator=generator, device=generator.device) < 0.5).long()
    view = (left_right + 2 * up_down).to(batch.device)
    return batch[torch.arange(b, device=batch.device), view]


def only_view(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Cached ``[B, 1, d]`` -> ``[B, d]`` without augmentation (draws nothing, like ``no_augment``)."""
    return batch[:, 0]


class Unchanged:
    """The input map of a head that reads cached features: they were mapped before :math:`g`."""

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


class Features:
    """Cached head inputs ``[n, d]`` of an evaluation set; an evaluator's ``predict_proba`` takes them as they are."""

    def __init__(self, values: torch.Tensor):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class FeatureCacheReport:
    """What caching cost: records and views computed or read, seconds, and whether all came from disk."""

    records: int
    views: int
    seconds: float
    from_disk: bool

    def plus(self, other: FeatureCacheReport | None) -> FeatureCacheReport:
        if other is None:
            return self
        return FeatureCacheReport(records=self.records + other.records, views=max(self.views, other.views),
                                  seconds=self.seconds + other.seconds, from_disk=self.from_disk and other.from_disk)


class FeatureEncoder:
    """Turns raw images into cached head inputs and keeps a running :class:`FeatureCacheReport`."""

    def __init__(self, split: FrozenSplit, input_map: InputMap, store: FeatureStore, device: torch.device):
        self.split, self.input_map, self.store, self.device = split, input_map, store, device
        self.report: FeatureCacheReport | None = None

    def features(self, images, *, views: int) -> torch.Tensor:
        """``[n, views, d]`` head inputs of ``images`` (uint8 ``[n, 3, H, W]``)."""
        if not isinstance(images, torch.Tensor):  # arrays from Ray's object store are read-only views
            images = torch.from_numpy(np.require(images, requirements="W"))
        values, seconds, from_disk = self.store.load_or_compute(
            self.split, images, self.input_map, device=self.device, views=views)
        self.report = FeatureCacheReport(records=len(values), views=views, seconds=seconds,
                                         from_disk=from_disk).plus(self.report)
        return values

    def __call__(self, images) -> Features:
        """An evaluation set's head inputs (view 0 only)."""
        return Features(self.features(images, views=1)[:, 0])


@dataclass(frozen=True)
class FeatureStore:
    """Features on disk, keyed by everything :math:`g` depends on, so a sweep's trials compute them once.

    The key hashes the images' bytes, the backbone's frozen weights, the input
    map and the number of views. A file holds one party's own records (a
    hospital's shard, or an evaluation set) and is read only by that party's
    process in a later trial; it is as sensitive as the images it came from,
    so the directory is created owner-only (0700) and each file 0600. It
    lives in the user's cache (``paths.feature_cache_dir``, by default
    ``$XDG_CACHE_HOME/fedray/features`` or ``~/.cache/fedray/features``),
    never in the directory a command was started from.
    """

    directory: Path | None

    def load_or_compute(self, split: FrozenSplit, images: torch.Tensor, input_map: InputMap, *,
                        device: torch.device, views: int) -> tuple[torch.Tensor, float, bool]:
        """(features, seconds spent, whether they came from disk)."""
        start = time.perf_counter()
        path = None if self.directory is None else self.directory / f"{_key(split, images, input_map, views)}.pt"
        if path is not None and path.exists():
            return torch.load(path, map_location=device, weights_only=True), time.perf_counter() - start, True
        features = head_inputs(split, images, input_map, device=device, views=views,
                               progress=Progress(f"frozen features ({views} view{'s' if views > 1 else ''})"))
        if path is not None:
            _private_directory(path.parent)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            # Owner-only from its creation: the features are as sensitive as the images.
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                torch.save(features.cpu(), handle)
            os.replace(partial, path)  # atomic: a concurrent trial reads a whole file or none
        return features, time.perf_counter() - start, False


def _private_directory(directory: Path) -> None:
    """Create ``directory`` (and missing parents) readable by its owner only; tighten it if this user owns it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_uid == os.getuid():
        directory.chmod(0o700)


def _key(split: FrozenSplit, images: torch.Tensor, input_map: InputMap, views: int) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images.cpu().numpy()).tobytes())
    digest.update(str(tuple(images.shape)).encode())
    head_params = {id(p) for p in split.head.parameters()}
    for name, tensor in split.model.state_dict(keep_vars=True).items():
        if id(tensor) not in head_params:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
    for name, value in sorted(getattr(input_map, "state_dict", dict)().items()):
        digest.update(f"{name}={np.asarray(value).tolist()}".encode())
    digest.update(f"views={views}".encode())
    return digest.hexdigest()[:32]
