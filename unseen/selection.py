"""Coreset sizes, score aggregation, top-k order and the random subset.

Pruning rate ``r`` is the fraction of the training set that is removed; the
coreset keeps :func:`coreset_size` samples. Selection keeps the highest scores
first (scores follow the "higher = keep" convention of :mod:`unseen.scorers`);
``keep="lowest"`` keeps the easiest samples instead. Ties are broken by
ascending sample id, so a selection is a pure function of its inputs. The
selection strategies (top, CCS, class quotas, auto, validated) are in
:mod:`unseen.strategies`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd


KEEP_CHOICES = ("highest", "lowest")


def coreset_size(n_total: int, pruning_rate: float) -> int:
    """Number of samples kept when ``pruning_rate`` (in (0, 1)) of ``n_total`` is pruned.

    ``n_total * (1 - pruning_rate)`` rounded half up, and at least 1. The
    product is exact: the rate is taken as the decimal it is written as
    (``0.3`` is 3/10, not the binary float 0.29999...), so ``coreset_size(45,
    0.3)`` is 32 (31.5 rounded up), not 31.
    """
    if not 0.0 < pruning_rate < 1.0:
        raise ValueError(f"pruning rate must lie in (0, 1), got {pruning_rate}")
    return max(1, min(n_total, round_half_up(n_total * (1 - exact_decimal(pruning_rate)))))


def exact_decimal(value: float) -> Fraction:
    """``value`` as the shortest decimal that prints as it (``repr``), as an exact fraction.

    Config values are written in decimal; their binary floats are off by up
    to 1 ulp, enough to push an exact .5 below the rounding threshold.
    """
    return Fraction(repr(float(value)))


def round_half_up(x: Fraction) -> int:
    """``x`` rounded to the nearest integer, exact halves upwards."""
    return math.floor(x + Fraction(1, 2))


def stage_sizes(target: int, fractions: list[float]) -> list[int]:
    """Cumulative coreset size after each stage.

    ``fractions`` increase strictly and end at 1.0; stage ``t`` holds
    ``round(fractions[t] * target)`` samples, raised where needed so that each
    stage adds at least one sample while that is possible. The last size is
    exactly ``target``.
    """
    if not fractions or abs(fractions[-1] - 1.0) > 1e-9:
        raise ValueError(f"stage fractions must end at 1.0, got {fractions}")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f"stage fractions must increase strictly, got {fractions}")
    sizes = [max(1, round_half_up(exact_decimal(f) * target)) for f in fractions]
    sizes[-1] = target
    for t in range(1, len(sizes)):
        sizes[t] = max(sizes[t], min(target, sizes[t - 1] + 1))
    return sizes


def rank_for_selection(
    sample_ids: np.ndarray, scores: np.ndarray, keep: str = "highest"
) -> np.ndarray:
    """Positions of the samples in selection order: best first, ties by ascending id.

    Args:
        sample_ids: int (N,).
        scores: float (N,), higher = keep first (for ``keep="highest"``).
        keep: "highest" or "lowest".

    Returns:
        int64 (N,) permutation of ``range(N)``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("cannot select on non-finite scores")
    primary = -scores if keep == "highest" else scores
    # np.lexsort sorts by the last key first.
    return np.lexsort((np.asarray(sample_ids, dtype=np.int64), primary)).astype(np.int64)


def select_top(
    sample_ids: np.ndarray, scores: np.ndarray, n: int, keep: str = "highest"
) -> np.ndarray:
    """Positions of the ``n`` samples to keep, in selection order; int64 (n,)."""
    if not 0 <= n <= len(sample_ids):
        raise ValueError(f"cannot select {n} of {len(sample_ids)} samples")
    return rank_for_selection(sample_ids, scores, keep)[:n]


def aggregate_scores(shards: pd.DataFrame) -> pd.DataFrame:
    """Average the out-of-fold scores of each sample.

    Args:
        shards: rows (sample_id, label, model, score), one per (sample, scoring model).

    Returns:
        One row per sample, sorted by sample_id: sample_id, label, score (mean
        over the models that never saw it), score_std (population std, 0 for a
        single score), n_scores.
    """
    grouped = shards.groupby("sample_id", sort=True)
    out = pd.DataFrame(
        {
            "label": grouped["label"].first(),
            "score": grouped["score"].mean(),
            "score_std": grouped["score"].std(ddof=0),
            "n_scores": grouped["score"].size(),
        }
    ).reset_index()
    if (grouped["label"].nunique() > 1).any():
        raise ValueError("a sample has different labels in different shards")
    return out


def random_subset(sample_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions of ``n`` samples drawn uniformly without replacement; int64 (n,)."""
    order = np.argsort(np.asarray(sample_ids, dtype=np.int64), kind="stable")
    perm = np.random.default_rng(seed).permutation(len(order))
    return order[perm[:n]].astype(np.int64)
