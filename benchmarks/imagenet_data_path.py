"""ImageNet-shaped data path: JPEG decode rate and the disk a scoring model's files take.

Not a test. Measures on this machine, with the package's own loaders:

* **decode**: images/s of the streamed ImageFolder path (``dataset.in_memory:
  false``): one process decoding with :meth:`unseen.images.ImageFiles.load`
  (resize to 8/7 of ``image_size`` and centre crop; what each DataLoader worker
  does), and the trainer's DataLoader itself (:func:`unseen.batches._streamed_batches`)
  with 1 and 2 workers; and of the in-memory path's decode threads
  (:func:`unseen.datasets._decode_all`, ``dataset.workers``) at the small size of
  the in-memory ImageNet variant;
* **records**: the size of ``predictions.npz`` as a real scoring-model job
  (:func:`unseen.jobs.train_scoring_model`) writes it at 1,000 classes, for one and
  two recorded epochs, in the statistics format (``record_format: auto`` above
  100 classes) and the logits format, hence bytes per scored sample and per
  recorded epoch; the size of ``model.pt`` of ``resnet18`` and ``resnet50`` at
  1,000 classes; and the dataset cache (the file list) per image;
* **extrapolated**: what one fold model of ``config/imagenet.yaml`` then needs
  on ILSVRC2012 (1,281,167 training images): images decoded, decode
  worker-seconds, and disk. Computed from the measured figures above, not
  measured; GPU throughput is not part of it.

The images are synthetic JPEGs shaped like ImageNet's (ImageNet-style class and
file names, random sizes around 400 x 350, smooth colour fields with
pixel noise; their mean file size is in the result, ILSVRC2012's train set
averages about 110 KB) unless ``--root`` names a real ImageFolder tree, e.g. an
ImageNet copy. They sit in the page cache while decoded: disk read speed is not
measured. Writes ``benchmarks/results/imagenet_data_path_cpu.json``::

    PYTHONPATH=. python benchmarks/imagenet_data_path.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

#: ILSVRC2012 training images.
IMAGENET_TRAIN_IMAGES = 1_281_167
#: ILSVRC2012 validation images.
IMAGENET_VAL_IMAGES = 50_000


def write_jpeg_tree(
    root: str | Path,
    classes: int,
    train_per_class: int | Sequence[int],
    test_per_class: int,
    width: tuple[int, int] = (300, 500),
    height: tuple[int, int] = (250, 450),
    noise: float = 30.0,
    quality: int = 90,
    seed: int = 0,
) -> Path:
    """Write an ImageFolder tree of JPEGs shaped like ImageNet's under ``root``; return ``root``.

    ``root/train/n<8 digits>/n<8 digits>_<i>.JPEG`` and ``root/val/...`` (ImageNet's
    class and file names). Each image has a random size, width in ``width`` and
    height in ``height`` (inclusive), and is a smooth random colour field (a
    coarse grid upsampled, tinted by the class) plus Gaussian pixel noise of std
    ``noise``, saved at JPEG ``quality``. ``train_per_class``: one count for every
    class or one per class. Deterministic for a given ``seed``.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = ([int(train_per_class)] * classes if np.isscalar(train_per_class)
              else [int(c) for c in train_per_class])
    if len(counts) != classes:
        raise ValueError(f"train_per_class has {len(counts)} counts for {classes} classes")
    tints = rng.uniform(-60, 60, (classes, 3))
    for split, per_class in (("train", counts), ("val", [test_per_class] * classes)):
        for c in range(classes):
            wnid = f"n{c:08d}"
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class[c]):
                w = int(rng.integers(width[0], width[1] + 1))
                h = int(rng.integers(height[0], height[1] + 1))
                coarse = rng.uniform(0, 255, (h // 32 + 2, w // 32 + 2, 3)) + tints[c]
                field = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
                    (w, h), Image.BICUBIC)
                pixels = np.asarray(field, dtype=np.float32) + rng.normal(0, noise, (h, w, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / f"{wnid}_{i}.JPEG", quality=quality)
    return root


# ---------------------------------------------------------------------------
# Decode rates


def _streamed(root: Path, image_size: int):
    """The training images of ``root`` as the workflow streams them (ImageFiles)."""
    from unseen.data import load_dataset

    data = load_dataset({"name": "imagefolder", "root": str(root), "image_size": image_size,
                         "in_memory": False})
    return data


def _children_cpu() -> float:
    """CPU seconds of this process's finished (reaped) children, e.g. DataLoader workers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rates(n: int, wall: float, cpu: float, units: int = 1) -> dict:
    """Images/s of wall time and per CPU-second (what one worker or thread does with a core
    of its own; the cores here are shared, so the wall rate depends on the load)."""
    return {"images": n, "wall_seconds": wall, "cpu_seconds": cpu,
            "images_per_s": n / wall, "images_per_cpu_s": n / cpu if cpu > 0 else None,
            "images_per_s_per_unit": n / wall / units}


def decode_one_process(files, n: int) -> dict:
    """One process decoding the first ``n`` of ``files`` (ImageFiles.load), as one worker does."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        files.load(i)
    return _rates(n, time.perf_counter() - t0, time.process_time() - c0)


def decode_dataloader(files, n: int, workers: int, batch_size: int) -> dict:
    """The trainer's DataLoader (:func:`unseen.batches._streamed_batches`) over the first
    ``n`` of ``files`` with ``workers`` processes. Wall time includes the workers' start;
    CPU time is the workers' and this process's (collation, receiving the batches)."""
    import torch

    from unseen.batches import _streamed_batches

    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    count = 0
    for batch in _streamed_batches(files, batches, torch.device("cpu"), workers):
        count += len(batch)
    wall = time.perf_counter() - t0
    main_cpu, workers_cpu = time.process_time() - c0, _children_cpu() - k0
    if count != n:
        raise RuntimeError(f"the DataLoader gave {count} images of {n}")
    return {"workers": workers, **_rates(n, wall, main_cpu + workers_cpu, max(workers, 1)),
            "workers_cpu_seconds": workers_cpu, "main_process_cpu_seconds": main_cpu}


def decode_threads(root: Path, files: list[str], size: int, threads: int) -> dict:
    """The in-memory path's decode (:func:`unseen.datasets._decode_all`) in ``threads`` threads."""
    from unseen.datasets import _decode_all

    t0, c0 = time.perf_counter(), time.process_time()
    images = _decode_all(root, files, size, 3, threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if len(images) != len(files):
        raise RuntimeError(f"decoded {len(images)} images of {len(files)}")
    return {"threads": threads, "image_size": size, **_rates(len(files), wall, cpu, threads)}


# ---------------------------------------------------------------------------
# File sizes


def record_sizes(workdir: Path, classes: int, per_class: int, epochs: int = 2) -> dict:
    """``predictions.npz`` as :func:`unseen.jobs.train_scoring_model` writes it at ``classes``.

    A digits-sized MLP on ``classes * per_class`` random 8x8 images (the record's
    size does not depend on the model or the images), half of them trained on and
    the other half scored, as a fold model of K = 2 does. Both record formats,
    with the last epoch recorded and with one more epoch recorded.
    """
    from unseen.data import save_cached
    from unseen.images import ImageDataset
    from unseen.jobs import ScoringModelJob, train_scoring_model

    rng = np.random.default_rng(0)
    n = classes * per_class
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    images = rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    names = tuple(f"n{c:08d}" for c in range(classes))
    cache = workdir / "dataset.npz"
    save_cached(ImageDataset(images, labels, images[:classes], labels[:classes], names), cache)
    ids = np.arange(n, dtype=np.int64)
    train_ids, record_ids = ids[::2], ids[1::2]
    r, t = len(record_ids), len(train_ids)
    result = {"classes": classes, "scored_samples": r, "train_samples": t, "formats": {}}
    for record_format in ("auto", "logits"):
        files = {}
        for record_epochs in ([], [1]):
            out = workdir / f"{record_format}-{len(record_epochs) + 1}"
            out.mkdir()
            job = ScoringModelJob(
                dataset_cache=str(cache), model_spec={"arch": "mlp", "options": {"width": 16}},
                train_settings={"epochs": epochs, "batch_size": 128}, record_epochs=record_epochs,
                seed=0, device="cpu", threads=1, checkpoint=str(out / "model.pt"),
                predictions=str(out / "predictions.npz"), record_format=record_format,
                state_every_minutes=None)
            train_scoring_model(job, train_ids, record_ids, "fold0")
            files[len(record_epochs) + 1] = out / "predictions.npz"
        with np.load(files[1]) as arrays:  # where the bytes of one recorded epoch go
            parts = {key: arrays[key] for key in arrays.files}
        per_epoch = [v for k, v in parts.items() if k == "logits" or k.startswith("stat_")]
        per_scored = [parts["sample_ids"], parts["labels"]]
        size_1, size_2 = (files[e].stat().st_size for e in (1, 2))
        result["formats"][record_format] = {
            "stored": "logits" if "logits" in parts else "stats",
            "file_bytes_1_epoch": size_1,
            "file_bytes_2_epochs": size_2,
            # what the second recorded epoch added to the file, per scored sample
            "bytes_per_scored_sample_per_recorded_epoch": (size_2 - size_1) / r,
            # the arrays of the file with one recorded epoch, by what they grow with
            "recorded_bytes_per_scored_sample_and_epoch": sum(v.nbytes for v in per_epoch) / r,
            "id_bytes_per_scored_sample": sum(v.nbytes for v in per_scored) / r,
            "bytes_per_train_id": parts["train_ids"].nbytes / t,
            # zip and .npy headers, scalars and the settings it was made with
            "fixed_bytes": size_1 - sum(v.nbytes for v in [*per_epoch, *per_scored,
                                                            parts["train_ids"]]),
        }
    return result


def checkpoint_bytes(arch: str, classes: int, train_ids: int, image_size: int) -> int:
    """Bytes of ``model.pt`` (:func:`unseen.checkpoints.checkpoint_contents`) of ``arch``."""
    import tempfile

    import torch

    from unseen.checkpoints import checkpoint_contents
    from unseen.models import build_model

    model = build_model(arch, (3, image_size, image_size), classes)
    norm = (np.zeros(3, np.float32), np.ones(3, np.float32))
    contents = checkpoint_contents(model, {"arch": arch, "options": {}},
                                   np.arange(train_ids, dtype=np.int64), 0, "fold0", norm)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(contents, path)
        return path.stat().st_size


def training_state_bytes(arch: str, classes: int, train: dict, samples: int = 16) -> int:
    """Bytes of a training state (:mod:`unseen.resume`) of ``arch`` written during training.

    A real :func:`unseen.subset_training.train_on_subset` of one epoch on ``samples``
    random 32 px images with ``train``'s optimizer settings (batch 8), writing its
    state after every SGD step; the file left is the state after the last one. It
    holds the weights, the optimizer's momentum, the random generators and the
    epoch's sample order (8 bytes per training sample).
    """
    from unseen.images import ImageDataset
    from unseen.resume import TrainingCheckpoint
    from unseen.subset_training import train_on_subset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (samples, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(samples, dtype=np.int64) % classes
    data = ImageDataset(images, labels, images, labels, tuple(f"n{c:08d}" for c in range(classes)))
    settings = {**train, "epochs": 1, "iterations": 0, "batch_size": 8, "workers": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ".model.pt.training-state.pt"
        train_on_subset(data, np.arange(samples), None, {"arch": arch, "options": {}}, settings,
                        [], 0, "cpu", 1, checkpoint=TrainingCheckpoint(path, key="",
                                                                      every_seconds=1e-9))
        return path.stat().st_size


def cache_bytes_per_image(data, workdir: Path) -> float:
    """Bytes per image of the streamed dataset cache (:func:`unseen.data.save_cached`)."""
    from unseen.data import save_cached

    path = workdir / "dataset.npz"
    save_cached(data, path)
    return path.stat().st_size / (len(data.train_y) + len(data.test_y))


# ---------------------------------------------------------------------------
# ImageNet, extrapolated


def _shown(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (results name no checkout)."""
    path, repo = Path(path).resolve(), Path(__file__).resolve().parents[1]
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


def extrapolate(config_path: Path, measured: dict, n_train: int = IMAGENET_TRAIN_IMAGES,
                n_test: int = IMAGENET_VAL_IMAGES) -> dict:
    """One fold model of ``config_path`` on ImageNet, from the measured rates and sizes.

    Images decoded: the SGD steps of the scoring budget times the batch, plus one
    inference pass over the scored samples per recorded epoch, plus the
    un-augmented pass over its own training samples (the fit statistics,
    :func:`unseen.jobs.model_fit`). Paper mode: a fold model trains on about N/K
    samples and scores the rest (holdout: the other way round).
    """
    import yaml

    from unseen.budget import epochs_of, planned_steps, scoring_train_settings
    from unseen.config import validate_config
    from unseen.subset_training import uses_statistics

    config = validate_config(yaml.safe_load(Path(config_path).read_text()))
    k, mode = config["folds"]["k"], config["folds"]["mode"]
    fold = round(n_train / k)
    trained, scored = (fold, n_train - fold) if mode == "paper" else (n_train - fold, fold)
    train = config["scoring_model"]["train"]
    settings = scoring_train_settings(train, n_train, config["budget"]["scoring"])
    steps = planned_steps(trained, settings)
    last_epoch = epochs_of(trained, settings)
    recorded = len({e for e in config["record_epochs"] if e <= last_epoch} | {last_epoch})
    samples_seen = steps * train["batch_size"]
    decoded = samples_seen + recorded * scored + trained
    rate = measured["decode"]["images_per_cpu_s_per_worker"]
    workers = train["workers"]
    # at 1,000 classes "auto" stores statistics, so its measurement stands for "stats" too
    stats = uses_statistics(config["record_format"], measured["records"]["classes"])
    record = measured["records"]["formats"]["auto" if stats else "logits"]
    predictions = (record["fixed_bytes"] + scored * record["id_bytes_per_scored_sample"]
                   + recorded * scored * record["bytes_per_scored_sample_per_recorded_epoch"]
                   + trained * record["bytes_per_train_id"])
    model_pt = measured["checkpoints"][config["scoring_model"]["arch"]]
    # the measured state with the fold's sample order instead of the measurement's
    state = (measured["training_states"][config["scoring_model"]["arch"]]
             + 8 * (trained - measured["training_state_samples"]))
    worker_seconds = decoded / rate
    return {
        "config": _shown(config_path),
        "train_images": n_train, "k": k, "mode": mode, "arch": config["scoring_model"]["arch"],
        "image_size": config["dataset"]["image_size"],
        "fold_model": {
            "trained_samples": trained, "scored_samples": scored,
            "scoring_budget": config["budget"]["scoring"], "sgd_steps": steps,
            "epochs_of_its_fold": last_epoch, "recorded_epochs": recorded,
            "record_stored_as": record["stored"],
            "images_decoded": decoded,
            "decode_worker_hours": worker_seconds / 3600,
            "dataloader_workers": workers,
            "decode_bound_wall_hours_at_workers": worker_seconds / workers / 3600,
            "predictions_npz_bytes": predictions,
            "model_pt_bytes": model_pt,
            # while it trains (the records of earlier recorded epochs would add to it)
            "training_state_bytes": state,
        },
        "k_fold_models": {
            "images_decoded": k * decoded,
            "decode_worker_hours": k * worker_seconds / 3600,
            "predictions_npz_bytes": k * predictions,
            "model_pt_bytes": k * model_pt,
        },
        "dataset_cache_bytes": (n_train + n_test) * measured["cache_bytes_per_image"],
        "note": "extrapolated from the measured decode rate per CPU-second and the measured"
                " file sizes, not measured on ImageNet; GPU time is not included (no GPU here):"
                " the wall hours are the decode-bound floor with the config's DataLoader"
                " workers, each on a core of its own",
    }


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
    import torch
    from common import REPO, RESULTS_DIR, command_line, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="an ImageFolder tree to decode (default: synthetic JPEGs)")
    p.add_argument("--classes", type=int, default=1000, help="classes of the synthetic tree")
    p.add_argument("--train-per-class", type=int, default=3,
                   help="training images per class of the synthetic tree (the in-memory path"
                        " decodes in threads only above 2,000 images)")
    p.add_argument("--images", type=int, default=0,
                   help="images decoded per measurement, evenly spaced over the training set"
                        " (0: every training image; e.g. 5000 for a real ImageNet --root)")
    p.add_argument("--config", default=str(REPO / "config" / "imagenet.yaml"),
                   help="its dataset.image_size is the streamed size; the extrapolation's run")
    p.add_argument("--memory-size", type=int, default=64,
                   help="image size of the in-memory decode (the in-memory ImageNet variant)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="DataLoader workers; one measurement per value")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="decode threads of the in-memory path; one measurement per value")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2,
                   help="repetitions; the fastest of each measurement is kept")
    p.add_argument("--record-per-class", type=int, default=4,
                   help="samples per class of the record-size job (1,000 classes)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)

    import yaml

    image_size = yaml.safe_load(Path(args.config).read_text())["dataset"]["image_size"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.root:
            root, source = Path(args.root), args.root
        else:
            t0 = time.perf_counter()
            root = write_jpeg_tree(tmp / "images", args.classes, args.train_per_class, 0)
            source = (f"synthetic: {args.classes} classes x {args.train_per_class} JPEGs,"
                      " 300-500 x 250-450 px, quality 90 (write_jpeg_tree)")
            print(f"wrote {args.classes * args.train_per_class} JPEGs in"
                  f" {time.perf_counter() - t0:.1f} s", flush=True)
        data = _streamed(root, image_size)
        n = min(args.images or len(data.train_x), len(data.train_x))
        # n images evenly spaced over the sorted list, so every class has its share
        files = data.train_x[np.unique(np.linspace(0, len(data.train_x) - 1, n).astype(int))]
        n = len(files)
        jpeg_bytes = [os.path.getsize(root / f) for f in files.files]
        pixels = []
        from PIL import Image

        for f in files.files:
            with Image.open(root / f) as im:
                pixels.append(im.size[0] * im.size[1])
        load_before = os.getloadavg()
        one, loaders, threads = [], {w: [] for w in args.workers}, {t: [] for t in args.threads}
        memory_files = list(files.files)  # the same n images
        for r in range(args.rounds):  # interleaved, so drift in the machine's load hits all alike
            one.append(decode_one_process(files, n))
            for w in args.workers:
                loaders[w].append(decode_dataloader(files, n, w, args.batch_size))
            for t in args.threads:
                threads[t].append(decode_threads(root, memory_files, args.memory_size, t))
            print(f"round {r + 1}: one process {one[-1]['images_per_s']:.0f} images/s,"
                  f" {one[-1]['images_per_cpu_s']:.0f} per CPU-second", flush=True)

        def best(runs):  # the least disturbed round
            return max(runs, key=lambda x: x["images_per_s"])

        decode = {
            "images": n, "source": source, "image_size": image_size,
            "mean_jpeg_bytes": float(np.mean(jpeg_bytes)),
            "mean_pixels": float(np.mean(pixels)),
            "one_process": best(one),
            # what the extrapolation uses: one worker with a core of its own
            "images_per_cpu_s_per_worker": max(r["images_per_cpu_s"] for r in one),
            "dataloader": [best(loaders[w]) for w in args.workers],
            "in_memory_threads": [best(threads[t]) for t in args.threads],
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
        }
        (tmp / "records").mkdir()
        records = record_sizes(tmp / "records", 1000, args.record_per_class)
        cache = cache_bytes_per_image(data, tmp)
    config = yaml.safe_load(Path(args.config).read_text())
    k = config["folds"]["k"]
    fold = round(IMAGENET_TRAIN_IMAGES / k)
    archs = sorted({config["scoring_model"]["arch"], config["final_model"]["arch"]})
    checkpoints = {arch: checkpoint_bytes(arch, 1000, fold, image_size) for arch in archs}
    state_samples = 16
    trains = {config[m]["arch"]: config[m]["train"] for m in ("final_model", "scoring_model")}
    states = {arch: training_state_bytes(arch, 1000, trains[arch], state_samples) for arch in archs}
    measured = {"decode": decode, "records": records, "checkpoints": checkpoints,
                "checkpoint_train_ids": fold, "cache_bytes_per_image": cache,
                "training_states": states, "training_state_samples": state_samples}
    result = {"benchmark": "imagenet_data_path", **measured,
              "imagenet_extrapolated": extrapolate(Path(args.config), measured)}
    out = write_result("imagenet_data_path", torch.device("cpu"), result,
                       command_line(__file__, argv), args.results_dir)
    print(json.dumps(result["imagenet_extrapolated"], indent=2))
    return out


if __name__ == "__main__":
    print(main())
