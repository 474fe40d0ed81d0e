"""Coreset tables from score tables: how many to take, which rows, the coreset's columns.

Shared by the workflow's selection jobs (:mod:`unseen.jobs`) and the Python API
(:mod:`unseen.api`); no files. A score table has the columns sample_id, label,
score (higher = keep first); a coreset table has sample_id, label, stage,
score (``io.CORESET_SCHEMA``, results/README.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from unseen.selection import coreset_size, select_coreset, stage_sizes

#: Keys of the config's ``selection`` section that become :func:`select_coreset` options.
STRATEGY_OPTION_KEYS = ("ccs_beta", "ccs_bins", "priority_lambda", "auto_ccs_rate")


def stage_target(n_total: int, pruning_rate: float, fractions: list[float], stage: int) -> int:
    """Cumulative coreset size after 1-based ``stage``."""
    return stage_sizes(coreset_size(n_total, pruning_rate), fractions)[stage - 1]


def coreset_frame(ids, labels, stage, scores) -> pd.DataFrame:
    """A coreset table: sample_id, label, stage (a number or one per row), score."""
    return pd.DataFrame(
        {
            "sample_id": np.asarray(ids, dtype=np.int64),
            "label": np.asarray(labels, dtype=np.int64),
            "stage": np.full(len(ids), stage, dtype=np.int64) if np.isscalar(stage) else stage,
            "score": np.asarray(scores, dtype=np.float64),
        }
    )


def choose_rows(
    table: pd.DataFrame,
    n: int,
    selection: dict[str, Any],
    seed: int,
    class_error: np.ndarray | None = None,
    base_labels: np.ndarray | None = None,
    pruning_rate: float | None = None,
) -> np.ndarray:
    """Positions of the ``n`` rows of a score table to add, by the configured strategy.

    Args:
        table: candidates with columns sample_id, label, score.
        selection: the config's ``selection`` section (keep, strategy, ccs_beta,
            ccs_bins, priority_lambda, auto_ccs_rate); missing keys take the
            library defaults.
        seed: seeds CCS's within-bin sampling.
        class_error: float (C,) out-of-fold error rate per class in [0, 1];
            required by hard_class_priority, ignored otherwise.
        base_labels: labels of the samples already in the coreset (later UNSEEN
            stages), so class quotas refer to the whole coreset.
        pruning_rate: the coreset's pruning rate (the rate-aware ``auto`` strategy).

    Returns:
        int64 (n,) positions into ``table``, best first.
    """
    strategy = selection.get("strategy", "top")
    options: dict[str, Any] = {"seed": seed, "pruning_rate": pruning_rate}
    options.update({key: selection[key] for key in STRATEGY_OPTION_KEYS if key in selection})
    if strategy == "hard_class_priority":
        if class_error is None:
            raise ValueError("hard_class_priority needs the per-class error rates (--class-difficulty)")
        options["class_error"] = np.asarray(class_error, dtype=np.float64)
    if base_labels is not None and len(base_labels):
        options["base_counts"] = np.bincount(np.asarray(base_labels, dtype=np.int64))
    return select_coreset(
        table["score"].to_numpy(),
        table["label"].to_numpy(),
        n,
        strategy,
        sample_ids=table["sample_id"].to_numpy(),
        keep=selection.get("keep", "highest"),
        **options,
    )
