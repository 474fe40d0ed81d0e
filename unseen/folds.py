"""Stratified, seeded assignment of training samples to K folds."""

from __future__ import annotations

import warnings

import numpy as np

# How fold model k uses the folds (config folds.mode); the first is the default.
FOLD_MODES = ("paper", "holdout")


def assign_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign each sample to one of ``k`` folds, stratified by class.

    ``sklearn.model_selection.StratifiedKFold`` with shuffling: fold sizes differ
    by at most one overall and within every class, and every fold holds every
    class that has at least ``k`` samples (a smaller class is spread over fewer
    folds; the workflow's preflight says so before a run).

    Args:
        labels: int, shape (N,).
        k: number of folds, >= 2.
        seed: the run seed (any int in [0, 2**32)).

    Returns:
        int64 array of shape (N,) with values in [0, k).
    """
    # scikit-learn's model_selection takes ~0.5 s to import; only the split job needs it
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if len(labels) < k:
        raise ValueError(f"cannot split {len(labels)} samples into {k} folds")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():
        # a class smaller than k: the workflow's preflight reports it before a run
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for fold, (_, members) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            folds[members] = fold
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
