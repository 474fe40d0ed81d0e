"""The workflow's core steps on in-memory objects, shared by :mod:`unseen.api` and :mod:`unseen.jobs`.

The jobs are file-in, file-out adapters around these functions and the API
calls them on arrays, so a step's settings, seeds and model names are decided
in one place and the API reproduces the workflow by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unseen.budget import retrain_train_settings, scoring_train_settings
from unseen.images import ImageDataset
from unseen.naming import RETRAIN_SEED
from unseen.seeds import derive_seed
from unseen.scorers import PredictionRecord, StatisticsRecorder
from unseen.subset_training import train_and_evaluate, train_on_subset, uses_statistics


@dataclass
class TrainedScoringModel:
    """A scoring model trained by :func:`train_scoring_model`, with what it recorded.

    ``result``: :class:`unseen.train.TrainResult`; ``norm``: the (mean, std) it
    normalised with; ``device`` and ``settings`` (:class:`unseen.train.TrainSettings`)
    as used; ``recorder``: the :class:`~unseen.scorers.StatisticsRecorder` when the
    record holds statistics, None when it holds float16 logits; ``seed``: the
    model's own seed; ``record_ids``: the samples it recorded, ascending.
    """

    name: str
    seed: int
    train_ids: np.ndarray
    record_ids: np.ndarray
    result: Any
    norm: tuple[Any, Any]
    device: Any
    settings: Any
    recorder: Any

    def record(self, data: ImageDataset) -> PredictionRecord:
        """Its :class:`~unseen.scorers.PredictionRecord` of ``record_ids``, with the model
        attached for the scorers that run it (GraNd)."""
        from unseen.grand import ScoringModel  # imports torch: only when a record is asked for

        mean, std = self.norm
        model = ScoringModel(self.result.model, data.train_x[self.record_ids],
                             np.asarray(mean, np.float32), np.asarray(std, np.float32), self.device)
        labels = data.train_y[self.record_ids]
        if self.recorder is None:
            return PredictionRecord(self.record_ids, labels, self.result.recorded_epochs,
                                    logits=self.result.recorded_logits, model=model)
        return PredictionRecord(self.record_ids, labels,
                                np.asarray(self.recorder.epochs, dtype=np.int64),
                                stats=self.recorder.stacked(), model=model)


def train_scoring_model(
    data: ImageDataset,
    train_ids: np.ndarray,
    record_ids: np.ndarray,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    record_epochs: list[int],
    run_seed: int,
    model_name: str,
    device: str,
    threads: int | None,
    record_format: str = "auto",
    scoring_budget: float | str | None = None,
    where: str | None = None,
    checkpoint=None,
) -> TrainedScoringModel:
    """Train scoring model ``model_name`` (fold k, a stage model or the fitting model) on
    ``train_ids`` and record its predictions on ``record_ids`` (int64 row ids of ``data``).

    ``train_settings`` are the fitting model's (config ``scoring_model.train``); a
    ``scoring_budget`` (config ``budget.scoring``) rescales them to its share of the
    fitting model's SGD steps, None trains them as written (the fitting model). The
    model's seed is ``derive_seed(run_seed, model_name)``, so a model of the API and
    the same model of a workflow run are the same. ``where`` (e.g. the output file)
    is named with the model if its training diverges; ``checkpoint``
    (:class:`unseen.resume.TrainingCheckpoint`) keeps the training's state, or None.
    """
    train_ids = np.sort(np.asarray(train_ids, dtype=np.int64))
    record_ids = np.sort(np.asarray(record_ids, dtype=np.int64))
    if scoring_budget is not None:
        train_settings = scoring_train_settings(train_settings, len(data.train_y), scoring_budget)
    recorder = (StatisticsRecorder(data.train_y[record_ids])
                if uses_statistics(record_format, data.num_classes) else None)
    seed = derive_seed(run_seed, model_name)
    result, norm, used_device, settings = train_on_subset(
        data, train_ids, record_ids, model_spec, train_settings, record_epochs, seed, device,
        threads, on_record=recorder,
        name=f"scoring model {model_name}" + (f" ({where})" if where else ""),
        lr_key="scoring_model.train.lr", checkpoint=checkpoint,
    )
    return TrainedScoringModel(model_name, seed, train_ids, record_ids, result, norm, used_device,
                               settings, recorder)


def retrain(
    data: ImageDataset,
    coreset_ids: np.ndarray | None,
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    retrain_budget: str,
    seed: int,
    device: str,
    threads: int | None,
    name: str = "retrain",
    checkpoint=None,
) -> dict[str, Any]:
    """Train a fresh model on ``coreset_ids`` (every training sample if None); evaluate on test.

    ``train_settings`` are the full-data model's; a coreset trains under
    ``retrain_budget`` (:func:`unseen.budget.retrain_train_settings`), the
    full-data model as written. Every retrain of a run seeds its model with
    ``derive_seed(seed, RETRAIN_SEED)``, so methods differ only in their data.
    ``name`` names the model in the error a diverged training raises; ``checkpoint``
    (:class:`unseen.resume.TrainingCheckpoint`) keeps the training's state, or None.

    Returns:
        :func:`unseen.subset_training.train_and_evaluate`'s metrics plus ``retrain_budget``.
    """
    if coreset_ids is None:
        ids = data.sample_ids
    else:
        ids = np.sort(np.asarray(coreset_ids, dtype=np.int64))
        train_settings = retrain_train_settings(train_settings, len(data.train_y), retrain_budget)
    metrics = train_and_evaluate(data, ids, model_spec, train_settings,
                                 derive_seed(seed, RETRAIN_SEED), device, threads, name=name,
                                 checkpoint=checkpoint)
    return {**metrics, "retrain_budget": retrain_budget}
