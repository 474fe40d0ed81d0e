"""Datasets: a registry of loaders that all return the same layout.

A :class:`ImageDataset` holds images as ``uint8`` arrays of shape (N, C, H, W)
and integer labels of shape (N,). The sample id of a training image is its
row index in ``train_x``; ids are stable for a given source (files are read in
sorted order), so every job of a run (and every rerun) refers to the same
image by the same id.

Data that fits in memory is decoded once (``unseen prepare-data``) into a
cached ``.npz`` file that every later job loads with :func:`load_cached`. Data
that does not fit (ImageNet) is cached as its sorted file list instead:
``train_x`` is then an :class:`ImageFiles` that the trainer streams through a
DataLoader with workers; row ``i`` of the file list is sample id ``i`` on both
paths.

Every source has a cheap :func:`check_dataset` (run when the Snakefile is
parsed, so a missing root stops the run before any job starts) and a
:func:`dataset_fingerprint` of its files' names, sizes and mtimes, stored in
the cache so a changed source invalidates it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unseen.io import DamagedFileError, load_npz, read_npz_member, save_npz

CACHE_FORMAT = 2  # bump when the cache layout or a decoder changes
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


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


# ---------------------------------------------------------------------------
# Sources. Each has: files(root) -> the files it reads (for the check and the
# fingerprint), load(root, options) -> ImageDataset, and a how-to line.


@dataclass(frozen=True)
class Source:
    """One registered data set: where its files are and how to decode them."""

    files: Callable[[Path], list[Path]]
    load: Callable[[Path, dict[str, Any]], ImageDataset]
    how_to: str
    needs_root: bool = True


IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def _idx_dir(root: Path, folder: str) -> Path:
    """The folder holding the four idx files: ``root``, ``root/raw`` or torchvision's ``root/<folder>/raw``."""
    for cand in (root, root / "raw", root / folder / "raw"):
        if all((cand / f).is_file() for f in IDX_FILES):
            return cand
    return root


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) of unsigned bytes into a uint8 array.

    Header: two zero bytes, type code 0x08 (ubyte), number of dims, then one
    big-endian uint32 per dim; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an idx file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims.tolist()} but holds {data.size} bytes")
    return data.reshape(dims).copy()  # writable, and not tied to the decompressed buffer


def _idx_source(folder: str, classes: tuple[str, ...], url: str) -> Source:
    def files(root: Path) -> list[Path]:
        d = _idx_dir(root, folder)
        return [d / f for f in IDX_FILES]

    def load(root: Path, options: dict[str, Any]) -> ImageDataset:
        tx, ty, vx, vy = (read_idx(p) for p in files(root))
        if len(tx) != len(ty) or len(vx) != len(vy):
            raise DatasetError(f"{root}: image and label counts differ")
        return ImageDataset(tx[:, None], ty.astype(np.int64), vx[:, None], vy.astype(np.int64),
                            classes)

    return Source(files, load, f"download the four idx .gz files from {url} into it")


def _cifar_dir(root: Path, folder: str) -> Path:
    return root if (root / "batches.meta").is_file() or (root / "meta").is_file() else root / folder


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def _cifar_source(folder: str, train: list[str], test: str, meta: str, label_key: str,
                  names_key: str, tv_class: str) -> Source:
    def files(root: Path) -> list[Path]:
        d = _cifar_dir(root, folder)
        return [d / f for f in [*train, test, meta]]

    def load(root: Path, options: dict[str, Any]) -> ImageDataset:
        if options.get("download"):
            # torchvision downloads and checks the md5 sums; we read its layout below.
            import torchvision

            getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
        d = _cifar_dir(root, folder)

        def part(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
            batches = [_unpickle(d / n) for n in names]
            x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
            y = np.concatenate([np.asarray(b[label_key]) for b in batches])
            return np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)

        tx, ty = part(train)
        vx, vy = part([test])
        classes = tuple(_unpickle(d / meta)[names_key])
        return ImageDataset(tx, ty, vx, vy, classes)

    url = ("https://www.cs.toronto.edu/~kriz/cifar.html (the python version), or set"
           " dataset.download: true")
    return Source(files, load, f"extract {folder} from {url}")


def _list_tree(split_dir: Path, classes: Sequence[str] | None = None):
    """Sorted (relative path, label) pairs of ``split_dir/<class>/<image>``; and the class names."""
    if classes is None:
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    pairs = []
    for entry in sorted(e.name for e in os.scandir(split_dir) if e.is_dir()):
        if entry not in index:
            raise DatasetError(f"{split_dir / entry}: class {entry!r} is not a training class")
        for name in sorted(os.listdir(split_dir / entry)):
            if name.lower().endswith(IMAGE_SUFFIXES):
                pairs.append((f"{split_dir.name}/{entry}/{name}", index[entry]))
    return pairs, list(classes)


def _imagefolder_test_dir(root: Path) -> Path:
    return root / "test" if (root / "test").is_dir() else root / "val"


def _imagefolder_files(root: Path) -> list[Path]:
    # The class folders themselves (their mtime changes when files are added or
    # removed) keep the parse-time check and fingerprint cheap for ImageNet.
    out = [root / "train", _imagefolder_test_dir(root)]
    for split in out[:]:
        if split.is_dir():
            # A split without class folders is incomplete: name the folder we expected.
            out += sorted(Path(e.path) for e in os.scandir(split) if e.is_dir()) or [
                split / "<class>"
            ]
    return out


