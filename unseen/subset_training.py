"""Train a fresh model on some samples of a dataset, record it, evaluate it.

One home for what the workflow's training jobs (:mod:`unseen.jobs`) and the
Python API (:mod:`unseen.api`) both do: seed, build the model, train it on
the rows ``train_ids`` of an :class:`~unseen.images.ImageDataset` while recording
its logits on ``record_ids``, and measure its test accuracy. No files. Torch is
imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from unseen.images import ImageDataset
from unseen.scorers import MAX_LOGIT_CLASSES

log = logging.getLogger("unseen.jobs")

#: What a scoring model records per epoch (config key ``record_format``).
RECORD_FORMATS = ("auto", "logits", "stats")


def uses_statistics(record_format: str, num_classes: int) -> bool:
    """Whether a record keeps per-sample statistics (True) or full float16 logits.

    ``auto`` keeps logits up to ``MAX_LOGIT_CLASSES`` classes (2 C bytes per
    sample per epoch) and statistics beyond (a fixed 33 bytes).
    """
    if record_format not in RECORD_FORMATS:
        raise ValueError(f"record format must be one of {RECORD_FORMATS}, got {record_format!r}")
    if record_format == "auto":
        return num_classes > MAX_LOGIT_CLASSES
    return record_format == "stats"


def train_on_subset(
    data: ImageDataset,
    train_ids: np.ndarray,
    record_ids: np.ndarray | None,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    record_epochs: list[int],
    seed: int,
    device_name: str,
    threads: int | None,
    on_record=None,
    name: str = "model",
    lr_key: str = "train.lr",
    checkpoint=None,
):
    """Train a fresh model on ``train_ids`` of ``data``; record logits on ``record_ids``.

    Args:
        data: the dataset; ``train_ids`` and ``record_ids`` are int64 row indices
            into ``data.train_x``.
        model_spec: ``{"arch": name, "options": {...}}`` (:func:`unseen.models.build_model`).
        train_settings: a config ``train`` section (:class:`unseen.train.TrainSettings`).
        record_epochs: 1-based epochs to record besides the last one.
        seed: seeds the initialisation, batch order and augmentation.
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (None leaves torch's default).
        on_record: passed to :func:`unseen.train.train_model` (None keeps
            float16 logits; a :class:`~unseen.scorers.StatisticsRecorder` keeps statistics).
        name, lr_key: the model and the config key of its learning rate, named when
            its training diverges (:class:`unseen.train.TrainingDiverged`).
        checkpoint: a :class:`unseen.resume.TrainingCheckpoint` (its ``key`` is set
            here, from everything above that makes the training what it is), or None.

    Returns:
        (result, (mean, std), device, settings): the :class:`unseen.train.TrainResult`,
        the input normalisation (float32 (C,) each), the torch device and the
        :class:`unseen.train.TrainSettings` used.
    """
    from unseen.models import build_model
    from unseen.train import TrainSettings, resolve_device, seed_everything, train_model

    settings = TrainSettings.from_dict(train_settings)
    device = resolve_device(device_name)
    seed_everything(seed, threads)
    mean, std = data.channel_stats()
    model = build_model(
        model_spec["arch"], data.train_x.shape[1:], data.num_classes,
        **model_spec.get("options", {}),
    )
    log.info(
        "training %s on %d samples for %s on %s (seed %d)",
        model_spec["arch"], len(train_ids),
        f"{settings.iterations} iterations" if settings.iterations else f"{settings.epochs} epochs",
        device, seed,
    )
    result = train_model(
        model,
        data.train_x[train_ids],
        data.train_y[train_ids],
        settings,
        seed=seed,
        device=device,
        mean=mean,
        std=std,
        record_images=None if record_ids is None else data.train_x[record_ids],
        record_epochs=record_epochs,
        on_record=on_record,
        name=name,
        lr_key=lr_key,
        checkpoint=None if checkpoint is None else _keyed(
            checkpoint, data, train_ids, record_ids, model_spec, settings, record_epochs, seed,
            on_record),
    )
    return result, (mean, std), device, settings


def _keyed(checkpoint, data, train_ids, record_ids, model_spec, settings, record_epochs, seed,
           on_record):
    """``checkpoint`` with the key of this training: a state saved for any other is ignored.

    The data enter by their shape and the labels of the samples used (hashing every
    image would cost a pass over ImageNet); a changed dataset reruns the job anyway
    (the dataset cache is its input), with the same key only if both are unchanged.
    """
    import dataclasses

    from unseen.resume import training_key

    checkpoint.key = training_key(
        model=model_spec, settings=dataclasses.asdict(settings), seed=int(seed),
        train_ids=np.asarray(train_ids, dtype=np.int64),
        record_ids=None if record_ids is None else np.asarray(record_ids, dtype=np.int64),
        labels=np.asarray(data.train_y[train_ids]), shape=list(data.train_x.shape),
        record_epochs=sorted(int(e) for e in record_epochs),
        recorder=type(on_record).__name__,
    )
    return checkpoint


def class_accuracies(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Accuracy of each class 0..num_classes-1 in [0, 1]; NaN for a class without samples."""
    correct = np.asarray(predicted) == np.asarray(labels)
    return [
        float(correct[labels == c].mean()) if (labels == c).any() else float("nan")
        for c in range(num_classes)
    ]


def train_and_evaluate(
    data: ImageDataset,
    train_ids: np.ndarray,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    seed: int,
    device_name: str = "auto",
    threads: int | None = None,
    name: str = "retrain",
    checkpoint=None,
) -> dict[str, Any]:
    """Train a fresh model on ``train_ids`` and evaluate it on the test split.

    ``name`` names the model if its training diverges (the learning rate is
    ``final_model.train.lr``); ``checkpoint``: where the training keeps its state
    (:class:`unseen.resume.TrainingCheckpoint`), or None.

    Returns:
        The retrain's metrics (columns of ``metrics.parquet``, see results/README.md):
        coreset_size, n_train_total, test_accuracy, worst_class_accuracy
        (fractions in [0, 1]), per_class_accuracy (list of C), classes, epochs,
        train_samples_seen (sample-epochs), wall_seconds (training plus
        evaluation), train_steps (SGD steps), train_samples_per_s, model, device.
    """
    from unseen.train import predict_logits

    t0 = time.perf_counter()
    result, (mean, std), device, settings = train_on_subset(
        data, train_ids, None, model_spec, train_settings, [], seed, device_name, threads,
        name=name, lr_key="final_model.train.lr", checkpoint=checkpoint,
    )
    logits = predict_logits(result.model, data.test_x, mean, std, device,
                            settings.eval_batch_size, settings.workers,
                            flip=settings.test_time_flip)
    predicted = logits.argmax(1)
    per_class = class_accuracies(predicted, data.test_y, data.num_classes)
    return {
        "coreset_size": int(len(train_ids)),
        "n_train_total": int(len(data.train_y)),
        "test_accuracy": float((predicted == data.test_y).mean()),
        "worst_class_accuracy": float(np.nanmin(per_class)),
        "per_class_accuracy": per_class,
        "classes": list(data.classes),
        "epochs": int(len(result.history)),
        "train_samples_seen": result.samples_seen,
        "wall_seconds": float(time.perf_counter() - t0),
        "train_steps": int(result.steps),
        "train_samples_per_s": float(result.samples_per_second),
        "model": model_spec["arch"],
        "device": str(device),
    }
