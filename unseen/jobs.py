"""The workflow's jobs as functions from input files to output files.

Each function here is one Snakemake job (called through the ``unseen`` console
script). They glue the pure library functions to the files under ``results/``
and write every output atomically. Torch is imported only by the jobs that
train, so the light jobs (scoring, aggregation, selection) start fast.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Any

import numpy as np
import pandas as pd

from unseen import io
from unseen.data import load_cached, load_dataset, save_cached
from unseen.folds import assign_folds, fold_training_mask
from unseen.scorers import PredictionRecord, compute_scores
from unseen.seeds import derive_seed
from unseen.selection import (
    aggregate_scores,
    coreset_size,
    random_subset,
    select_top,
    stage_sizes,
)

log = logging.getLogger("unseen.jobs")



def log_job_context() -> None:
    """Log where the job runs; the SLURM job id makes cluster runs traceable.

    ``cuda_visible_devices`` shows which GPU(s) SLURM (or the user) gave the job.
    """
    log.info(
        "host=%s pid=%d slurm_job_id=%s cuda_visible_devices=%s",
        platform.node(), os.getpid(), os.environ.get("SLURM_JOB_ID", "none"),
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
    )


def prepare_data(dataset: dict[str, Any], output: str) -> None:
    """Decode dataset ``{"name", "root"}`` once into the cache file every job reads."""
    data = load_dataset(dataset["name"], dataset.get("root"))
    save_cached(data, output)
    log.info(
        "dataset %s: %d train, %d test, %d classes, image shape %s",
        dataset["name"], len(data.train_y), len(data.test_y), data.num_classes,
        data.train_x.shape[1:],
    )


def split(dataset_cache: str, k: int, seed: int, output: str) -> None:
    """Write the fold table (sample_id, label, fold) for ``k`` stratified folds."""
    data = load_cached(dataset_cache)
    folds = assign_folds(data.train_y, k, derive_seed(seed, "folds"))
    table = pd.DataFrame({"sample_id": data.sample_ids, "label": data.train_y, "fold": folds})
    io.write_table(table, output, io.FOLDS_SCHEMA)
    log.info("fold sizes: %s", np.bincount(folds, minlength=k).tolist())


def _train_and_record(
    dataset_cache: str,
    train_ids: np.ndarray,
    record_ids: np.ndarray | None,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    record_epochs: list[int],
    seed: int,
    device_name: str,
    threads: int,
):
    """Train a fresh model on ``train_ids``; record logits on ``record_ids``."""
    from unseen.models import build_model
    from unseen.train import (
        TrainSettings,
        channel_stats,
        resolve_device,
        seed_everything,
        train_model,
    )

    data = load_cached(dataset_cache)
    settings = TrainSettings.from_dict(train_settings)
    device = resolve_device(device_name)
    seed_everything(seed, threads)
    mean, std = channel_stats(data.train_x)
    model = build_model(
        model_spec["arch"], data.train_x.shape[1:], data.num_classes,
        **model_spec.get("options", {}),
    )
    log.info(
        "training %s on %d samples for %d epochs on %s (seed %d)",
        model_spec["arch"], len(train_ids), settings.epochs, device, seed,
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
    )
    return data, result, (mean, std), device


def _save_scoring_model(
    result, model_spec, train_ids, record_ids, labels, model_name, seed,
    checkpoint: str, predictions: str,
) -> None:
    import torch

    with io.atomic_path(checkpoint) as tmp:
        torch.save(
            {
                "state_dict": result.model.state_dict(),
                "model_spec": model_spec,
                "train_ids": np.asarray(train_ids, dtype=np.int64),
                "seed": seed,
                "model_name": model_name,
            },
            tmp,
        )
    io.save_npz(
        predictions,
        sample_ids=np.asarray(record_ids, dtype=np.int64),
        labels=labels[record_ids],
        epochs=result.recorded_epochs,
        logits=result.recorded_logits,
        train_ids=np.asarray(train_ids, dtype=np.int64),
        model_name=np.array(model_name),
    )


def train_scoring_model(
    dataset_cache: str,
    train_ids: np.ndarray,
    record_ids: np.ndarray,
    model_name: str,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    record_epochs: list[int],
    seed: int,
    device: str,
    threads: int,
    checkpoint: str,
    predictions: str,
) -> None:
    """Train a scoring model and save it plus its per-epoch logits on ``record_ids``.

    The predictions file (``.npz``) holds: sample_ids (R,), labels (R,),
    epochs (E,), logits float16 (E, R, C), train_ids (T,), model_name.
    """
    train_ids = np.sort(np.asarray(train_ids, dtype=np.int64))
    record_ids = np.sort(np.asarray(record_ids, dtype=np.int64))
    data, result, _, _ = _train_and_record(
        dataset_cache, train_ids, record_ids, model_spec, train_settings,
        record_epochs, seed, device, threads,
    )
    _save_scoring_model(
        result, model_spec, train_ids, record_ids, data.train_y, model_name, seed,
        checkpoint, predictions,
    )


def fold_ids(folds_table: str, fold: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(train_ids, scored_ids) of fold model ``fold`` under ``mode`` (paper | holdout)."""
    table = io.read_table(folds_table)
    mask = fold_training_mask(table["fold"].to_numpy(), fold, mode)
    ids = table["sample_id"].to_numpy()
    return ids[mask], ids[~mask]


