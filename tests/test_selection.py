"""Coreset sizes, stage schedules, top-k selection and aggregation on small hand-made arrays."""

import numpy as np
import pandas as pd
import pytest

from unseen.folds import assign_folds, fold_training_mask
from unseen.selection import (
    aggregate_scores,
    coreset_size,
    random_subset,
    rank_for_selection,
    select_top,
    stage_sizes,
)


def test_coreset_size_rounds_half_up_and_never_empty():
    assert coreset_size(1347, 0.3) == 943  # 942.9
    assert coreset_size(1347, 0.7) == 404  # 404.1
    assert coreset_size(10, 0.25) == 8  # 7.5 -> 8
    assert coreset_size(3, 0.99) == 1
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            coreset_size(100, bad)


def test_stage_sizes_are_cumulative_and_end_at_target():
    assert stage_sizes(404, [0.5, 0.75, 1.0]) == [202, 303, 404]
    assert stage_sizes(943, [1.0]) == [943]
    # Rounding gives (1, 1, 2); stage 2 is raised so that it adds a sample,
    # and the last stage cannot grow past the target.
    assert stage_sizes(2, [0.3, 0.5, 1.0]) == [1, 2, 2]
    assert stage_sizes(10, [0.04, 0.05, 1.0]) == [1, 2, 10]
    with pytest.raises(ValueError, match="end at 1.0"):
        stage_sizes(10, [0.5, 0.9])
    with pytest.raises(ValueError, match="increase"):
        stage_sizes(10, [0.5, 0.5, 1.0])


def test_select_top_keeps_highest_and_breaks_ties_by_id():
    ids = np.array([10, 11, 12, 13, 14])
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert ids[select_top(ids, scores, 3)].tolist() == [11, 14, 10]
    assert ids[select_top(ids, scores, 3, keep="lowest")].tolist() == [13, 10, 12]
    # Order of the input rows does not matter.
    perm = np.array([4, 2, 0, 3, 1])
    assert ids[perm][select_top(ids[perm], scores[perm], 3)].tolist() == [11, 14, 10]


def test_selection_rejects_nan_and_bad_sizes():
    with pytest.raises(ValueError, match="non-finite"):
        rank_for_selection(np.arange(2), np.array([0.1, np.nan]))
    with pytest.raises(ValueError):
        select_top(np.arange(2), np.zeros(2), 3)


def test_aggregate_mean_std_count():
    shards = pd.DataFrame(
        {
            "sample_id": [1, 1, 2, 1, 2],
            "label": [0, 0, 1, 0, 1],
            "model": ["fold0", "fold1", "fold0", "fold2", "fold2"],
            "score": [1.0, 2.0, 4.0, 3.0, 6.0],
        }
    )
    out = aggregate_scores(shards)
    assert out["sample_id"].tolist() == [1, 2]
    assert out["score"].tolist() == [2.0, 5.0]
    assert out["n_scores"].tolist() == [3, 2]
    assert out["score_std"].tolist() == pytest.approx([np.sqrt(2 / 3), 1.0])


def test_folds_are_stratified_balanced_and_seeded():
    labels = np.repeat(np.arange(3), [50, 31, 19])
    folds = assign_folds(labels, 5, seed=7)
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    for cls in range(3):
        per_fold = np.bincount(folds[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(folds, assign_folds(labels, 5, seed=7))
    assert not np.array_equal(folds, assign_folds(labels, 5, seed=8))


def test_fold_training_masks_by_mode():
    folds = np.array([0, 1, 2, 0, 1, 2])
    assert fold_training_mask(folds, 1, "paper").tolist() == [False, True, False, False, True, False]
    assert fold_training_mask(folds, 1, "holdout").tolist() == [True, False, True, True, False, True]
    with pytest.raises(ValueError, match="paper"):
        fold_training_mask(folds, 1, "other")


def test_random_subset_is_seeded_and_order_free():
    ids = np.arange(100, 200)
    a = np.sort(ids[random_subset(ids, 30, seed=3)])
    perm = np.random.default_rng(0).permutation(100)
    b = np.sort(ids[perm][random_subset(ids[perm], 30, seed=3)])
    assert np.array_equal(a, b) and len(np.unique(a)) == 30


def test_coreset_size_is_exact_for_decimal_rates():
    # 45 x 0.7 is 31.4999... in binary floating point; the README promises 31.5 -> 32.
    assert coreset_size(45, 0.3) == 32
    assert coreset_size(15, 0.9) == 2  # 1.5 -> 2
    # Every N up to 3,000 and common rate: equal to the exact decimal computation.
    from decimal import ROUND_HALF_UP, Decimal

    for rate in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.25, 0.75, 0.95):
        keep = 1 - Decimal(str(rate))
        for n in range(1, 3001):
            exact = int((n * keep).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            assert coreset_size(n, rate) == max(1, exact), (n, rate)


def test_stage_sizes_are_exact_for_decimal_fractions():
    assert stage_sizes(45, [0.7, 1.0]) == [32, 45]  # 31.5 -> 32, not 31
    assert stage_sizes(15, [0.1, 1.0]) == [2, 15]  # 1.5 -> 2
