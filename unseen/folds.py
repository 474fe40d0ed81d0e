"""Stratified, seeded assignment of training samples to K folds."""

from __future__ import annotations

import numpy as np

# How fold model k uses the folds (config folds.mode); the first is the default.
FOLD_MODES = ("paper", "holdout")


def assign_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign each sample to one of ``k`` folds, stratified by class.

    Within each class the samples are shuffled with ``seed`` and dealt to the
    folds in turn; the starting fold rotates from class to class so that fold
    sizes differ by at most one overall and every fold holds every class that
    has at least ``k`` samples.

    Args:
        labels: int, shape (N,).
        k: number of folds, >= 2.
        seed: the run seed.

    Returns:
        int64 array of shape (N,) with values in [0, k).
    """
    labels = np.asarray(labels)
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if len(labels) < k:
        raise ValueError(f"cannot split {len(labels)} samples into {k} folds")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        folds[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return folds


def fold_training_mask(folds: np.ndarray, fold: int, mode: str) -> np.ndarray:
    """Boolean mask, shape (N,), of the samples fold model ``fold`` trains on.

    ``mode="paper"`` (UNSEEN as published): train on fold ``fold`` only and score
    the other K-1 folds. ``mode="holdout"`` (cross-validation style): train on
    every fold except ``fold`` and score fold ``fold``. The samples the model
    scores are always exactly ``~mask``.
    """
    in_fold = np.asarray(folds) == fold
    if mode == "paper":
        return in_fold
    if mode == "holdout":
        return ~in_fold
    raise ValueError(f"unknown fold mode {mode!r}; choose one of {', '.join(FOLD_MODES)}")
