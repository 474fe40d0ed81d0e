"""Datasets by spec: check, fingerprint, load, subset and cache a registered source.

The sources (:data:`unseen.datasets.DATASETS`) all return the same layout, an
:class:`unseen.images.ImageDataset`; its sample id of a training image is its
row index in ``train_x``.

Data that fits in memory is decoded once (``unseen prepare-data``) into a
cached ``.npz`` file that every later job loads with :func:`load_cached`. Data
that does not fit (ImageNet) is cached as its sorted file list instead:
``train_x`` is then an :class:`unseen.images.ImageFiles` that the trainer
streams through a DataLoader with workers; row ``i`` of the file list is sample
id ``i`` on both paths.

Every source has a cheap :func:`check_dataset` (run when the Snakefile is
parsed, so a missing root stops the run before any job starts) and a
:func:`dataset_fingerprint` of its files' names, sizes and mtimes, stored in
the cache so a changed source invalidates it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from unseen.datasets import (
    DATASETS, FASHION_CLASSES, _digits_load, _imagefolder_tree, _source, read_idx,
)
from unseen.images import DatasetError, ImageDataset, ImageFiles
from unseen.io import DamagedFileError, load_npz, read_npz_member, save_npz

CACHE_FORMAT = 2  # bump when the cache layout or a decoder changes


def check_dataset(spec: dict[str, Any]) -> None:
    """Cheap check that ``spec``'s root holds the data (stats a few paths, decodes nothing).

    Args:
        spec: the config's ``dataset`` section: name, root, download, ...

    Raises:
        DatasetError: naming the path it looked at and how to obtain the data.
    """
    name = spec.get("name", "digits")
    source = _source(name)
    if not source.needs_root or spec.get("download"):
        return
    root = spec.get("root")
    if not root:
        raise DatasetError(f"dataset {name!r} needs dataset.root: a folder; {source.how_to}")
    root_path = Path(root).expanduser().resolve()
    missing = [p for p in source.files(root_path) if not p.exists()]
    if not root_path.is_dir() or missing:
        looked = root_path if not root_path.is_dir() else missing[0]
        raise DatasetError(
            f"dataset {name!r}: {looked} does not exist (root {root_path} is missing or"
            f" incomplete). To obtain the data: {source.how_to}"
        )


def dataset_fingerprint(spec: dict[str, Any]) -> str:
    """Hex digest of the dataset spec and the sizes and mtimes of its source files.

    The files are named relative to the root, so a root moved or copied with its
    mtimes (``mv``, ``cp -a``, ``rsync -a``) is the same data; for ImageFolder
    every image counts, so one overwritten in place is a change. Cheap (one
    stat per file, no reading), so the Snakefile can pass it to ``prepare_data``
    as a param: a changed source reruns it.
    """
    name = spec.get("name", "digits")
    root = spec.get("root")
    parts: list[Any] = [CACHE_FORMAT, name, _options(spec)]
    if root:
        root_path = Path(root).expanduser().resolve()
        source = _source(name)
        files = hashlib.sha256()
        for path in (source.content or source.files)(root_path):
            try:
                st = path.stat()
                entry = f"{path.relative_to(root_path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}"
            except FileNotFoundError:
                entry = f"{path.relative_to(root_path).as_posix()}\0missing"
            files.update(entry.encode() + b"\n")
        parts.append(files.hexdigest())
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec keys that change the decoded data (not name/root, not how many decode workers)."""
    skip = ("name", "root", "download", "workers")
    return {k: v for k, v in sorted(spec.items()) if k not in skip}


def load_dataset(name: str | dict[str, Any], root: str | None = None) -> ImageDataset:
    """Decode dataset ``name`` (or a full spec dict) from ``root``.

    Raises:
        DatasetError: if the root is missing or incomplete.
    """
    spec = dict(name) if isinstance(name, dict) else {"name": name, "root": root}
    check_dataset(spec)
    source = _source(spec.get("name", "digits"))
    root_path = Path(spec["root"]).expanduser().resolve() if spec.get("root") else Path(".")
    data = source.load(root_path, spec)
    train_x, train_y = data.train_x, data.train_y
    if spec.get("subset") is not None:
        keep = stratified_subset(train_y, spec["subset"], spec.get("subset_seed", 0))
        train_x, train_y = train_x[keep], train_y[keep]
    return ImageDataset(train_x, train_y, data.test_x, data.test_y, data.classes,
                        fingerprint=dataset_fingerprint(spec))


