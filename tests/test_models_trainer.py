"""Model registry and the trainer: real (short) trainings on CPU, no mocks.

Covers: every registered model builds and maps (B, C, H, W) to (B, classes);
training on Fashion-MNIST-shaped data read through the real idx loader beats
chance by far; the iteration budget (CCS protocol) is honoured; CPU training is
bitwise reproducible for a seed; streamed files train exactly like in-memory data.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unseen.data import load_dataset
from unseen.datasets import IDX_FILES
from unseen.images import channel_stats
from unseen.models import build_model, count_parameters
from unseen.train import (
    TrainSettings,
    predict_logits,
    seed_everything,
    train_model,
    training_length,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "arch,in_shape",
    [("mlp", (1, 8, 8)), ("small_cnn", (1, 28, 28)), ("cifar_resnet18", (3, 32, 32)),
     ("resnet18", (3, 64, 64)), ("resnet50", (3, 64, 64)), ("resnet18", (1, 64, 64))],
)
def test_models_map_images_to_logits(arch, in_shape):
    torch.manual_seed(0)
    model = build_model(arch, in_shape, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *in_shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_cifar_resnet18_is_the_cifar_variant():
    model = build_model("cifar_resnet18", (3, 32, 32), 10)
    stem = model[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert count_parameters(model) == 11_173_962  # the usual CIFAR ResNet-18 size


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fashion_like(n: int, rng: np.random.Generator, templates: np.ndarray):
    """28x28 uint8 images: a class template shifted by up to 3 px plus heavy noise."""
    labels = rng.integers(0, 10, n)
    images = np.empty((n, 28, 28), dtype=np.float64)
    for i, y in enumerate(labels):
        dy, dx = rng.integers(-3, 4, 2)
        images[i] = np.roll(templates[y], (dy, dx), axis=(0, 1))
    images += rng.normal(0, 70, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """The four Fashion-MNIST idx files (2,000 train / 500 test) with learnable classes."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, (10, 7, 7))
    templates = np.kron(coarse, np.ones((4, 4)))  # blocky 28x28 patterns, one per class
    root = tmp_path_factory.mktemp("fashion")
    tx, ty = _fashion_like(2000, rng, templates)
    vx, vy = _fashion_like(500, rng, templates)
    for name, arr in zip(IDX_FILES, (tx, ty, vx, vy)):
        _write_idx(root / name, arr)
    return root


def _train(data, settings, seed=0, arch="small_cnn", ids=None, images=None):
    seed_everything(seed, threads=1)
    ids = np.arange(len(data.train_y)) if ids is None else ids
    model = build_model(arch, data.train_x.shape[1:], data.num_classes, width=16)
    mean, std = channel_stats(data.train_x)
    train_images = data.train_x[ids] if images is None else images
    result = train_model(model, train_images, data.train_y[ids], settings, seed, CPU, mean, std)
    return result, mean, std


def test_short_training_on_fashion_mnist_shaped_data_beats_chance(fashion_root):
    data = load_dataset("fashion_mnist", str(fashion_root))
    settings = TrainSettings(epochs=3, batch_size=64, lr=0.05, crop_padding=2,
                             label_smoothing=0.1, schedule="onecycle")
    result, mean, std = _train(data, settings)
    logits = predict_logits(result.model, data.test_x, mean, std, CPU)
    accuracy = float((logits.argmax(1) == data.test_y).mean())
    assert accuracy > 0.6, accuracy  # chance is 0.1
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.samples_per_second > 0


def test_iteration_budget_is_honoured(fashion_root):
    data = load_dataset("fashion_mnist", str(fashion_root))
    settings = TrainSettings(epochs=50, iterations=7, batch_size=32)
    for n in (100, 300):  # different coreset sizes, the same number of SGD steps
        result, _, _ = _train(data, settings, arch="mlp", ids=np.arange(n))
        steps = sum(h["samples"] for h in result.history) // 32
        assert steps == 7
        assert len(result.history) == training_length(settings, n // 32)[1] == -(-7 // (n // 32))
    assert training_length(TrainSettings(epochs=4), 10) == (40, 4)


def test_recording_follows_the_iteration_budget(fashion_root):
    data = load_dataset("fashion_mnist", str(fashion_root))
    seed_everything(0, threads=1)
    model = build_model("mlp", (1, 28, 28), 10, width=32)
    mean, std = channel_stats(data.train_x)
    result = train_model(model, data.train_x[:64], data.train_y[:64],
                         TrainSettings(iterations=5, batch_size=32), 0, CPU, mean, std,
                         record_images=data.train_x[100:110], record_epochs=[1, 9])
    assert result.recorded_epochs.tolist() == [1, 3]
    assert result.recorded_logits.shape == (2, 10, 10)


def test_cpu_training_is_seeded_and_reproducible(fashion_root):
    data = load_dataset("fashion_mnist", str(fashion_root))
    settings = TrainSettings(epochs=1, batch_size=64, crop_padding=2, flip=True)
    ids = np.arange(512)
    a, _, _ = _train(data, settings, seed=3, ids=ids)
    b, _, _ = _train(data, settings, seed=3, ids=ids)
    c, _, _ = _train(data, settings, seed=4, ids=ids)
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_streamed_files_train_exactly_like_in_memory_data(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for c in ("a", "b", "c"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n // 3):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / c / f"{i}.png")
    spec = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16}
    mem = load_dataset({**spec, "in_memory": True})
    streamed = load_dataset({**spec, "in_memory": False})
    settings = TrainSettings(epochs=2, batch_size=8, crop_padding=2, flip=True, workers=2)
    ids = np.array([0, 3, 5, 6, 7, 10, 11, 12, 15, 17, 20, 23])
    a, mean, std = _train(mem, settings, ids=ids)
    b, _, _ = _train(mem, settings, ids=ids, images=streamed.train_x[ids])
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # inference: same logits up to float rounding (a stacked batch vs a slice)
    np.testing.assert_allclose(
        predict_logits(a.model, mem.test_x, mean, std, CPU, batch_size=4),
        predict_logits(a.model, streamed.test_x, mean, std, CPU, batch_size=4, workers=2),
        rtol=0, atol=1e-5,
    )
