"""The workflow's jobs as functions from input files to output files.

Each function here is one Snakemake job (called through the ``unseen`` console
script). They glue the pure library functions to the files under ``results/``
and write every output atomically. Torch is imported only by the jobs that
train, so the light jobs (scoring, aggregation, selection) start fast.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unseen import io, naming, steps
from unseen.budget import scoring_budget_label
from unseen.coresets import coreset_frame, first_stage, next_stage
from unseen.data import load_cached, prepare_cached
from unseen.folds import FOLD_MODES, assign_folds, fold_training_mask
from unseen.predictions import (
    made_with, read_predictions, record_from_arrays, save_scoring_model, scoring_cost,
)
from unseen.scorers import (
    MODEL_SCORERS, check_finite_scores, compute_scores,
)
from unseen.seeds import derive_seed
from unseen.selection import aggregate_scores, coreset_size, random_subset
from unseen.resume import DEFAULT_EVERY_MINUTES, TrainingCheckpoint, state_path
from unseen.strategies import DEFAULT_STRATEGY, class_error_table

log = logging.getLogger("unseen.jobs")


def prepare_data(dataset: dict[str, Any], output: str) -> None:
    """Decode the config's ``dataset`` section once into the cache file every job reads.

    An existing cache made from the same source files (same fingerprint) is reused.
    """
    data, rebuilt = prepare_cached(dataset, output)
    log.info(
        "dataset %s: %d train, %d test, %d classes, image shape %s, %s, cache %s (%s)",
        dataset["name"], len(data.train_y), len(data.test_y), data.num_classes,
        tuple(data.train_x.shape[1:]), "in memory" if data.in_memory else "streamed from files",
        "written" if rebuilt else "reused", data.fingerprint,
    )


def split(dataset_cache: str, k: int, seed: int, output: str) -> None:
    """Write the fold table (sample_id, label, fold) for ``k`` stratified folds."""
    data = load_cached(dataset_cache)
    folds = assign_folds(data.train_y, k, derive_seed(seed, naming.FOLDS_SEED))
    table = pd.DataFrame({"sample_id": data.sample_ids, "label": data.train_y, "fold": folds})
    io.write_table(table, output, io.FOLDS_SCHEMA)
    log.info("fold sizes: %s", np.bincount(folds, minlength=k).tolist())


@dataclasses.dataclass(frozen=True)
class ScoringModelJob:
    """What every scoring model's training job (fold, stage or fitting model) reads and writes.

    ``seed`` is the run seed (the model's own is ``derive_seed(seed, model name)``,
    :func:`unseen.steps.train_scoring_model`). ``scoring_budget`` sets the length
    of a fold or stage model's training relative to the fitting model
    (:func:`unseen.budget.scoring_train_settings`); None trains for
    ``train_settings`` as written (the fitting model itself).
    """

    dataset_cache: str
    model_spec: dict[str, Any]
    train_settings: dict[str, Any]
    record_epochs: list[int]
    seed: int
    device: str
    threads: int
    checkpoint: str
    predictions: str
    record_format: str = "auto"
    scoring_budget: float | str | None = None
    state_every_minutes: float | None = DEFAULT_EVERY_MINUTES


def training_checkpoint(output: str, every_minutes: float | None, label: str = "",
                        keep_final: bool = False) -> TrainingCheckpoint:
    """The training-state file of a job whose first output is ``output`` (:mod:`unseen.resume`):
    written every ``every_minutes`` (None or 0: only on a stop signal)."""
    return TrainingCheckpoint(state_path(output, label), key="",
                              every_seconds=(every_minutes or 0) * 60, keep_final=keep_final)


def writes_outputs() -> bool:
    """Whether this process writes its job's outputs and removes its training states: the only
    process, or rank 0 of a data-parallel training job (:mod:`unseen.distributed`), whose other
    ranks share the training only."""
    from unseen.distributed import is_main

    return is_main()


def train_scoring_model(
    job: ScoringModelJob, train_ids: np.ndarray, record_ids: np.ndarray, model_name: str
) -> None:
    """Train a scoring model on ``train_ids``; save it plus its per-epoch record on ``record_ids``.

    Writes ``job.checkpoint`` and ``job.predictions`` in the formats of
    :func:`unseen.predictions.save_scoring_model`. The training keeps its state next
    to ``job.checkpoint`` (:mod:`unseen.resume`) until both are written.
    """
    data = load_cached(job.dataset_cache)
    checkpoint = training_checkpoint(job.checkpoint, job.state_every_minutes)
    trained = steps.train_scoring_model(
        data, train_ids, record_ids, job.model_spec, job.train_settings, job.record_epochs,
        job.seed, model_name, job.device, job.threads, job.record_format, job.scoring_budget,
        where=job.predictions, checkpoint=checkpoint,
    )
    if not writes_outputs():
        return
    train_ids, record_ids = trained.train_ids, trained.record_ids
    fit = model_fit(trained.result, data, train_ids, record_ids, trained.norm, trained.device,
                    trained.settings, trained.recorder)
    log.info(
        "%s: training accuracy %.4f (mean loss %.4f) on its %d un-augmented training samples;"
        " accuracy %.4f on the %d samples it scores",
        model_name, fit["train_accuracy"], fit["train_loss"], len(train_ids),
        fit["scored_accuracy"], len(record_ids),
    )
    budget_label = "1" if job.scoring_budget is None else scoring_budget_label(job.scoring_budget)
    save_scoring_model(
        trained.result, job.model_spec, train_ids, record_ids, data.train_y, model_name,
        trained.seed, trained.norm, trained.recorder, job.checkpoint, job.predictions,
        budget_label, fit,
        made_with(job.model_spec, job.train_settings, job.record_epochs, job.record_format,
                  budget_label),
    )
    checkpoint.remove()


def model_fit(result, data, train_ids, record_ids, norm, device, settings, recorder) -> dict[str, float]:
    """How well a trained scoring model fits: the regime statistics (:mod:`unseen.regime`).

    ``train_accuracy`` / ``train_loss``: on its own training images, un-augmented,
    one extra inference pass; ``scored_accuracy`` / ``scored_loss``: on the samples it
    scores, read from its last recorded epoch (what the scorers see).
    """
    from unseen.regime import fit_statistics
    from unseen.train import predict_logits

    logits = predict_logits(result.model, data.train_x[train_ids], *norm, device,
                            settings.eval_batch_size, settings.workers)
    trained = fit_statistics(logits, data.train_y[train_ids])
    if recorder is None:
        scored = fit_statistics(result.recorded_logits[-1], data.train_y[record_ids])
    else:
        last = {name: values[-1] for name, values in recorder.stacked().items()}
        scored = {"accuracy": float(last["correct"].mean()),
                  "mean_loss": float(-last["target_logprob"].astype(np.float64).mean())}
    return {"train_accuracy": trained["accuracy"], "train_loss": trained["mean_loss"],
            "scored_accuracy": scored["accuracy"], "scored_loss": scored["mean_loss"]}


def scoring_model_samples(
    folds_table: str, fold: int | None = None, fold_mode: str = FOLD_MODES[0],
    coreset: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train_ids, record_ids) of a scoring model, from the fold table.

    Fold model ``fold``: the samples :func:`unseen.folds.fold_training_mask`
    gives it under ``fold_mode`` (paper | holdout), recording the rest. Stage
    model (``coreset``, a stage table of S_t): trained on S_t, records the rest.
    Fitting model (neither): trained on every training sample, records every one.
    """
    table = io.read_table(folds_table, io.FOLDS_SCHEMA)
    every = table["sample_id"].to_numpy()
    if fold is not None:
        trains = fold_training_mask(table["fold"].to_numpy(), fold, fold_mode)
        return every[trains], every[~trains]
    if coreset is None:
        return every, every
    selected = io.read_table(coreset, io.CORESET_SCHEMA)["sample_id"].to_numpy()
    return selected, np.setdiff1d(every, selected)


