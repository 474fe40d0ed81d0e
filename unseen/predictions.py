"""The scoring models' files: ``model.pt`` and ``predictions.npz``, written and read here.

A scoring model (fold, fitting or stage model) leaves a checkpoint (state
dict, model spec, training ids, seed, name, input normalisation) and a
predictions file: the per-epoch record of the samples it scored, plus what
its training cost (results/README.md). The gradient scorers load the
checkpoint through :mod:`unseen.grand`, which reads it with
:func:`load_checkpoint`. Torch is imported only to write or read a checkpoint.

A checkpoint holds plain tensors, ints, strings, lists and dicts only, so it
is read with ``torch.load(weights_only=True)``, which builds nothing else: a
``model.pt`` planted in a shared results directory cannot run code when a job
loads it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from unseen import io
from unseen.budget import NO_SCORING
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
    :func:`checkpoint_contents` lays them out. ``recorder`` is None
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


def checkpoint_contents(model, model_spec, train_ids, seed, model_name, norm) -> dict[str, Any]:
    """What ``model.pt`` holds, in types that ``torch.load(weights_only=True)`` reads.

    Returns a dict: state_dict (the model's tensors), model_spec (``{"arch",
    "options"}``, plain JSON-like values), train_ids (int64 tensor (T,)), seed
    (int), model_name (str), mean and std (float32 tensors (C,), per-channel
    normalisation on the 0..1 scale). No NumPy arrays or other objects: those
    would need the full unpickler to read.
    """
    import torch

    return {
        "state_dict": model.state_dict(),
        "model_spec": model_spec,
        "train_ids": torch.as_tensor(np.asarray(train_ids, dtype=np.int64)),
        "seed": int(seed),
        "model_name": str(model_name),
        "mean": torch.as_tensor(np.asarray(norm[0], dtype=np.float32)),
        "std": torch.as_tensor(np.asarray(norm[1], dtype=np.float32)),
    }


class UnsafeCheckpointError(RuntimeError):
    """A ``model.pt`` holds more than plain tensors and values, so it was not loaded."""

    def __init__(self, path, reason: str):
        self.path = path
        super().__init__(
            f"{path} was not loaded: it holds objects other than plain tensors, numbers,"
            f" strings, lists and dicts ({reason}), and loading those could run code stored in"
            " the file. It was written by an older version of unseen, or by someone else (check"
            f" ls -l {path}). Nothing in it was run. Fix: retrain that model: rerun the same"
            f" snakemake command with --forcerun {path} (or delete the file, then rerun)"
        )


def load_checkpoint(path) -> dict[str, Any]:
    """The dict of a ``model.pt`` (:func:`checkpoint_contents`), read with ``weights_only=True``.

    The file is first checked complete (:func:`unseen.io.check_checkpoint`,
    :class:`~unseen.io.DamagedFileError` when not). Tensors are loaded to the CPU.
    Raises :class:`UnsafeCheckpointError` when the file holds any other object
    (an older checkpoint with NumPy arrays, or a crafted pickle); nothing in it
    is built or run.
    """
    import pickle

    import torch

    io.check_checkpoint(path)
    try:
        with io.reading(path):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False, the very thing not to do: name only the object
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        raise UnsafeCheckpointError(
            path, f"it refers to {found[1]}" if found else "torch.load(weights_only=True) refused it"
        ) from None


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
