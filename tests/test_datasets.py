"""Dataset loaders on small files written here in each real on-disk format.

idx ``.gz`` (MNIST / Fashion-MNIST), CIFAR python pickle batches, and an
ImageFolder tree of PNG and JPEG files; plus the cache (reuse and invalidation)
and the missing-root error, also through a real ``snakemake -n``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unseen.data import (
    check_dataset,
    load_cached,
    load_dataset,
    prepare_cached,
    save_cached,
)
from unseen.datasets import DATASETS, IDX_FILES, read_idx
from unseen.images import DatasetError, ImageFiles, channel_stats

REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` as a gzip idx file: 0x0000, type 0x08, ndim, big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_idx_set(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0):
    """The four official idx files with random 28x28 images; returns the arrays written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    ]
    for name, arr in zip(IDX_FILES, arrays):
        write_idx(root / name, arr)
    return arrays


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_idx_loader_reads_official_format(tmp_path, name):
    tx, ty, vx, vy = write_idx_set(tmp_path)
    data = load_dataset(name, str(tmp_path))
    assert data.train_x.shape == (30, 1, 28, 28) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(data.train_x[:, 0], tx)  # id i = row i of the file
    np.testing.assert_array_equal(data.train_y, ty.astype(np.int64))
    np.testing.assert_array_equal(data.test_y, vy.astype(np.int64))
    np.testing.assert_array_equal(data.sample_ids, np.arange(30))
    assert data.num_classes == 10


def test_idx_loader_accepts_torchvision_raw_layout(tmp_path):
    tx, *_ = write_idx_set(tmp_path / "MNIST" / "raw")
    data = load_dataset("mnist", str(tmp_path))
    np.testing.assert_array_equal(data.train_x[:, 0], tx)