def read_predictions(path: str) -> PredictionRecord:
    """Load a predictions file written by :func:`train_scoring_model`."""
    arrays = io.load_npz(path)
    return PredictionRecord(
        sample_ids=arrays["sample_ids"],
        labels=arrays["labels"],
        epochs=arrays["epochs"],
        logits=arrays["logits"],
    )


def score_shard(
    predictions: str, scorer: str, seed: int, output: str, allow_seen: bool = False
) -> None:
    """Score the samples a model recorded with ``scorer``; one row per sample.

    UNSEEN shards must only hold samples the model never trained on; that is
    checked against the model's own training ids unless ``allow_seen`` (the
    fitting baseline, which by design scores its own training data).
    """
    arrays = io.load_npz(predictions)
    record = read_predictions(predictions)
    leaked = np.intersect1d(record.sample_ids, arrays["train_ids"])
    if len(leaked) and not allow_seen:
        raise RuntimeError(f"{predictions}: {len(leaked)} scored samples were trained on")
    scores = compute_scores(scorer, record, seed)
    table = pd.DataFrame(
        {
            "sample_id": record.sample_ids,
            "label": record.labels,
            "model": str(arrays["model_name"]),
            "score": scores,
        }
    )
    io.write_table(table, output, io.SHARD_SCHEMA)


def aggregate(shards: list[str], output: str) -> None:
    """Mean, std and count of each sample's out-of-fold scores across ``shards``."""
    table = pd.concat([io.read_table(s) for s in shards], ignore_index=True)
    io.write_table(aggregate_scores(table), output, io.AGGREGATE_SCHEMA)


def _coreset_frame(ids, labels, stage, scores) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": np.asarray(ids, dtype=np.int64),
            "label": np.asarray(labels, dtype=np.int64),
            "stage": np.full(len(ids), stage, dtype=np.int64) if np.isscalar(stage) else stage,
            "score": np.asarray(scores, dtype=np.float64),
        }
    )


def stage_target(n_total: int, pruning_rate: float, fractions: list[float], stage: int) -> int:
    """Cumulative coreset size after 1-based ``stage``."""
    return stage_sizes(coreset_size(n_total, pruning_rate), fractions)[stage - 1]


def select_first_stage(
    scores: str, pruning_rate: float, fractions: list[float], keep: str, output: str
) -> None:
    """Stage 1: the top M1 samples by aggregated out-of-fold score."""
    table = io.read_table(scores)
    n = stage_target(len(table), pruning_rate, fractions, 1)
    pos = select_top(table["sample_id"].to_numpy(), table["score"].to_numpy(), n, keep)
    chosen = table.iloc[pos]
    frame = _coreset_frame(chosen["sample_id"], chosen["label"], 1, chosen["score"])
    io.write_table(frame, output, io.CORESET_SCHEMA)
    log.info("stage 1: selected %d of %d", n, len(table))


def select_next_stage(
    previous: str,
    stage_scores: str,
    n_total: int,
    pruning_rate: float,
    fractions: list[float],
    keep: str,
    stage: int,
    output: str,
) -> None:
    """Stage ``stage``: S_{t-1} plus the top unselected samples by the stage model's score."""
    prev = io.read_table(previous)
    scored = io.read_table(stage_scores)
    if np.intersect1d(prev["sample_id"], scored["sample_id"]).size:
        raise RuntimeError("stage scores include samples that are already selected")
    n = stage_target(n_total, pruning_rate, fractions, stage)
    add = n - len(prev)
    pos = select_top(scored["sample_id"].to_numpy(), scored["score"].to_numpy(), add, keep)
    chosen = scored.iloc[pos]
    frame = pd.concat(
        [prev, _coreset_frame(chosen["sample_id"], chosen["label"], stage, chosen["score"])],
        ignore_index=True,
    )
    io.write_table(frame, output, io.CORESET_SCHEMA)
    log.info("stage %d: added %d, coreset now %d of %d", stage, add, len(frame), n_total)


def unselected_ids(stage_table: str, folds_table: str) -> np.ndarray:
    """Training ids not in the coreset ``stage_table``; int64 sorted."""
    selected = io.read_table(stage_table)["sample_id"].to_numpy()
    every = io.read_table(folds_table)["sample_id"].to_numpy()
    return np.setdiff1d(every, selected)


