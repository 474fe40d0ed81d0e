"""Datasets: a registry of loaders that all return the same in-memory layout.

A :class:`ImageDataset` holds images as ``uint8`` arrays of shape (N, C, H, W)
and integer labels of shape (N,). The sample id of a training image is its
row index in ``train_x``; ids are stable for a given source, so every job of a
run (and every rerun) refers to the same image by the same id.

The workflow decodes a dataset once (``unseen prepare-data``) into a cached
``.npz`` file that every later job loads with :func:`load_cached`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from unseen.io import load_npz, save_npz


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images in memory.

    Attributes:
        train_x: uint8, shape (N, C, H, W).
        train_y: int64, shape (N,), values in [0, num_classes).
        test_x: uint8, shape (M, C, H, W).
        test_y: int64, shape (M,).
        classes: class names, length num_classes.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sample_ids(self) -> np.ndarray:
        """Training sample ids, int64 shape (N,): the row index into ``train_x``."""
        return np.arange(len(self.train_y), dtype=np.int64)


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says where it looked and what to do."""


def load_digits_dataset(root: str | None = None) -> ImageDataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), no download.

    Pixel values 0..16 are scaled to 0..255. The test split is a fixed stratified
    25 % (1,347 train / 450 test), independent of the run seed, so every seed is
    evaluated on the same test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0
    )
    train_idx.sort()
    test_idx.sort()
    return ImageDataset(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        test_x=images[test_idx],
        test_y=labels[test_idx],
        classes=tuple(str(c) for c in range(10)),
    )


DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": load_digits_dataset,
}


def load_dataset(name: str, root: str | None = None) -> ImageDataset:
    """Load dataset ``name`` from ``root`` (ignored for embedded data sets)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}"
        ) from None
    return loader(root)


def save_cached(dataset: ImageDataset, path: str | Path) -> None:
    """Write ``dataset`` to one ``.npz`` file that :func:`load_cached` reads back."""
    save_npz(
        path,
        train_x=dataset.train_x,
        train_y=dataset.train_y,
        test_x=dataset.test_x,
        test_y=dataset.test_y,
        classes=np.array(dataset.classes, dtype=str),
    )


def load_cached(path: str | Path) -> ImageDataset:
    """Read a dataset written by :func:`save_cached`."""
    arrays = load_npz(path)
    return ImageDataset(
        train_x=arrays["train_x"],
        train_y=arrays["train_y"].astype(np.int64),
        test_x=arrays["test_x"],
        test_y=arrays["test_y"].astype(np.int64),
        classes=tuple(str(c) for c in arrays["classes"]),
    )