def test_read_idx_rejects_truncated_file(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 5, 28, 28) + b"\0" * 100)
    with pytest.raises(DatasetError, match="header says"):
        read_idx(path)


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _cifar_rows(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def test_cifar10_loader_reads_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"]
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _cifar_rows(rng, 4), rng.integers(0, 10, 4).tolist()
        _pickle(d / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                         "labels": labels, "data": rows,
                                         "filenames": [f"{i}_{j}.png" for j in range(4)]})
        train_rows.append(rows)
        train_labels += labels
    test_rows = _cifar_rows(rng, 3)
    _pickle(d / "test_batch", {"labels": [1, 2, 3], "data": test_rows})
    _pickle(d / "batches.meta", {"label_names": names, "num_vis": 3072})
    data = load_dataset("cifar10", str(tmp_path))
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    # row layout: 1024 red, then green, then blue values, each row-major 32x32
    np.testing.assert_array_equal(data.train_x[5, 1], train_rows[1][1, 1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(data.train_y, train_labels)
    np.testing.assert_array_equal(data.test_y, [1, 2, 3])
    assert data.classes == tuple(names)


def test_cifar100_loader_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    fine = [f"class{i}" for i in range(100)]
    _pickle(d / "train", {"data": _cifar_rows(rng, 6), "fine_labels": [0, 99, 5, 5, 7, 1],
                          "coarse_labels": [0] * 6})
    _pickle(d / "test", {"data": _cifar_rows(rng, 2), "fine_labels": [42, 3],
                         "coarse_labels": [0, 0]})
    _pickle(d / "meta", {"fine_label_names": fine, "coarse_label_names": ["c"] * 20})
    data = load_dataset("cifar100", str(tmp_path))
    assert data.num_classes == 100 and data.train_x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(data.train_y, [0, 99, 5, 5, 7, 1])
    np.testing.assert_array_equal(data.test_y, [42, 3])


def write_image_tree(root: Path, split: str, counts: dict[str, int], size=(12, 10), seed=0):
    """``root/split/<class>/<i>.png|jpg`` with random RGB pixels; returns {relative path: array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for cls, n in counts.items():
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            ext = "png" if i % 2 == 0 else "jpg"
            Image.fromarray(pixels).save(folder / f"img{i:02d}.{ext}")
            written[f"{split}/{cls}/img{i:02d}.{ext}"] = pixels
    # a non-image file in a class folder is skipped, not decoded
    (root / split / next(iter(counts)) / "notes.txt").write_text("not an image")
    return written


def test_imagefolder_loader_in_memory(tmp_path):
    train = write_image_tree(tmp_path, "train", {"cat": 3, "ant": 2, "dog": 4})
    write_image_tree(tmp_path, "val", {"dog": 1, "ant": 2}, seed=1)
    data = load_dataset({"name": "imagefolder", "root": str(tmp_path), "in_memory": True})
    assert data.classes == ("ant", "cat", "dog")  # sorted folder names; labels index them
    assert data.train_x.shape == (9, 3, 10, 12) and data.test_x.shape == (3, 3, 10, 12)
    np.testing.assert_array_equal(data.train_y, [0, 0, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(data.test_y, [0, 0, 2])
    # ids follow the sorted file list: id 2 is cat/img00.png (lossless, so exact)
    np.testing.assert_array_equal(data.train_x[2], train["train/cat/img00.png"].transpose(2, 0, 1))


def test_imagefolder_of_rgba_palette_and_grayscale_files_loads_as_rgb(tmp_path):
    """Mixed image modes (a scrape, a phone export) decode to the same (3, H, W) layout."""
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 4), (10, 20, 30, 0), dtype=np.uint8), "RGBA").save(
        tmp_path / "train/a/rgba.png")
    Image.fromarray(np.full((8, 8), 100, dtype=np.uint8), "L").save(tmp_path / "train/a/grey.png")
    Image.fromarray(np.full((8, 8, 3), (200, 0, 50), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "train/b/palette.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), "L").save(tmp_path / "test/b/grey.png")
    data = load_dataset({"name": "imagefolder", "root": str(tmp_path), "in_memory": True})
    assert data.train_x.shape == (3, 3, 8, 8) and data.test_x.shape == (1, 3, 8, 8)
    # sorted ids: a/grey.png, a/rgba.png, b/palette.png; alpha dropped, grey copied to every channel
    np.testing.assert_array_equal(data.train_x[:, :, 0, 0], [[100, 100, 100], [10, 20, 30], [200, 0, 50]])


def _appledouble(path: Path) -> Path:
    """The ``._<name>`` file a copy from macOS leaves beside ``path`` (not an image)."""
    double = path.with_name(f"._{path.name}")
    double.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40))
    return double


def test_every_macos_appledouble_file_is_named_with_the_fix(tmp_path):
    """Issue 24, item 9: each ``._*`` file used to fail decoding on its own, one per run."""
    from unseen.data import train_label_counts

    train = write_image_tree(tmp_path, "train", {"cat": 3, "dog": 4})
    write_image_tree(tmp_path, "val", {"cat": 1, "dog": 1}, seed=1)
    doubles = [_appledouble(tmp_path / name) for name in
               ("train/cat/img00.png", "train/dog/img03.jpg", "val/dog/img00.png")]
    spec = {"name": "imagefolder", "root": str(tmp_path), "in_memory": True}
    # the loader (prepare_data, the Python API) and the class count of the Snakefile's parse
    for call in (lambda: load_dataset(spec), lambda: train_label_counts(spec)):
        with pytest.raises(DatasetError) as err:
            call()
        message = str(err.value)
        assert f"{tmp_path}: 3 macOS AppleDouble file(s)" in message, message
        for double in doubles:  # every one, both splits, in one message
            assert str(double.relative_to(tmp_path)) in message, message
        assert f"find {tmp_path} -name '._*' -delete" in message, message
    # many: the count and the first 10
    many = [_appledouble(tmp_path / "train" / "dog" / f"extra{i:02d}.jpg") for i in range(12)]
    with pytest.raises(DatasetError) as err:
        load_dataset(spec)
    message = str(err.value)
    assert "15 macOS AppleDouble file(s)" in message and "and 5 more" in message, message
    assert message.count("/._") == 10, message  # the first ten by name
    # the fix: afterwards the dataset loads, with the real images only
    for double in doubles + many:
        double.unlink()
    data = load_dataset(spec)
    assert len(data.train_y) == len(train) and len(data.test_y) == 2


def test_imagefolder_ids_stable_between_memory_and_streaming(tmp_path):
    write_image_tree(tmp_path, "train", {"b": 3, "a": 3}, size=(16, 16))
    write_image_tree(tmp_path, "test", {"a": 1, "b": 1}, size=(16, 16), seed=3)
    spec = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16}
    mem = load_dataset({**spec, "in_memory": True})
    streamed = load_dataset({**spec, "in_memory": False})
    assert isinstance(streamed.train_x, ImageFiles) and not streamed.in_memory
    assert streamed.train_x.shape == mem.train_x.shape == (6, 3, 16, 16)
    np.testing.assert_array_equal(streamed.train_y, mem.train_y)
    for i in range(6):
        np.testing.assert_array_equal(streamed.train_x.load(i), mem.train_x[i])
    subset = streamed.train_x[np.array([4, 1])]
    np.testing.assert_array_equal(subset.load(0), mem.train_x[4])
    # the streamed cache holds the file list, and reads back the same images
    save_cached(streamed, tmp_path / "cache.npz")
    back = load_cached(tmp_path / "cache.npz")
    np.testing.assert_array_equal(back.train_x.load(5), mem.train_x[5])
    assert back.fingerprint == streamed.fingerprint != ""


def test_imagefolder_auto_streams_above_memory_limit(tmp_path):
    write_image_tree(tmp_path, "train", {"a": 2}, size=(8, 8))
    write_image_tree(tmp_path, "test", {"a": 1}, size=(8, 8))
    spec = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "in_memory": "auto"}
    assert load_dataset(spec).in_memory
    assert not load_dataset({**spec, "image_size": 4096, "memory_limit_mb": 1}).in_memory


def test_cache_reused_and_invalidated_when_source_changes(tmp_path):
    root = tmp_path / "fm"
    write_idx_set(root, seed=0)
    spec = {"name": "fashion_mnist", "root": str(root)}
    cache = tmp_path / "dataset.npz"
    first, rebuilt = prepare_cached(spec, cache)
    assert rebuilt
    again, rebuilt = prepare_cached(spec, cache)
    assert not rebuilt
    np.testing.assert_array_equal(again.train_x, first.train_x)
    # same names and sizes, new pixels and mtime: the cache must be rebuilt
    tx, *_ = write_idx_set(root, seed=5)
    stamp = os.stat(root / IDX_FILES[0]).st_mtime_ns + 10**9
    os.utime(root / IDX_FILES[0], ns=(stamp, stamp))
    changed, rebuilt = prepare_cached(spec, cache)
    assert rebuilt
    np.testing.assert_array_equal(changed.train_x[:, 0], tx)
    np.testing.assert_array_equal(load_cached(cache).train_x[:, 0], tx)


def test_cache_stores_the_normalisation_of_the_training_images(tmp_path):
    root = tmp_path / "fm"
    write_idx_set(root, seed=0)
    cache = tmp_path / "dataset.npz"
    data, _ = prepare_cached({"name": "fashion_mnist", "root": str(root)}, cache)
    cached = load_cached(cache)
    assert cached.mean is not None and cached.mean.shape == (1,)
    expected_mean, expected_std = channel_stats(data.train_x)
    np.testing.assert_array_equal(cached.channel_stats()[0], expected_mean)
    np.testing.assert_array_equal(cached.channel_stats()[1], expected_std)
    assert 0 < cached.std[0] < 1


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder"])
def test_missing_root_names_path_and_how_to_obtain(tmp_path, name):
    missing = tmp_path / "no" / "such"
    with pytest.raises(DatasetError) as err:
        check_dataset({"name": name, "root": str(missing)})
    assert str(missing) in str(err.value) and "To obtain the data" in str(err.value)


def test_incomplete_roots_are_rejected(tmp_path):
    write_idx_set(tmp_path / "fm")
    (tmp_path / "fm" / IDX_FILES[2]).unlink()
    with pytest.raises(DatasetError, match=IDX_FILES[2]):
        check_dataset({"name": "fashion_mnist", "root": str(tmp_path / "fm")})
    (tmp_path / "img" / "train").mkdir(parents=True)
    (tmp_path / "img" / "test").mkdir()
    with pytest.raises(DatasetError, match="train"):
        check_dataset({"name": "imagefolder", "root": str(tmp_path / "img")})
    with pytest.raises(DatasetError, match="dataset.root"):
        check_dataset({"name": "cifar10", "root": None})


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
         "--directory", str(workdir), *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def _workdir(tmp_path: Path, dataset: dict) -> Path:
    work = tmp_path / "run"
    (work / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"] = dataset
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def test_snakemake_dry_run_fails_at_parse_time_on_missing_root(tmp_path):
    missing = tmp_path / "nowhere" / "fashion-mnist"
    work = _workdir(tmp_path, {"name": "fashion_mnist", "root": str(missing)})
    result = _snakemake(work, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert str(missing) in output and "To obtain the data" in output
    assert not (work / "results").exists()


def test_snakemake_reruns_prepare_data_when_source_changes(tmp_path):
    root = tmp_path / "fm"

    def write_balanced_idx_set(n_train: int, seed: int) -> None:
        # Every class needs at least K = folds.k training samples, or the Snakefile stops.
        write_idx_set(root, n_train=n_train, seed=seed)
        write_idx(root / IDX_FILES[1], (np.arange(n_train) % 10).astype(np.uint8))

    write_balanced_idx_set(30, 0)
    work = _workdir(tmp_path, {"name": "fashion_mnist", "root": str(root)})
    config_path = work / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["folds"]["k"] = 3
    config_path.write_text(yaml.safe_dump(config))
    target = "results/data/dataset.npz"
    assert _snakemake(work, "--cores", "1", target).returncode == 0
    assert load_cached(work / target).train_x.shape == (30, 1, 28, 28)
    unchanged = _snakemake(work, "-n", target)
    assert "prepare_data" not in unchanged.stdout, unchanged.stdout
    write_balanced_idx_set(40, 9)
    changed = _snakemake(work, "-n", target)
    assert changed.returncode == 0 and "prepare_data" in changed.stdout, changed.stdout


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    from unseen.config import validate_config
    from unseen.models import MODELS

    config = validate_config(yaml.safe_load(path.read_text()))
    assert config["dataset"]["name"] in DATASETS
    assert {config["scoring_model"]["arch"], config["final_model"]["arch"]} <= set(MODELS)


def test_load_dataset_from_a_plain_script_without_a_main_guard(tmp_path):
    """The README's example is such a script: decoding a large ImageFolder in parallel must not
    re-import it (a spawned process pool did, and hung or failed; issue 24, item 8)."""
    import subprocess
    import sys

    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split, n in (("train", 2100), ("test", 20)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    script = tmp_path / "plain.py"
    script.write_text(
        "from unseen.api import load_dataset\n"
        f"data = load_dataset({{'name': 'imagefolder', 'root': {str(root)!r}, 'workers': 2}})\n"
        "print('loaded', len(data.train_y), len(data.test_y))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("loaded") == 1 and "loaded 2100 20" in proc.stdout
