"""Image containers every dataset source returns, and the decoder of one image file.

A :class:`ImageDataset` holds images as ``uint8`` arrays of shape (N, C, H, W)
and integer labels of shape (N,). The sample id of a training image is its
row index in ``train_x``; ids are stable for a given source (files are read in
sorted order), so every job of a run (and every rerun) refers to the same
image by the same id.

Data that do not fit in memory (ImageNet) keep ``train_x`` as an
:class:`ImageFiles`, a sorted file list that the trainer streams through a
DataLoader with workers; row ``i`` of the file list is sample id ``i`` on both
paths. The sources themselves are in :mod:`unseen.datasets`, the cache in
:mod:`unseen.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says where it looked and what to do."""


class ImageFiles:
    """Images that stay on disk: a sorted list of files decoded on access.

    Behaves like the uint8 array (N, C, H, W) that in-memory data use where the
    jobs need it: ``len``, ``shape``, indexing by an id array (returns another
    :class:`ImageFiles`), and ``load(i)`` -> uint8 (C, H, W). Each image is
    resized (shorter side to ``size * 8 / 7``) and centre-cropped to
    ``size x size``, the usual ImageNet evaluation transform, so batches have
    one shape; random crops and flips then happen on batched tensors.
    """

    def __init__(self, root: str | Path, files: Sequence[str], size: int, channels: int = 3):
        self.root = Path(root)
        self.files = np.asarray(files, dtype=str)
        self.size = int(size)
        self.channels = int(channels)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.channels, self.size, self.size)

    def __getitem__(self, ids) -> "ImageFiles":
        return ImageFiles(self.root, self.files[np.asarray(ids)], self.size, self.channels)

    def load(self, i: int) -> np.ndarray:
        """Decode image ``i``; uint8 (C, size, size)."""
        return _decode_image(self.root / self.files[i], self.size, self.channels, crop=True)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0..1 scale; each (C,).

    For streamed :class:`ImageFiles` the statistics come from 256 evenly spaced images
    (decoding all of ImageNet for two numbers per channel is not worth it).
    """
    if isinstance(images, ImageFiles):
        picks = np.linspace(0, len(images) - 1, min(256, len(images))).astype(int)
        images = np.stack([images.load(i) for i in np.unique(picks)])
    x = images.astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _decode_image(path: Path, size: int | None, channels: int, crop: bool) -> np.ndarray:
    """Decode one image file to uint8 (C, H, W); resize to size x size when ``size``."""
    try:
        return _decode_image_file(path, size, channels, crop)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's decoders raise all three
        raise DatasetError(
            f"{path}: cannot decode this image ({type(err).__name__}: {err}). The file is"
            " damaged or not an image: replace it with a good copy or delete it from the"
            " dataset, then rerun (the sample ids of the images after it change if you delete it)"
        ) from err


def _decode_image_file(path: Path, size: int | None, channels: int, crop: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB" if channels == 3 else "L")
        if size is not None and img.size != (size, size):
            if crop:
                short = round(size * 8 / 7)
                w, h = img.size
                scale = short / min(w, h)
                img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))),
                                 Image.BILINEAR)
                w, h = img.size
                left, top = (w - size) // 2, (h - size) // 2
                img = img.crop((left, top, left + size, top + size))
            else:
                img = img.resize((size, size), Image.BILINEAR)
        arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images with labels.

    Attributes:
        train_x: uint8, shape (N, C, H, W), or :class:`ImageFiles` when streamed.
        train_y: int64, shape (N,), values in [0, num_classes).
        test_x: uint8, shape (M, C, H, W), or :class:`ImageFiles`.
        test_y: int64, shape (M,).
        classes: class names, length num_classes.
        fingerprint: hash of the source files the data were read from ("" if unknown).
        mean, std: per-channel normalisation of the training images on the 0..1
            scale, each float32 (C,); stored in the cache so that jobs do not
            recompute them (None: computed on demand by :meth:`channel_stats`).
    """

    train_x: Any
    train_y: np.ndarray
    test_x: Any
    test_y: np.ndarray
    classes: tuple[str, ...]
    fingerprint: str = field(default="", compare=False)
    mean: np.ndarray | None = field(default=None, compare=False, repr=False)
    std: np.ndarray | None = field(default=None, compare=False, repr=False)

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (mean, std) of the training images, each float32 (C,)."""
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        return channel_stats(self.train_x)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train_x, np.ndarray)

    @property
    def sample_ids(self) -> np.ndarray:
        """Training sample ids, int64 shape (N,): the row index into ``train_x``."""
        return np.arange(len(self.train_y), dtype=np.int64)