def select_by_scores(
    scores: str, pruning_rate: float, keep: str, output: str, id_list: str
) -> None:
    """Single-step selection (the fitting baseline): the top samples by ``scores``."""
    table = io.read_table(scores)
    n = coreset_size(len(table), pruning_rate)
    pos = select_top(table["sample_id"].to_numpy(), table["score"].to_numpy(), n, keep)
    chosen = table.iloc[pos]
    frame = _coreset_frame(chosen["sample_id"], chosen["label"], 1, chosen["score"])
    publish_coreset(frame, output, id_list)


def select_random(
    folds_table: str, pruning_rate: float, seed: int, output: str, id_list: str
) -> None:
    """Random baseline: a uniform seeded subset of the coreset size; score is NaN."""
    table = io.read_table(folds_table)
    n = coreset_size(len(table), pruning_rate)
    pos = random_subset(table["sample_id"].to_numpy(), n, derive_seed(seed, "random", pruning_rate))
    chosen = table.iloc[pos]
    frame = _coreset_frame(chosen["sample_id"], chosen["label"], 1, np.full(n, np.nan))
    publish_coreset(frame, output, id_list)


def publish_coreset(frame: pd.DataFrame, parquet: str, id_list: str) -> None:
    """Write a coreset as the Parquet index plus a plain list of sample ids."""
    if frame["sample_id"].duplicated().any():
        raise RuntimeError(f"coreset for {parquet} selects a sample twice")
    io.write_table(frame, parquet, io.CORESET_SCHEMA)
    io.write_id_list(frame["sample_id"].to_numpy(), id_list)


def finalize_coreset(stage_table: str, parquet: str, id_list: str) -> None:
    """Publish the final stage as the coreset: Parquet index plus a plain id list."""
    publish_coreset(io.read_table(stage_table), parquet, id_list)


def retrain(
    dataset_cache: str,
    coreset: str | None,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    seed: int,
    device: str,
    threads: int,
    labels: dict[str, Any],
    metrics_json: str,
    metrics_parquet: str,
) -> None:
    """Train a fresh model on the coreset (or all data if ``coreset`` is None); evaluate on test.

    ``labels`` (method, scorer, pruning_rate) are copied into the metrics. All
    retrains of a run share one initialisation seed, so methods differ only in
    their training data.
    """
    from unseen.train import predict_logits

    data = load_cached(dataset_cache)
    ids = (
        data.sample_ids
        if coreset is None
        else np.sort(io.read_table(coreset)["sample_id"].to_numpy())
    )
    t0 = time.perf_counter()
    data, result, (mean, std), dev = _train_and_record(
        dataset_cache, ids, None, model_spec, train_settings, [], derive_seed(seed, "retrain"),
        device, threads,
    )
    logits = predict_logits(result.model, data.test_x, mean, std, dev)
    pred = logits.argmax(1)
    correct = pred == data.test_y
    per_class = [
        float(correct[data.test_y == c].mean()) if (data.test_y == c).any() else float("nan")
        for c in range(data.num_classes)
    ]
    metrics = {
        **labels,
        "seed": int(seed),
        "coreset_size": int(len(ids)),
        "n_train_total": int(len(data.train_y)),
        "test_accuracy": float(correct.mean()),
        "worst_class_accuracy": float(np.nanmin(per_class)),
        "per_class_accuracy": per_class,
        "classes": list(data.classes),
        "epochs": int(len(result.history)),
        "wall_seconds": float(time.perf_counter() - t0),
        "train_samples_per_s": float(result.samples_per_second),
        "model": model_spec["arch"],
        "device": str(dev),
    }
    log.info("test accuracy %.4f on %d training samples", metrics["test_accuracy"], len(ids))
    row = {k: metrics[k] for k in io.METRICS_SCHEMA.names}
    io.write_table(pd.DataFrame([row]), metrics_parquet, io.METRICS_SCHEMA)
    io.write_json(metrics, metrics_json)


def summarize(metrics: list[str], parquet: str, csv: str) -> None:
    """Concatenate every retrain's metrics into one table (Parquet and CSV)."""
    table = pd.concat([io.read_table(m) for m in metrics], ignore_index=True)
    table = table.sort_values(["seed", "method", "scorer", "pruning_rate"], ignore_index=True)
    io.write_table(table, parquet, io.METRICS_SCHEMA)
    flat = table.assign(per_class_accuracy=table["per_class_accuracy"].map(lambda v: json.dumps([float(x) for x in v])))
    with io.atomic_path(csv) as tmp:
        flat.to_csv(tmp, index=False)
    for row in table.itertuples():
        log.info(
            "%-8s %-16s rate %-4s size %5d test acc %.4f",
            row.method, row.scorer, row.pruning_rate, row.coreset_size, row.test_accuracy,
        )

