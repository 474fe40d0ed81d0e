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

from unseen.naming import SELECT_SEED
from unseen.plugins import CLASS_DIFFICULTY
from unseen.seeds import derive_seed
from unseen.selection import coreset_size, stage_sizes
from unseen.strategies import DEFAULT_STRATEGY, select_coreset, strategy_needs

#: Keys of the config's ``selection`` section that become :func:`select_coreset` options.
STRATEGY_OPTION_KEYS = (
    "ccs_beta", "ccs_bins", "priority_lambda", "auto_ccs_rate", "validated_strategy",
)


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
            ccs_bins, priority_lambda, auto_ccs_rate; validated_strategy, the
            choice of :func:`unseen.validation.choose_strategy` for ``validated``);
            missing keys take the library defaults.
        seed: seeds CCS's within-bin sampling.
        class_error: float (C,) out-of-fold error rate per class in [0, 1];
            required by the strategies that need the class difficulty table
            (:data:`unseen.plugins.CLASS_DIFFICULTY`), ignored otherwise.
        base_labels: labels of the samples already in the coreset (later UNSEEN
            stages), so class quotas refer to the whole coreset.
        pruning_rate: the coreset's pruning rate (the rate-aware ``auto`` strategy).

    Returns:
        int64 (n,) positions into ``table``, best first.
    """
    strategy = selection.get("strategy", DEFAULT_STRATEGY)
    options: dict[str, Any] = {"seed": seed, "pruning_rate": pruning_rate}
    options.update({key: selection[key] for key in STRATEGY_OPTION_KEYS if key in selection})
    if strategy_needs(strategy, CLASS_DIFFICULTY):
        if class_error is None:
            raise ValueError(f"{strategy} needs the per-class error rates (--class-difficulty)")
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


def first_stage(
    scores: pd.DataFrame,
    pruning_rate: float,
    fractions: list[float],
    selection: dict[str, Any],
    seed: int,
    class_error: np.ndarray | None = None,
) -> pd.DataFrame:
    """Stage 1 of UNSEEN: the coreset table of the first ``fractions[0]`` of the target.

    With ``fractions=[1.0]`` this is the whole single-step selection.
    ``scores``: all N samples (sample_id, label, score; higher = keep first).
    The selection seed derives from ``seed``, the rate and the stage, as in a
    workflow run.
    """
    n = stage_target(len(scores), pruning_rate, fractions, 1)
    pos = choose_rows(scores, n, selection, derive_seed(seed, SELECT_SEED, pruning_rate, 1),
                      class_error, pruning_rate=pruning_rate)
    chosen = scores.iloc[pos]
    return coreset_frame(chosen["sample_id"], chosen["label"], 1, chosen["score"])


def next_stage(
    previous: pd.DataFrame,
    candidates: pd.DataFrame,
    n_total: int,
    pruning_rate: float,
    fractions: list[float],
    stage: int,
    selection: dict[str, Any],
    seed: int,
    class_error: np.ndarray | None = None,
) -> pd.DataFrame:
    """S_{stage-1} plus the candidates (scored by the stage model) that fill stage ``stage``.

    Class-quota strategies count the samples already selected, so the quotas
    hold for the whole coreset, not only for the samples added now.
    """
    if np.intersect1d(previous["sample_id"], candidates["sample_id"]).size:
        raise RuntimeError("stage scores include samples that are already selected")
    add = stage_target(n_total, pruning_rate, fractions, stage) - len(previous)
    pos = choose_rows(candidates, add, selection, derive_seed(seed, SELECT_SEED, pruning_rate, stage),
                      class_error, base_labels=previous["label"].to_numpy(),
                      pruning_rate=pruning_rate)
    chosen = candidates.iloc[pos]
    return pd.concat(
        [previous, coreset_frame(chosen["sample_id"], chosen["label"], stage, chosen["score"])],
        ignore_index=True,
    )
