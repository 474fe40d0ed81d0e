"""The scoring models' files: ``model.pt`` and ``predictions.npz``, written and read here.

A scoring model (fold, fitting or stage model) leaves a checkpoint (state
dict, model spec, training ids, seed, name, input normalisation) and a
predictions file: the per-epoch record of the samples it scored, plus what
its training cost (results/README.md). The gradient scorers load the
checkpoint through :mod:`unseen.grand`, which reads it with
:func:`unseen.checkpoints.load_checkpoint` (the checkpoint's layout and safe
reading live there). Torch is imported only to write a checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unseen import io
from unseen.budget import NO_SCORING
from unseen.checkpoints import checkpoint_contents
from unseen.scorers import PredictionRecord


def save_scoring_model(
    result, model_spec, train_ids, record_ids, labels, model_name, seed, norm,
    recorder, checkpoint: str, predictions: str, budget_label: str,
    fit: dict[str, float] | None = None, made_with: dict[str, Any] | None = None,
) -> None:
    """Write a trained scoring model: checkpoint ``model.pt`` and its record ``predictions.npz``.

    The predictions file holds: sample_ids (R,), labels (R,), epochs (E,),
    train_ids (T,), model_name, train_samples_seen (sample-epochs of training),
    train_wall_seconds (training plus recording), train_steps (SGD steps),
    scoring_budget (``budget_label``, "1" for the fitting model), and either
    logits float16 (E, R, C) or, in the statistics format, ``stat_<name>`` (E, R)
    for every name in :data:`unseen.scorers.STAT_NAMES`; with ``fit`` (the
    regime statistics of :func:`unseen.jobs.model_fit`) also train_accuracy,
    train_loss, scored_accuracy and scored_loss (float64 scalars). The checkpoint holds
    the state dict, model spec, train ids, seed, name and the input
    normalisation ``norm`` (mean, std), which GraNd needs, as
    :func:`unseen.checkpoints.checkpoint_contents` lays them out. ``recorder`` is None
    (float16 logits) or a :class:`~unseen.scorers.StatisticsRecorder`.
    With ``made_with`` (:func:`made_with`), the settings the model was trained
    under are stored as a JSON string ``made_with``; the workflow compares them
    with the config before a run (:func:`unseen.preflight.check_made_with`).
    Both are documented in results/README.md.
    """
    import torch

    with io.atomic_path(checkpoint) as tmp:
        torch.save(checkpoint_contents(result.model, model_spec, train_ids, seed, model_name, norm), tmp)
    if recorder is None:
        record = {"epochs": result.recorded_epochs, "logits": result.recorded_logits}
    else:
        stats = recorder.stacked()
        record = {"epochs": np.asarray(recorder.epochs, dtype=np.int64)}
        record.update({f"stat_{name}": values for name, values in stats.items()})
    io.save_npz(
        predictions,
        sample_ids=np.asarray(record_ids, dtype=np.int64),
        labels=labels[record_ids],
        train_ids=np.asarray(train_ids, dtype=np.int64),
        model_name=np.array(model_name),
        train_samples_seen=np.int64(result.samples_seen),
        train_wall_seconds=np.float64(result.wall_seconds),
        train_steps=np.int64(result.steps),
        scoring_budget=np.array(budget_label),
        **{key: np.float64(value) for key, value in (fit or {}).items()},
        **({} if made_with is None else {"made_with": np.array(canonical(made_with))}),
        **record,
    )


def made_with(
    model_spec: dict[str, Any], train: dict[str, Any], record_epochs: list[int],
    record_format: str, budget_label: str,
) -> dict[str, Any]:
    """The settings a scoring model is trained under, as its predictions file records them.

    ``model_spec`` and ``train``: the config's ``scoring_model`` (arch and
    options, ``train`` as written); ``budget_label``: ``"1"`` for the fitting
    model, else :func:`unseen.budget.scoring_budget_label` of ``budget.scoring``.
    """
    return {"model": {"arch": model_spec["arch"], "options": model_spec.get("options", {})},
            "train": dict(train), "record_epochs": sorted(int(e) for e in record_epochs),
            "record_format": record_format, "scoring_budget": budget_label}


def canonical(settings: dict[str, Any]) -> str:
    """``settings`` as one JSON string: the same settings always give the same text."""
    import json

    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def read_predictions(path: str) -> dict[str, np.ndarray]:
    """Every array of a predictions file, checked: what :func:`save_scoring_model` writes.

    The one reader of ``predictions.npz`` files. Raises
    :class:`unseen.io.DamagedFileError` naming the file when it is not a
    complete archive, repeats a sample id, or holds NaN or infinite logits or
    statistics (a model whose training diverged: it scores nothing meaningful).
    """
    arrays = io.load_npz(path)
    for key in ("sample_ids", "train_ids"):
        ids = arrays[key]
        if len(np.unique(ids)) != len(ids):
            raise io.DamagedFileError(path, f"{key} repeats a sample id (was it edited by hand?)")
    recorded = [k for k in arrays if k == "logits" or k.startswith("stat_")]
    for key in recorded:
        values = arrays[key]
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise io.DamagedFileError(
                path, f"{key} holds NaN or infinite values: the model's training diverged, so"
                      " its outputs score nothing. Lower scoring_model.train.lr first")
    return arrays


def record_from_arrays(arrays: dict[str, np.ndarray]) -> PredictionRecord:
    """The :class:`PredictionRecord` in the arrays of a predictions file (either format).

    ``arrays`` is :func:`read_predictions` of a file written by :func:`save_scoring_model`.
    """
    stats = {k[len("stat_"):]: v for k, v in arrays.items() if k.startswith("stat_")}
    return PredictionRecord(
        sample_ids=arrays["sample_ids"],
        labels=arrays["labels"],
        epochs=arrays["epochs"],
        logits=arrays.get("logits"),
        stats=stats or None,
    )


def scoring_cost(predictions: list[str]) -> dict[str, Any]:
    """What training the scoring models behind ``predictions`` cost, and under which budget.

    ``predictions`` are predictions files (``.npz``) and, for ``validated``
    coresets, the strategy choice (``.json``): its candidates' training counts
    as scoring cost too, since the coreset needed it.

    Returns a dict with ``scoring_sample_epochs`` (training samples processed),
    ``scoring_wall_seconds``, ``scoring_steps`` (SGD steps, summed over the
    models) and ``scoring_budget`` (the budget label of the fold and stage
    models, ``"1"`` for the fitting model, ``"none"`` without predictions).
    Shared models (the K fold models) count fully for every coreset that uses
    them: the cost is what producing that one coreset from scratch takes.
    """
    cost = {"scoring_sample_epochs": 0, "scoring_wall_seconds": 0.0, "scoring_steps": 0}
    labels = []
    for path in predictions:
        if str(path).endswith(".json"):
            choice = io.read_json(path)
            cost["scoring_sample_epochs"] += int(choice["train_samples_seen"])
            cost["scoring_wall_seconds"] += float(choice["train_wall_seconds"])
            cost["scoring_steps"] += int(choice["train_steps"])
            continue
        with io.reading(path), io.open_npz(path) as arrays:
            cost["scoring_sample_epochs"] += int(arrays["train_samples_seen"])
            cost["scoring_wall_seconds"] += float(arrays["train_wall_seconds"])
            cost["scoring_steps"] += int(arrays["train_steps"])
            labels.append(str(arrays["scoring_budget"]))
    # The fitting model is the reference (budget 1); fold and stage models carry the run's budget.
    distinct = sorted(set(labels) - {"1"}) or sorted(set(labels))
    cost["scoring_budget"] = "/".join(distinct) if distinct else NO_SCORING
    return cost