def score_shard(
    predictions: str,
    scorer: str,
    seed: int,
    output: str,
    allow_seen: bool = False,
    checkpoint: str | None = None,
    dataset_cache: str | None = None,
    options: dict[str, Any] | None = None,
    device: str = "auto",
) -> None:
    """Score the samples a model recorded with ``scorer``; one row per sample.

    UNSEEN shards must only hold samples the model never trained on; that is
    checked against the model's own training ids unless ``allow_seen`` (the
    fitting baseline, which by design scores its own training data). Gradient
    scorers (GraNd) also load ``checkpoint`` and the images from
    ``dataset_cache``; other scorers ignore both, so they do not import torch.
    """
    arrays = read_predictions(predictions)
    if checkpoint is not None:
        io.check_checkpoint(checkpoint)  # a damaged model.pt must not pass for a finished one
    record = record_from_arrays(arrays)
    leaked = np.intersect1d(record.sample_ids, arrays["train_ids"])
    if len(leaked) and not allow_seen:
        raise RuntimeError(f"{predictions}: {len(leaked)} scored samples were trained on")
    if scorer in MODEL_SCORERS:
        if checkpoint is None or dataset_cache is None:
            raise ValueError(f"scorer {scorer!r} needs --checkpoint and --dataset-cache")
        from unseen.grand import load_scoring_model

        data = load_cached(dataset_cache)
        model = load_scoring_model(
            checkpoint, data.train_x[record.sample_ids], data.num_classes, device
        )
        record = dataclasses.replace(record, model=model)
    scores = compute_scores(scorer, record, seed, options, source=predictions)
    table = pd.DataFrame(
        {
            "sample_id": record.sample_ids,
            "label": record.labels,
            "model": str(arrays["model_name"]),
            "score": scores,
        }
    )
    io.write_table(table, output, io.SHARD_SCHEMA)


