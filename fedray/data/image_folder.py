"""Read a ``<folder>/<class name>/<image>`` tree into one uint8 tensor.

Every image is decoded once, converted to RGB and resized to ``S x S`` with
PIL's bilinear filter (PIL widens the filter when shrinking, so the resize is
antialiased). Decoding runs on a thread pool: PIL releases the GIL while it
decodes and resizes, so threads scale without copying pixels between
processes.

Unreadable images follow ``on_corrupt``: ``"skip"`` leaves them out, logs a
warning naming the file and returns its path among the skipped ones;
``"fail"`` raises :class:`FedrayError` naming it. Skipping is the default
because one bad download in thousands should not stop a study; the skipped
paths travel with the splits so a result still says which records it used.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from fedray.errors import FedrayError
from fedray.progress import Progress

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ON_CORRUPT = ("skip", "fail")
DECODE_THREADS = min(8, 2 * (os.cpu_count() or 2))


def class_folders(folder: Path) -> tuple[str, ...]:
    """Sorted names of the visible sub-folders of ``folder``."""
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))


def list_images(root: Path, folder: Path, class_names: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(path relative to root, label)`` for each image under ``folder/<class>/``.

    Labels index ``class_names``; only the sub-folders of ``folder`` that
    exist are listed (``Test/`` may hold a subset of the classes). Files are
    sorted by name so that the order, and with it every seeded split, does
    not depend on the file system.
    """
    records = []
    for name in class_folders(folder):
        files = sorted(
            p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise FedrayError(
                f"class folder '{folder / name}' holds no images: add .jpg/.jpeg/.png files or remove the folder"
            )
        label = class_names.index(name)
        records += [(p.relative_to(root).as_posix(), label) for p in files]
    return records


class Decoded(NamedTuple):
    """The readable images of a listing, in its order; ``kept`` marks them among the listed records (so that a
    loader can keep what else it knows of each, e.g. its site)."""

    images: torch.Tensor  # [N, 3, S, S] uint8
    labels: np.ndarray
    ids: np.ndarray
    skipped: tuple[str, ...]  # the unreadable paths
    kept: np.ndarray  # bool, one per listed record


def decode_images(root: Path, records: list[tuple[str, int]], *, image_size: int, on_corrupt: str) -> Decoded:
    """Decode ``records`` (path relative to ``root``, label) into :class:`Decoded`."""
    if on_corrupt not in ON_CORRUPT:
        raise FedrayError(f"unknown data.on_corrupt '{on_corrupt}': use one of {', '.join(ON_CORRUPT)}")
    images = torch.empty((len(records), 3, image_size, image_size), dtype=torch.uint8)
    target = images.numpy()  # shares memory: workers write straight into the tensor

    def decode(i: int) -> str | None:
        """Fill row ``i``; return the error text if the file cannot be read."""
        try:
            with Image.open(root / records[i][0]) as img:
                rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return f"{type(err).__name__}: {err}"
        target[i] = np.asarray(rgb).transpose(2, 0, 1)
        return None

    progress = Progress("decoding images")
    errors = []
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for error in pool.map(decode, range(len(records))):
            errors.append(error)
            progress(len(errors), len(records))

    failed = [(records[i][0], err) for i, err in enumerate(errors) if err is not None]
    if failed and on_corrupt == "fail":
        path, err = failed[0]
        raise FedrayError(
            f"cannot read image '{root / path}' ({err}): delete or replace it, or set data.on_corrupt=skip"
        )
    for path, err in failed:
        log.warning("skipping unreadable image %s (%s)", root / path, err)
    keep = np.array([err is None for err in errors], dtype=bool)
    labels = np.array([label for _, label in records], dtype=np.int64)[keep]
    ids = np.array([path for path, _ in records], dtype=object)[keep]
    if failed:
        images = images[torch.from_numpy(keep)]
    return Decoded(images, labels, ids, tuple(path for path, _ in failed), keep)
