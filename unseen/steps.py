"""The workflow's core steps on in-memory objects, shared by :mod:`unseen.api` and :mod:`unseen.jobs`.

The jobs are file-in, file-out adapters around these functions and the API
calls them on arrays, so a step's settings, seeds and model names are decided
in one place and the API reproduces the workflow by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unseen.budget import retrain_train_settings
from unseen.images import ImageDataset
from unseen.naming import RETRAIN_SEED
from unseen.seeds import derive_seed
from unseen.subset_training import train_and_evaluate


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
) -> dict[str, Any]:
    """Train a fresh model on ``coreset_ids`` (every training sample if None); evaluate on test.

    ``train_settings`` are the full-data model's; a coreset trains under
    ``retrain_budget`` (:func:`unseen.budget.retrain_train_settings`), the
    full-data model as written. Every retrain of a run seeds its model with
    ``derive_seed(seed, RETRAIN_SEED)``, so methods differ only in their data.
    ``name`` names the model in the error a diverged training raises.

    Returns:
        :func:`unseen.subset_training.train_and_evaluate`'s metrics plus ``retrain_budget``.
    """
    if coreset_ids is None:
        ids = data.sample_ids
    else:
        ids = np.sort(np.asarray(coreset_ids, dtype=np.int64))
        train_settings = retrain_train_settings(train_settings, len(data.train_y), retrain_budget)
    metrics = train_and_evaluate(data, ids, model_spec, train_settings,
                                 derive_seed(seed, RETRAIN_SEED), device, threads, name=name)
    return {**metrics, "retrain_budget": retrain_budget}