def class_difficulty(predictions: list[str], output: str) -> None:
    """Per-class error rate of the fold models on the samples they never trained on.

    Reads each fold model's final-epoch predictions; a sample scored by K-1
    models counts K-1 times. Writes one row per class: label, n_predictions,
    n_errors, error_rate (in [0, 1]). Hard-class priority selection uses it.
    """
    labels, wrong = [], []
    for path in predictions:
        arrays = read_predictions(path)
        if np.intersect1d(arrays["sample_ids"], arrays["train_ids"]).size:
            raise RuntimeError(f"{path}: class difficulty must come from unseen samples")
        record = record_from_arrays(arrays)
        labels.append(record.labels)
        wrong.append(record.stat("correct")[-1] == 0)
    table = class_error_table(np.concatenate(labels), np.concatenate(wrong))
    io.write_table(table, output, io.CLASS_DIFFICULTY_SCHEMA)
    log.info("out-of-fold error rate per class: %s", table["error_rate"].round(4).tolist())


def aggregate(shards: list[str], output: str) -> None:
    """Mean, std and count of each sample's out-of-fold scores across ``shards``.

    Each shard (``.../scores/oof/fold<k>/<scorer>.parquet``) must come from its
    own fold model ``fold<k>``: a predictions file copied from another fold would
    count that model twice and some samples once too few. The error names the
    shard and the predictions file to rebuild.
    """
    tables = [io.read_table(s, io.SHARD_SCHEMA) for s in shards]
    for path, table in zip(shards, tables):
        fold = Path(path).parent.name
        models = sorted(set(table["model"].astype(str)))
        if fold.startswith("fold") and models != [fold]:
            made_by = Path(path).parents[3] / "folds" / fold / "predictions.npz"
            raise RuntimeError(
                f"{path} holds scores of scoring model(s) {models}, not of {fold!r}, whose"
                f" shard it is: {made_by} does not come from {fold}'s training job (copied from"
                f" another fold?). Fix: rerun the same snakemake command with --forcerun"
                f" {made_by} (its job and the jobs after it rerun; every other finished output"
                " is kept)"
            )
    table = pd.concat(tables, ignore_index=True)
    io.write_table(aggregate_scores(table), output, io.AGGREGATE_SCHEMA)


