"""Dataset sources: the registry :data:`DATASETS` and the decoders of each format.

Each source reads one on-disk layout (idx files of MNIST / Fashion-MNIST,
CIFAR-10/100 python pickles, an ImageFolder tree, or scikit-learn's digits)
and returns an :class:`unseen.images.ImageDataset`. Files are read in sorted
order, so sample ids are stable for a given source. Checking, fingerprinting,
loading by spec and caching are in :mod:`unseen.data`; a change to a decoder
must bump :data:`unseen.data.CACHE_FORMAT` so that old caches are rebuilt.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unseen.images import DatasetError, ImageDataset, ImageFiles, _decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


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
    #: the files whose names, sizes and mtimes stand for the data (the dataset
    #: fingerprint); None: ``files``
    content: Callable[[Path], list[Path]] | None = None


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


#: How many AppleDouble files a message lists by name (the count is always given).
APPLEDOUBLE_NAMED = 10


def _imagefolder_tree(root: Path) -> tuple[list, list, list[str]]:
    """(train pairs, test pairs, class names) of an ImageFolder root; see :func:`_list_tree`.

    A split folder that does not exist has no pairs. Raises :class:`DatasetError`
    naming every macOS AppleDouble file (``._<name>``: the resource fork a copy
    from macOS leaves beside each file, not an image although its name ends in
    ``.jpg``) of both splits at once, with the command that deletes them.
    """
    train_dir, test_dir = root / "train", _imagefolder_test_dir(root)
    train_pairs, classes = _list_tree(train_dir) if train_dir.is_dir() else ([], None)
    test_pairs, classes = _list_tree(test_dir, classes) if test_dir.is_dir() else ([], classes)
    appledouble = [f for f, _ in train_pairs + test_pairs if f.rsplit("/", 1)[-1].startswith("._")]
    if appledouble:
        named = ", ".join(appledouble[:APPLEDOUBLE_NAMED])
        more = len(appledouble) - APPLEDOUBLE_NAMED
        raise DatasetError(
            f"{root}: {len(appledouble)} macOS AppleDouble file(s) ('._*': metadata that a copy"
            " from macOS leaves beside each file; not images although named like them): "
            + named + (f" and {more} more" if more > 0 else "")
            + f". Fix: delete them all with: find {shlex.quote(str(root))} -name '._*' -delete"
            " (then rerun; to copy from macOS without them, set COPYFILE_DISABLE=1 for tar, or"
            " use rsync --exclude='._*')"
        )
    return train_pairs, test_pairs, list(classes or [])


def _imagefolder_images(root: Path) -> list[Path]:
    """Every image of ``train/<class>/`` and ``test/<class>/`` (or ``val/``), sorted.

    An image overwritten in place changes its size or mtime, not its folder's.
    Lists without checking (the fingerprint is computed on every parse, ``--unlock``
    included): AppleDouble files are refused by :func:`_imagefolder_tree`, which the
    parse-time label count (:func:`unseen.data.train_label_counts`) and the loader call.
    """
    images = []
    for split in (root / "train", _imagefolder_test_dir(root)):
        if split.is_dir():
            images += [root / relative for relative, _ in _list_tree(split)[0]]
    return images


def _imagefolder_load(root: Path, options: dict[str, Any]) -> ImageDataset:
    train_pairs, test_pairs, classes = _imagefolder_tree(root)
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
    """Decode every file into one uint8 (N, C, H, W) array, in parallel threads.

    Threads, not processes: Pillow decodes and resizes with the GIL released, and a
    process pool started with ``spawn`` re-imports the caller's script, so
    ``load_dataset`` from a plain script without ``if __name__ == "__main__"`` would
    hang or fail (issue 24, item 8).
    """
    paths = [root / f for f in files]
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(paths) > 2000:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            images = list(pool.map(lambda p: _decode_image(p, size, channels, False), paths))
    else:
        images = [_decode_image(p, size, channels, False) for p in paths]
    if not images:
        return np.zeros((0, channels, size or 1, size or 1), dtype=np.uint8)
    odd = next((i for i, im in enumerate(images) if im.shape != images[0].shape), None)
    if odd is not None:
        (height, width), (first_h, first_w) = images[odd].shape[1:], images[0].shape[1:]
        raise DatasetError(
            f"{paths[odd]} is {width} x {height} pixels, but {paths[0]} (and every image before"
            f" this one) is {first_w} x {first_h}: without dataset.image_size every image must"
            " have the same size. Fix: set dataset.image_size: <pixels> (each image is resized"
            " to that square), or resize that file"
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
        " (e.g. with the valprep.sh script of the PyTorch ImageNet example)",
        content=_imagefolder_images),
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
