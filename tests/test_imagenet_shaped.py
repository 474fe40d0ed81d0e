"""An ImageNet-shaped run: 1,000 classes of JPEGs streamed from an ImageFolder tree, end to end.

config/imagenet.yaml with its data path as it is (``imagefolder``, ``in_memory:
false``, DataLoader workers, the statistics record at 1,000 classes) and
everything that costs compute made tiny: 2,500 small JPEGs of random sizes
(2 or 3 per class, ImageNet's class and file names) resized and centre-cropped
to 32 px by the workers, a small CNN for one epoch, K = 2, one scorer, one rate.
A real Snakemake run; the tree is written here, nothing needs ../shared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, benchmark_script, deep_update, run_snakemake
from unseen.budget import steps_per_epoch
from unseen.data import load_cached
from unseen.images import ImageFiles
from unseen.io import load_npz, read_id_list
from unseen.scorers import STAT_BYTES_PER_SAMPLE_EPOCH, STAT_NAMES
from unseen.selection import coreset_size

pytestmark = pytest.mark.workflow

CLASSES = 1000
TRAIN_PER_CLASS = [2 + c % 2 for c in range(CLASSES)]  # 2 or 3: unequal classes, as in ImageNet
N_TRAIN = sum(TRAIN_PER_CLASS)
K = 2
RATE = 0.7
TINY_MODEL = {"arch": "small_cnn", "options": {"width": 8},
              "train": {"epochs": 1, "batch_size": 128, "crop_padding": 4, "workers": 1}}


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("imagenet_shaped")
    root = benchmark_script("imagenet_data_path").write_jpeg_tree(
        base / "imagenet", CLASSES, TRAIN_PER_CLASS, 1, width=(36, 48), height=(32, 44), noise=10)
    config = deep_update(yaml.safe_load((REPO / "config/imagenet.yaml").read_text()), {
        "dataset": {"root": str(root), "image_size": 32},
        "folds": {"k": K},
        "scoring_model": TINY_MODEL, "final_model": TINY_MODEL,
        "scorers": ["el2n"], "methods": ["full", "unseen_single"], "pruning_rates": [RATE],
        "selection": {"strategy": ["top"]},
        "device": "cpu",
        "resources": {"train": {"threads": 1, "mem_mb": 2000, "gpu": 0},
                      "light": {"mem_mb": 1000}},
    })
    workdir = base / "run"
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(workdir, "--cores", "2")
    return workdir


def test_the_cache_is_the_sorted_file_list_of_1000_classes(imagenet_run):
    data = load_cached(imagenet_run / "results/data/dataset.npz")
    assert isinstance(data.train_x, ImageFiles) and not data.in_memory  # streamed, not decoded
    assert data.num_classes == CLASSES and len(data.test_y) == CLASSES
    assert np.bincount(data.train_y).tolist() == TRAIN_PER_CLASS
    files = list(data.train_x.files)
    assert files == sorted(files) and files[0] == "train/n00000000/n00000000_0.JPEG"
    assert data.train_x.shape == (N_TRAIN, 3, 32, 32)
    assert data.train_x.load(N_TRAIN - 1).shape == (3, 32, 32)  # decoded, resized and cropped


def test_every_sample_is_scored_once_by_the_fold_model_that_did_not_train_on_it(imagenet_run):
    seed = imagenet_run / "results/seed0"
    folds = pd.read_parquet(seed / "split/folds.parquet")
    assert sorted(folds["sample_id"]) == list(range(N_TRAIN))
    scored = []
    for k in range(K):
        pred = load_npz(seed / f"folds/fold{k}/predictions.npz")
        # paper mode: trained on fold k, scored the other fold
        assert set(pred["train_ids"]) == set(folds.loc[folds.fold == k, "sample_id"])
        assert set(pred["sample_ids"]) == set(folds.loc[folds.fold != k, "sample_id"])
        # 1,000 classes: per-sample statistics of one recorded epoch (the last), not
        # (R, 1000) logits; with the fitting model's SGD steps a fold model trains > 1 epoch
        last = math.ceil(int(pred["train_steps"]) / steps_per_epoch(len(pred["train_ids"]), 128))
        assert "logits" not in pred and pred["epochs"].tolist() == [last] and last > 1
        r = len(pred["sample_ids"])
        assert all(pred[f"stat_{name}"].shape == (1, r) for name in STAT_NAMES)
        size = (seed / f"folds/fold{k}/predictions.npz").stat().st_size
        assert size < r * (16 + STAT_BYTES_PER_SAMPLE_EPOCH) + 8 * len(pred["train_ids"]) + 20_000
        scored.append(pred["sample_ids"])
    assert sorted(np.concatenate(scored)) == list(range(N_TRAIN))  # each one exactly once
    oof = pd.read_parquet(seed / "scores/oof/el2n.parquet")
    assert oof["sample_id"].tolist() == list(range(N_TRAIN))
    assert (oof["n_scores"] == K - 1).all() and np.isfinite(oof["score"]).all()


def test_coreset_size_and_retrain_metrics_at_1000_classes(imagenet_run):
    seed = imagenet_run / "results/seed0"
    target = coreset_size(N_TRAIN, RATE)
    folder = seed / f"coresets/unseen_single-el2n-top/rate{RATE:g}"
    coreset = pd.read_parquet(folder / "coreset.parquet")
    assert len(coreset) == target and coreset["sample_id"].is_unique
    assert coreset["sample_id"].between(0, N_TRAIN - 1).all()
    ids = read_id_list(folder / "coreset.txt")
    assert ids.tolist() == sorted(coreset["sample_id"])
    retrains = {"full": N_TRAIN, f"full_steps/unseen_single-el2n-top/rate{RATE:g}": target}
    for name, size in retrains.items():
        metrics = json.loads((seed / f"retrain/{name}/metrics.json").read_text())
        assert metrics["coreset_size"] == size
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert len(metrics["per_class_accuracy"]) == CLASSES
    summary = pd.read_parquet(imagenet_run / "results/summary.parquet")
    assert sorted(summary["method"]) == ["full", "unseen_single"]
    assert (imagenet_run / "results/report/per_class_accuracy.png").exists()