def read_scores(path: str, schema) -> pd.DataFrame:
    """A score table (``schema``: shard or aggregate) whose scores are all finite."""
    table = io.read_table(path, schema)
    check_finite_scores(table["score"].to_numpy(), table["sample_id"].to_numpy(), path,
                        f"rerun the same snakemake command with --forcerun {path} (it is rebuilt)")
    return table


def with_strategy_choice(selection: dict[str, Any], strategy_choice: str | None) -> dict[str, Any]:
    """``selection`` plus ``validated_strategy`` from a :func:`choose_strategy` file, if one is given."""
    if strategy_choice is None:
        return selection
    chosen = io.read_json(strategy_choice)["strategy"]
    log.info("validated: %s chose %s", strategy_choice, chosen)
    return {**selection, "validated_strategy": chosen}


def choose_strategy(
    dataset_cache: str,
    scores: str,
    pruning_rate: float,
    selection: dict[str, Any],
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    retrain_budget: str,
    seed: int,
    device: str,
    threads: int,
    output: str,
    state_every_minutes: float | None = DEFAULT_EVERY_MINUTES,
) -> None:
    """The ``validated`` strategy's choice at one rate (:func:`unseen.validation.choose_strategy`) as JSON.

    Each candidate's training keeps its state next to ``output`` (:mod:`unseen.resume`),
    also once finished, so a rerun after a stop trains only what was left.
    """
    from unseen import validation

    data = load_cached(dataset_cache)
    table = read_scores(scores, io.schema_of(scores))
    checkpoints: dict[str, TrainingCheckpoint] = {}

    def checkpoint_of(candidate: str) -> TrainingCheckpoint:
        checkpoints[candidate] = training_checkpoint(output, state_every_minutes, candidate,
                                                     keep_final=True)
        return checkpoints[candidate]

    choice = validation.choose_strategy(data, table, pruning_rate, selection, model_spec,
                                        train_settings, retrain_budget, seed, device, threads,
                                        checkpoints=checkpoint_of)
    log.info("held-out accuracy %s: chose %s", choice["validation_accuracy"], choice["strategy"])
    if not writes_outputs():
        return
    io.write_json({**choice, "seed": int(seed), "scores": str(scores)}, output)
    for checkpoint in checkpoints.values():
        checkpoint.remove()


def read_class_error(class_difficulty: str | None) -> np.ndarray | None:
    """float (C,) out-of-fold error rate per class from :func:`class_difficulty`'s table, or None."""
    if class_difficulty is None:
        return None
    return io.read_table(class_difficulty).sort_values("label")["error_rate"].to_numpy()


def select_first_stage(
    scores: str,
    pruning_rate: float,
    fractions: list[float],
    selection: dict[str, Any],
    output: str,
    seed: int = 0,
    class_difficulty: str | None = None,
    strategy_choice: str | None = None,
) -> None:
    """Stage 1: M1 samples by aggregated out-of-fold score and the configured strategy."""
    selection = with_strategy_choice(selection, strategy_choice)
    table = read_scores(scores, io.AGGREGATE_SCHEMA)
    frame = first_stage(table, pruning_rate, fractions, selection, seed,
                        read_class_error(class_difficulty))
    io.write_table(frame, output, io.CORESET_SCHEMA)
    log.info("stage 1: selected %d of %d (%s)", len(frame), len(table),
             selection.get("strategy", DEFAULT_STRATEGY))


