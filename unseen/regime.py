"""The regime a run is in: how well each scoring model fits what it trained on.

UNSEEN's premise is that a model trained on all the data has (nearly) fitted
every sample, so its scores crowd and change from seed to seed. Whether a run
is in that regime is read from its scoring models: the training accuracy and
mean loss of each one on its own un-augmented training samples, and its
accuracy on the samples it scores (the fitting model scores its own training
set; a fold or stage model scores samples it never saw). One row per model in
``results/scoring_models.parquet`` (results/README.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from unseen.scorers import cross_entropy_loss

#: Training accuracy from which the fitting model counts as fitted (the paper's regime).
FITTED_TRAIN_ACCURACY = 0.99

def fit_statistics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``logits`` float (N, C) against int ``labels`` (N,).

    Returns ``{"accuracy": fraction in [0, 1], "mean_loss": nats}``; NaN for both when N = 0.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return {"accuracy": float("nan"), "mean_loss": float("nan")}
    loss = cross_entropy_loss(logits, labels)
    return {
        "accuracy": float((logits.argmax(axis=1) == labels).mean()),
        "mean_loss": float(loss.mean()),
    }


def model_kind(model_name: str) -> str:
    """``fitting``, ``fold`` or ``stage`` from a scoring model's name (``fold3``, ``stage1`` ...)."""
    for kind in ("fitting", "fold", "stage"):
        if model_name.startswith(kind):
            return kind
    raise ValueError(f"not a scoring model's name: {model_name!r} (fitting, fold<k> or stage<t>)")


def regime_row(arrays: dict[str, Any], seed: int) -> dict[str, Any]:
    """One row of the regime table from a scoring model's predictions file (its arrays).

    Files written before the regime was recorded have no fit statistics: NaN.
    """
    def stat(key):
        return float(arrays[key]) if key in arrays else float("nan")

    name = str(arrays["model_name"])
    return {
        "seed": int(seed),
        "model": name,
        "kind": model_kind(name),
        "n_train": int(len(arrays["train_ids"])),
        "n_scored": int(len(arrays["sample_ids"])),
        "train_accuracy": stat("train_accuracy"),
        "train_loss": stat("train_loss"),
        "scored_accuracy": stat("scored_accuracy"),
        "scored_loss": stat("scored_loss"),
        "train_steps": int(arrays["train_steps"]),
    }


def regime_summary(table: pd.DataFrame) -> dict[str, Any]:
    """What the report says of the regime: mean training accuracy per kind of model, fitted or not.

    Args:
        table: the regime table (results/scoring_models.parquet).

    Returns:
        ``{"by_kind": {kind: {"train_accuracy", "scored_accuracy", "models"}},
        "fitting_train_accuracy": mean over seeds or None, "fitted": bool or None}``;
        ``fitted`` is whether every seed's fitting model reaches
        :data:`FITTED_TRAIN_ACCURACY` (None without a fitting model).
    """
    by_kind = {
        kind: {
            "train_accuracy": float(group["train_accuracy"].mean()),
            "scored_accuracy": float(group["scored_accuracy"].mean()),
            "models": int(len(group)),
        }
        for kind, group in table.groupby("kind", sort=True)
    }
    fitting = table.loc[table["kind"] == "fitting", "train_accuracy"]
    return {
        "by_kind": by_kind,
        "fitting_train_accuracy": float(fitting.mean()) if len(fitting) else None,
        "fitted": bool((fitting >= FITTED_TRAIN_ACCURACY).all()) if len(fitting) else None,
    }


def regime_sentences(table: pd.DataFrame) -> list[str]:
    """The report's lines on the regime, the last one a warning when the fitting model is not fitted.

    ``table`` is the regime table; an empty one gives one line saying so.
    """
    if table.empty:
        return ["No scoring models in this run (no fitting, fold or stage model was trained)."]
    summary = regime_summary(table)
    names = {"fitting": "fitting model", "fold": "fold models", "stage": "stage models"}
    lines = [
        f"{names[kind]} ({stats['models']}): training accuracy {stats['train_accuracy']:.2%} "
        f"on their own un-augmented training samples, {stats['scored_accuracy']:.2%} on the "
        "samples they score"
        for kind, stats in summary["by_kind"].items()
    ]
    if summary["fitted"] is False:
        lines.append(
            f"Warning: the fitting model reaches {summary['fitting_train_accuracy']:.2%} training "
            f"accuracy (under {FITTED_TRAIN_ACCURACY:.0%} in at least one seed): it is still "
            "learning, its scores are about as spread and stable as out-of-fold ones, and UNSEEN "
            "has little to gain here for its K extra trainings (docs/results.md, the two regimes)."
        )
    return lines