def _imagefolder_load(root: Path, options: dict[str, Any]) -> ImageDataset:
    train_pairs, classes = _list_tree(root / "train")
    test_pairs, _ = _list_tree(_imagefolder_test_dir(root), classes)
    if not train_pairs:
        raise DatasetError(f"{root / 'train'}: no image files in its class folders")
    size = options.get("image_size")
    channels = int(options.get("channels", 3))
    train_files = [p for p, _ in train_pairs]
    test_files = [p for p, _ in test_pairs]
    ty = np.array([y for _, y in train_pairs], dtype=np.int64)
    vy = np.array([y for _, y in test_pairs], dtype=np.int64)
    if not _decide_in_memory(options, len(train_files) + len(test_files), channels, size):
        if size is None:
            raise DatasetError("dataset.image_size is required when the data are streamed")
        return ImageDataset(ImageFiles(root, train_files, size, channels), ty,
                            ImageFiles(root, test_files, size, channels), vy, tuple(classes))
    tx = _decode_all(root, train_files, size, channels, options.get("workers", 0))
    vx = _decode_all(root, test_files, size, channels, options.get("workers", 0))
    return ImageDataset(tx, ty, vx, vy, tuple(classes))


def _decode_all(root: Path, files: list[str], size: int | None, channels: int,
                workers: int) -> np.ndarray:
    """Decode every file into one uint8 (N, C, H, W) array, in parallel processes."""
    paths = [root / f for f in files]
    args = [(p, size, channels, False) for p in paths]
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(paths) > 2000:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            images = pool.starmap(_decode_image, args, chunksize=256)
    else:
        images = [_decode_image(*a) for a in args]
    if not images:
        return np.zeros((0, channels, size or 1, size or 1), dtype=np.uint8)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DatasetError(
            f"{root}: images have different sizes {sorted(shapes)[:3]}...; set dataset.image_size"
        )
    return np.stack(images)


def _decide_in_memory(options: dict[str, Any], n: int, channels: int, size: int | None) -> bool:
    """``in_memory``: true, false, or auto (decoded size under ``memory_limit_mb``)."""
    mode = options.get("in_memory", "auto")
    if mode in (True, "true"):
        return True
    if mode in (False, "false"):
        return False
    if size is None:
        return True  # small native-size images (e.g. CIFAR as JPEG); decoded as they are
    return n * channels * size * size <= options.get("memory_limit_mb", 8000) * 2**20


def _digits_load(root: Path, options: dict[str, Any]) -> ImageDataset:
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
    return ImageDataset(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
                        tuple(str(c) for c in range(10)))


DATASETS: dict[str, Source] = {
    "cifar10": _cifar_source(
        "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
        "batches.meta", "labels", "label_names", "CIFAR10"),
    "cifar100": _cifar_source(
        "cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names",
        "CIFAR100"),
    "imagefolder": Source(
        _imagefolder_files, _imagefolder_load,
        "arrange it as train/<class>/<image> plus test/<class>/<image> (or val/); for"
        " ImageNet-1K extract ILSVRC2012 train and val and sort val into class folders"
        " (e.g. with the valprep.sh script of the PyTorch ImageNet example)"),
    "fashion_mnist": _idx_source(
        "FashionMNIST", FASHION_CLASSES,
        "https://github.com/zalandoresearch/fashion-mnist (or on Debian/Ubuntu: apt-get install"
        " dataset-fashion-mnist, then root: /usr/share/datasets/fashion-mnist)"),
    "mnist": _idx_source(
        "MNIST", tuple(str(c) for c in range(10)),
        "https://yann.lecun.com/exdb/mnist/ (torchvision's MNIST/raw layout works too)"),
    "digits": Source(lambda root: [], _digits_load, "", needs_root=False),
}


def _source(name: str) -> Source:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


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
    """Hex digest of the dataset spec and the names, sizes and mtimes of its source files.

    Cheap (a few stats; class folders for ImageFolder trees), so the Snakefile
    can pass it to ``prepare_data`` as a param: a changed source reruns it.
    """
    name = spec.get("name", "digits")
    root = spec.get("root")
    parts: list[Any] = [CACHE_FORMAT, name, _options(spec)]
    if root:
        root_path = Path(root).expanduser().resolve()
        parts.append(str(root_path))
        for path in _source(name).files(root_path):
            try:
                st = path.stat()
                parts.append((str(path), st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                parts.append((str(path), None))
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
    from unseen.selection import apportion

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


def train_label_counts(spec: dict[str, Any], cache: str | Path | None = None):
    """Training images per class, cheaply: (counts int64 (C,), class names), or None.

    Reads labels only: the existing dataset cache when it was made from the
    same source, else the source's label file or folder listing (digits, the
    idx data sets, ImageFolder). None where only decoding would tell (CIFAR
    without a cache).
    """
    if cache is not None and cached_fingerprint(cache) == dataset_fingerprint(spec):
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
        pairs, classes = _list_tree(root / "train")
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