def select_next_stage(
    previous: str,
    stage_scores: str,
    n_total: int,
    pruning_rate: float,
    fractions: list[float],
    selection: dict[str, Any],
    stage: int,
    output: str,
    seed: int = 0,
    class_difficulty: str | None = None,
    strategy_choice: str | None = None,
) -> None:
    """Stage ``stage``: S_{t-1} plus unselected samples chosen by the stage model's score."""
    selection = with_strategy_choice(selection, strategy_choice)
    prev = io.read_table(previous, io.CORESET_SCHEMA)
    scored = read_scores(stage_scores, io.SHARD_SCHEMA)
    frame = next_stage(prev, scored, n_total, pruning_rate, fractions, stage, selection, seed,
                       read_class_error(class_difficulty))
    io.write_table(frame, output, io.CORESET_SCHEMA)
    log.info("stage %d: added %d, coreset now %d of %d", stage, len(frame) - len(prev),
             len(frame), n_total)


def select_by_scores(
    scores: str,
    pruning_rate: float,
    selection: dict[str, Any],
    output: str,
    id_list: str,
    seed: int = 0,
    class_difficulty: str | None = None,
    strategy_choice: str | None = None,
) -> None:
    """Single-step selection (the fitting baseline) by ``scores`` and the configured strategy."""
    selection = with_strategy_choice(selection, strategy_choice)
    table = read_scores(scores, io.SHARD_SCHEMA)
    frame = first_stage(table, pruning_rate, [1.0], selection, seed,
                        read_class_error(class_difficulty))
    publish_coreset(frame, output, id_list)


def select_random(
    folds_table: str, pruning_rate: float, seed: int, output: str, id_list: str
) -> None:
    """Random baseline: a uniform seeded subset of the coreset size; score is NaN."""
    table = io.read_table(folds_table, io.FOLDS_SCHEMA)
    n = coreset_size(len(table), pruning_rate)
    pos = random_subset(table["sample_id"].to_numpy(), n, derive_seed(seed, naming.RANDOM_CORESET_SEED, pruning_rate))
    chosen = table.iloc[pos]
    frame = coreset_frame(chosen["sample_id"], chosen["label"], 1, np.full(n, np.nan))
    publish_coreset(frame, output, id_list)


def publish_coreset(frame: pd.DataFrame, parquet: str, id_list: str) -> None:
    """Write a coreset as the Parquet index plus a plain list of sample ids."""
    if frame["sample_id"].duplicated().any():
        raise RuntimeError(f"coreset for {parquet} selects a sample twice")
    io.write_table(frame, parquet, io.CORESET_SCHEMA)
    io.write_id_list(frame["sample_id"].to_numpy(), id_list)


def finalize_coreset(stage_table: str, parquet: str, id_list: str) -> None:
    """Publish the final stage as the coreset: Parquet index plus a plain id list."""
    publish_coreset(io.read_table(stage_table, io.CORESET_SCHEMA), parquet, id_list)


def retrain(
    dataset_cache: str,
    coreset: str | None,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    seed: int,
    device: str,
    threads: int,
    coreset_labels: dict[str, Any],
    metrics_json: str,
    metrics_parquet: str,
    scoring_predictions: list[str] = (),
    retrain_budget: str = "full_steps",
    state_every_minutes: float | None = DEFAULT_EVERY_MINUTES,
) -> None:
    """Train a fresh model on the coreset (or all data if ``coreset`` is None); evaluate on test.

    ``coreset_labels`` (method, scorer, strategy, pruning_rate) are copied into the
    metrics, and so is the scoring cost of the coreset (:func:`scoring_cost`
    of ``scoring_predictions``; 0 for full and random). ``retrain_budget``
    (:data:`unseen.budget.RETRAIN_BUDGETS`) sets how long a coreset trains; the
    full-data model trains for ``train_settings`` as written under either. All
    retrains of a run share one initialisation seed, so methods differ only in
    their training data. The training keeps its state next to ``metrics_json``
    (:mod:`unseen.resume`, every ``state_every_minutes`` and on a stop signal).
    """
    data = load_cached(dataset_cache)
    checkpoint = training_checkpoint(metrics_json, state_every_minutes)
    ids = (
        None
        if coreset is None
        else io.read_table(coreset, io.CORESET_SCHEMA, len(data.train_y))["sample_id"].to_numpy()
    )
    cost = scoring_cost(list(scoring_predictions))
    metrics = {
        **coreset_labels,
        "seed": int(seed),
        **steps.retrain(data, ids, model_spec, train_settings, retrain_budget, seed, device, threads,
                        name=f"retrain for {metrics_parquet}", checkpoint=checkpoint),
        **cost,
    }
    log.info("test accuracy %.4f on %d training samples", metrics["test_accuracy"],
             metrics["coreset_size"])
    if not writes_outputs():
        return
    row = {k: metrics[k] for k in io.METRICS_SCHEMA.names}
    io.write_table(pd.DataFrame([row]), metrics_parquet, io.METRICS_SCHEMA)
    io.write_json(metrics, metrics_json)
    checkpoint.remove()


