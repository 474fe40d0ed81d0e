"""Training budgets: how many SGD steps each model of a run gets.

Two rules make the comparison between pruning methods fair (issue 10,
docs/results.md):

* **Scoring budget** (``budget.scoring``). A fold model trains on 1/K of the
  data (paper mode); for the same number of epochs it takes K times fewer SGD
  steps than the fitting model, and its out-of-fold scores are those of an
  under-trained model. A number ``b`` gives every fold and stage model
  ``round(b * S)`` steps, where ``S`` is the fitting model's step count (the
  scoring model's settings on the whole training set). ``"epochs"`` keeps the
  old rule: ``scoring_model.train.epochs`` passes over the model's own
  training set.
* **Retrain budget** (``budget.retrain``). ``"full_steps"`` (the CCS protocol)
  gives every retrain the full-data model's step count, whatever the coreset
  size; ``"epochs"`` gives it ``final_model.train.epochs`` passes over the
  coreset (the compute-saving view: a 90 % pruned coreset trains 10x faster).

Units: steps are SGD updates of one batch; an epoch drops its last incomplete
batch. This module is torch-free so light jobs and config checks can use it.
"""

from __future__ import annotations

import math
from typing import Any

#: Retrain budgets, in the order the report lists them.
RETRAIN_BUDGETS = ("full_steps", "epochs")
#: The scoring budget that keeps the per-model epoch rule instead of a step fraction.
EPOCHS = "epochs"
#: Metrics label for models that no scoring model stands behind (full, random).
NO_SCORING = "none"


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """SGD steps in one pass over ``n_samples`` at ``batch_size``; the ragged last batch is dropped.

    A set smaller than a batch is one batch of the whole set.
    """
    if n_samples < 1:
        raise ValueError(f"cannot train on {n_samples} samples")
    return max(1, n_samples // min(int(batch_size), n_samples))


def planned_steps(n_samples: int, train: dict[str, Any]) -> int:
    """SGD steps a model trained on ``n_samples`` takes under ``train`` settings as written.

    ``train`` is a config ``train`` section: ``iterations`` > 0 is a fixed step
    count, otherwise ``epochs`` passes of :func:`steps_per_epoch` steps.
    """
    iterations = int(train.get("iterations", 0) or 0)
    if iterations > 0:
        return iterations
    return steps_per_epoch(n_samples, train.get("batch_size", 64)) * int(train.get("epochs", 20))


def scoring_budget_label(budget: float | str) -> str:
    """The scoring budget as metrics and file names write it: ``"epochs"`` or ``"%g"`` of the fraction."""
    if budget == EPOCHS:
        return EPOCHS
    return f"{float(budget):g}"


def check_scoring_budget(budget: float | str) -> None:
    """Raise ValueError unless ``budget`` is ``"epochs"`` or a number > 0."""
    if budget == EPOCHS:
        return
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(
            f"scoring budget must be 'epochs' or a number > 0 (a fraction of the fitting "
            f"model's SGD steps, e.g. 1.0), got {budget!r}"
        )


def scoring_train_settings(
    train: dict[str, Any], n_total: int, budget: float | str
) -> dict[str, Any]:
    """Training settings of a fold or stage model under the scoring ``budget``.

    Args:
        train: the ``scoring_model.train`` section (the fitting model's settings).
        n_total: training-set size N (the fitting model trains on all of it).
        budget: a fraction b > 0 of the fitting model's steps, or ``"epochs"``.

    Returns:
        A copy of ``train``; for a fraction, ``iterations`` is set to
        ``max(1, round_half_up(b * planned_steps(N, train)))``.
    """
    check_scoring_budget(budget)
    if budget == EPOCHS:
        return dict(train)
    steps = max(1, math.floor(float(budget) * planned_steps(n_total, train) + 0.5))
    return {**train, "iterations": steps}


def retrain_train_settings(
    train: dict[str, Any], n_total: int, budget: str
) -> dict[str, Any]:
    """Training settings of a retrain on a coreset under the retrain ``budget``.

    Args:
        train: the ``final_model.train`` section (the full-data model's settings).
        n_total: training-set size N.
        budget: ``"full_steps"`` (as many steps as the full-data model) or
            ``"epochs"`` (``train.epochs`` passes over the coreset).
    """
    if budget not in RETRAIN_BUDGETS:
        raise ValueError(f"retrain budget must be one of {RETRAIN_BUDGETS}, got {budget!r}")
    if budget == "epochs":
        return dict(train)
    return {**train, "iterations": planned_steps(n_total, train)}


def epochs_of(n_samples: int, train: dict[str, Any]) -> int:
    """Epochs (the last possibly partial) of a model trained on ``n_samples`` under ``train``.

    The same count as :func:`unseen.train.training_length`, without torch.
    """
    iterations = int(train.get("iterations", 0) or 0)
    if iterations > 0:
        return math.ceil(iterations / steps_per_epoch(n_samples, train.get("batch_size", 64)))
    return int(train.get("epochs", 20))