def stratified_subset(labels: np.ndarray, subset: int | float, seed: int) -> np.ndarray:
    """Sorted positions of a seeded, stratified subset of a training set.

    Args:
        labels: int (N,) class labels.
        subset: an int >= 1 (that many samples) or a float in (0, 1) (that
            fraction of N, rounded half up).
        seed: which subset; the same seed always gives the same samples.

    Returns:
        int64 (n,) increasing positions. Every class keeps its share of the
        training set (largest-remainder rounding), so class frequencies are
        preserved to within one sample. The test split is never subset.
    """
    from unseen.strategies import apportion

    labels = np.asarray(labels, dtype=np.int64)
    n_total = len(labels)
    if isinstance(subset, float) and not float(subset).is_integer():
        if not 0.0 < subset < 1.0:
            raise ValueError(f"dataset.subset must be a count >= 1 or a fraction in (0, 1), got {subset}")
        size = max(1, int(np.floor(subset * n_total + 0.5)))
    else:
        size = int(subset)
    if not 1 <= size <= n_total:
        raise ValueError(
            f"dataset.subset asks for {size} training samples but the training set has "
            f"{n_total}; use a count from 1 to {n_total} or a fraction in (0, 1)"
        )
    counts = np.bincount(labels)
    per_class = apportion(counts.astype(np.float64), size, counts)
    rng = np.random.default_rng(seed)
    keep = [
        rng.permutation(np.flatnonzero(labels == c))[: per_class[c]] for c in range(len(counts))
    ]
    return np.sort(np.concatenate(keep)).astype(np.int64)


def save_cached(dataset: ImageDataset, path: str | Path) -> None:
    """Write ``dataset`` to one ``.npz`` file that :func:`load_cached` reads back.

    Streamed data store their sorted file lists (relative to the root) instead of pixels.
    """
    mean, std = dataset.channel_stats()
    common = dict(train_y=dataset.train_y, test_y=dataset.test_y,
                  classes=np.array(dataset.classes, dtype=str),
                  fingerprint=np.array(dataset.fingerprint),
                  channel_mean=mean, channel_std=std)
    if dataset.in_memory:
        save_npz(path, train_x=dataset.train_x, test_x=dataset.test_x, **common)
    else:
        tr, te = dataset.train_x, dataset.test_x
        save_npz(path, train_files=tr.files, test_files=te.files, root=np.array(str(tr.root)),
                 image_size=np.array(tr.size), channels=np.array(tr.channels), **common)


def load_cached(path: str | Path) -> ImageDataset:
    """Read a dataset written by :func:`save_cached`."""
    a = load_npz(path)
    if "train_x" in a:
        tx, vx = a["train_x"], a["test_x"]
    else:
        root, size, ch = str(a["root"]), int(a["image_size"]), int(a["channels"])
        tx = ImageFiles(root, a["train_files"], size, ch)
        vx = ImageFiles(root, a["test_files"], size, ch)
    return ImageDataset(
        train_x=tx,
        train_y=a["train_y"].astype(np.int64),
        test_x=vx,
        test_y=a["test_y"].astype(np.int64),
        classes=tuple(str(c) for c in a["classes"]),
        fingerprint=str(a.get("fingerprint", "")),
        mean=a.get("channel_mean"),
        std=a.get("channel_std"),
    )


def cached_fingerprint(path: str | Path) -> str | None:
    """The fingerprint stored in cache ``path`` without loading its pixels.

    None if there is no cache or it is damaged (then it is rebuilt), "" if it has none.
    """
    try:
        value = read_npz_member(path, "fingerprint")
    except (FileNotFoundError, DamagedFileError):
        return None
    return "" if value is None else str(value)


def train_label_counts(spec: dict[str, Any], cache: str | Path | None = None,
                       fingerprint: str | None = None):
    """Training images per class, cheaply: (counts int64 (C,), class names), or None.

    Reads labels only: the existing dataset cache when it was made from the
    same source, else the source's label file or folder listing (digits, the
    idx data sets, ImageFolder). None where only decoding would tell (CIFAR
    without a cache). ``fingerprint``: :func:`dataset_fingerprint` of ``spec``
    if the caller has it (one stat per image of an ImageFolder), else computed.
    """
    if cache is not None and cached_fingerprint(cache) == (
            fingerprint or dataset_fingerprint(spec)):
        labels = read_npz_member(cache, "train_y")
        classes = read_npz_member(cache, "classes")
        return np.bincount(labels, minlength=len(classes)), tuple(str(c) for c in classes)
    name = spec.get("name", "digits")
    root = Path(spec["root"]).expanduser().resolve() if spec.get("root") else None
    if name == "digits":
        data = _digits_load(Path("."), spec)
        labels, classes = data.train_y, data.classes
    elif name in ("mnist", "fashion_mnist") and root is not None:
        labels = read_idx(DATASETS[name].files(root)[1])
        classes = FASHION_CLASSES if name == "fashion_mnist" else tuple(str(c) for c in range(10))
    elif name == "imagefolder" and root is not None:
        pairs, _, classes = _imagefolder_tree(root)
        labels, classes = np.array([y for _, y in pairs], dtype=np.int64), tuple(classes)
    else:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    if spec.get("subset") is not None:
        labels = labels[stratified_subset(labels, spec["subset"], spec.get("subset_seed", 0))]
    return np.bincount(labels, minlength=len(classes)), tuple(classes)


def prepare_cached(spec: dict[str, Any], path: str | Path) -> tuple[ImageDataset, bool]:
    """Reuse cache ``path`` if it was made from the same source; else decode and write it.

    Returns:
        (dataset, rebuilt): rebuilt is False when the existing cache was reused.
    """
    if cached_fingerprint(path) == dataset_fingerprint(spec):
        return load_cached(path), False
    data = load_dataset(spec)
    save_cached(data, path)
    return data, True