def scoring_models(models: list[tuple[str, str]], output: str) -> None:
    """Write the regime table: one row per scoring model (``models``: (run seed, predictions path)).

    Columns: :data:`unseen.io.SCORING_MODELS_SCHEMA` (results/README.md).
    """
    from unseen.regime import regime_row, regime_summary

    rows = []
    for seed, path in models:
        with io.reading(path), io.open_npz(path) as arrays:
            rows.append(regime_row(arrays, int(seed)))
    table = pd.DataFrame(rows, columns=io.SCORING_MODELS_SCHEMA.names)
    table = table.sort_values(["seed", "kind", "model"], ignore_index=True)
    io.write_table(table, output, io.SCORING_MODELS_SCHEMA)
    for kind, stats in regime_summary(table)["by_kind"].items():
        log.info("%-7s models: %d, mean training accuracy %.4f, accuracy on what they score %.4f",
                 kind, stats["models"], stats["train_accuracy"], stats["scored_accuracy"])


def summarize(metrics: list[str], parquet: str, csv: str) -> None:
    """Concatenate every retrain's metrics into one table (Parquet and CSV)."""
    table = pd.concat([io.read_table(m, io.METRICS_SCHEMA) for m in metrics], ignore_index=True)
    table = table.sort_values(
        ["seed", "retrain_budget", "method", "scorer", "strategy", "pruning_rate"], ignore_index=True
    )
    io.write_table(table, parquet, io.METRICS_SCHEMA)
    flat = table.assign(per_class_accuracy=table["per_class_accuracy"].map(lambda v: json.dumps([float(x) for x in v])))
    with io.atomic_path(csv) as tmp:
        flat.to_csv(tmp, index=False)
    for row in table.itertuples():
        log.info(
            "%-13s %-16s %-19s rate %-4s size %6d test acc %.4f",
            row.method, row.scorer, row.strategy, row.pruning_rate, row.coreset_size,
            row.test_accuracy,
        )


def report(
    summary: str,
    score_tables: list[tuple[str, str, str, str]],
    out_dir: str,
    scorer: str,
    per_class_rate: float | None = None,
    classes_from: str | None = None,
    scoring_models: str | None = None,
    strategy_choices: list[str] = (),
    dataset: str | None = None,
) -> None:
    """Write results/report/: its tables, HTML notes and figures (results/README.md).

    ``score_tables`` holds (seed, scorer, kind, path) with kind fitting or unseen;
    ``strategy_choices`` the run's `validated` choice files.
    See :func:`unseen.report.write_report`.
    """
    from unseen.report import write_report

    tables = {(int(seed), name, kind): io.read_table(path)
              for seed, name, kind, path in score_tables}
    classes = None
    if classes_from:
        with open(classes_from) as handle:
            classes = json.load(handle).get("classes")
    regime = None if scoring_models is None else io.read_table(scoring_models, io.SCORING_MODELS_SCHEMA)
    written = write_report(io.read_table(summary), tables, out_dir, scorer, per_class_rate, classes,
                           regime, strategy_choices, dataset)
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
