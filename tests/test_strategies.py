"""Selection strategies: hand-worked quotas, exact sizes, no duplicates, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unseen import io
from unseen.coresets import choose_rows
from unseen.jobs import read_class_error
from unseen.strategies import class_error_table
from unseen.selection import coreset_size, select_top
from unseen.strategies import STRATEGIES, apportion, class_quotas, select_coreset


def counts(labels, pos, c):
    return np.bincount(np.asarray(labels)[pos], minlength=c).tolist()


# --- apportionment ------------------------------------------------------------------


def test_apportion_largest_remainder_by_hand():
    # ideal 3.33, 3.33, 3.33 -> floors 3, 3, 3 and the leftover to the lowest index
    assert apportion(np.ones(3), 10, np.array([9, 9, 9])).tolist() == [4, 3, 3]


def test_apportion_hands_a_full_groups_share_to_the_others():
    # group 0 wants 6 but holds 1; its 5 go to groups 1 and 2 in proportion 1:1
    assert apportion(np.array([2.0, 1.0, 1.0]), 12, np.array([1, 20, 20])).tolist() == [1, 6, 5]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100), st.integers(0, 30)), min_size=1, max_size=8),
    st.floats(0, 1),
)
def test_apportion_is_exact_and_capped(groups, fraction):
    weights = np.array([w for w, _ in groups])
    caps = np.array([c for _, c in groups])
    total = int(fraction * caps.sum())
    out = apportion(weights, total, caps)
    assert out.sum() == total
    assert np.all((out >= 0) & (out <= caps))


# --- class-aware strategies by hand -------------------------------------------------------


def test_class_balanced_takes_the_same_fraction_of_every_class():
    labels = np.array([0] * 10 + [1] * 30)
    scores = np.arange(40.0)  # class 1 holds every top score
    pos = select_coreset(scores, labels, 20, "class_balanced")
    assert counts(labels, pos, 2) == [5, 15]
    # within class 0 the best five scores (ids 5..9) are the ones kept
    assert sorted(pos[labels[pos] == 0].tolist()) == [5, 6, 7, 8, 9]
    assert counts(labels, select_top(np.arange(40), scores, 20), 2) == [0, 20]


def test_hard_class_priority_quota_formula_by_hand():
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.zeros(20)
    # w = n_c (1 + lambda err_c) = 10 * (1, 2) -> 6 split 2 : 4
    pos = select_coreset(scores, labels, 6, "hard_class_priority",
                         class_error=np.array([0.0, 1.0]), priority_lambda=1.0)
    assert counts(labels, pos, 2) == [2, 4]
    # lambda = 0 is class-balanced
    pos = select_coreset(scores, labels, 6, "hard_class_priority",
                         class_error=np.array([0.0, 1.0]), priority_lambda=0.0)
    assert counts(labels, pos, 2) == [3, 3]


def test_hard_class_smaller_than_its_quota_gives_the_rest_away():
    labels = np.array([0] * 2 + [1] * 20)
    # w = (2 * 11, 20 * 1): class 0 would get 10.5 of 20 but has only 2
    pos = select_coreset(np.arange(22.0), labels, 20, "hard_class_priority",
                         class_error=np.array([1.0, 0.0]), priority_lambda=10.0)
    assert counts(labels, pos, 2) == [2, 18]


def test_hard_class_priority_requires_class_error():
    with pytest.raises(ValueError, match="class_error"):
        select_coreset(np.zeros(4), np.array([0, 0, 1, 1]), 2, "hard_class_priority")


def test_quotas_count_samples_selected_in_earlier_stages():
    # the coreset already holds 4 of class 0; a balanced total of 8 needs 4 of class 1
    assert class_quotas(np.array([1.0, 1.0]), 4, np.array([10, 10]), np.array([4, 0])).tolist() == [0, 4]
    labels = np.array([0] * 6 + [1] * 10)  # the candidates left after stage 1
    pos = select_coreset(np.arange(16.0), labels, 4, "class_balanced",
                         base_counts=np.array([4, 0]))
    assert counts(labels, pos, 2) == [0, 4]


# --- CCS ------------------------------------------------------------------------------------


def test_ccs_drops_the_hardest_then_spreads_the_budget_over_bins():
    scores = np.arange(10.0)
    labels = np.zeros(10, dtype=int)
    pos = select_coreset(scores, labels, 4, "ccs", ccs_beta=0.2, ccs_bins=2)
    chosen = scores[pos]
    assert 9 not in chosen and 8 not in chosen  # the hardest 20 % are dropped
    # the rest (0..7) splits into bins [0, 3.5) and [3.5, 7]: two from each
    assert (chosen < 3.5).sum() == 2 and (chosen >= 3.5).sum() == 2


def test_ccs_small_bin_gives_its_leftover_to_the_others():
    scores = np.array([0.0] + [10.0 + i * 0.01 for i in range(9)])  # bin 0 holds 1 sample
    pos = select_coreset(scores, np.zeros(10, dtype=int), 6, "ccs", ccs_beta=0.0, ccs_bins=2)
    assert 0 in pos.tolist() and len(pos) == 6


def test_ccs_keeps_fewer_hard_samples_out_when_the_budget_needs_them():
    pos = select_coreset(np.arange(10.0), np.zeros(10, dtype=int), 10, "ccs", ccs_beta=0.5)
    assert sorted(pos.tolist()) == list(range(10))


def test_ccs_result_does_not_depend_on_candidate_order():
    rng = np.random.default_rng(0)
    scores, labels, ids = rng.random(50), rng.integers(0, 3, 50), np.arange(50) * 3
    perm = rng.permutation(50)
    a = ids[select_coreset(scores, labels, 17, "ccs", sample_ids=ids, ccs_bins=5, seed=1)]
    b = ids[perm][select_coreset(scores[perm], labels[perm], 17, "ccs", sample_ids=ids[perm],
                                 ccs_bins=5, seed=1)]
    assert a.tolist() == b.tolist()
    c = ids[select_coreset(scores, labels, 17, "ccs", sample_ids=ids, ccs_bins=5, seed=2)]
    assert sorted(a.tolist()) != sorted(c.tolist())


# --- properties for every strategy ------------------------------------------------------------


@st.composite
def selection_problems(draw):
    n_classes = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(0, 25), min_size=n_classes, max_size=n_classes))
    if sum(sizes) == 0:
        sizes[0] = 1
    labels = np.repeat(np.arange(n_classes), sizes)
    # few distinct values, so ties are common
    scores = np.array(draw(st.lists(st.integers(0, 4), min_size=len(labels),
                                    max_size=len(labels))), dtype=float)
    rate = draw(st.floats(0.01, 0.99))
    err = np.array(draw(st.lists(st.floats(0, 1), min_size=n_classes, max_size=n_classes)))
    perm = np.array(draw(st.permutations(range(len(labels)))))
    return scores, labels, rate, err, perm


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(problem=selection_problems(), keep=st.sampled_from(["highest", "lowest"]))
def test_every_strategy_hits_the_size_exactly_once_each(strategy, problem, keep):
    scores, labels, rate, err, perm = problem
    n = coreset_size(len(labels), rate)
    ids = np.arange(len(labels)) * 2 + 1
    options = dict(class_error=err, priority_lambda=3.0, ccs_bins=4, keep=keep,
                   validated_strategy="ccs")
    pos = select_coreset(scores, labels, n, strategy, sample_ids=ids, **options)
    assert len(pos) == n and len(np.unique(pos)) == n
    assert np.all((pos >= 0) & (pos < len(labels)))
    # deterministic and independent of the order the candidates come in
    again = select_coreset(scores[perm], labels[perm], n, strategy, sample_ids=ids[perm], **options)
    assert sorted(ids[pos].tolist()) == sorted(ids[perm][again].tolist())


@pytest.mark.parametrize("chosen", ["top", "ccs"])
def test_validated_applies_the_chosen_strategy(chosen):
    rng = np.random.default_rng(3)
    scores, labels = rng.random(200), rng.integers(0, 4, 200)
    options = dict(ccs_bins=5, seed=7, pruning_rate=0.8)
    got = select_coreset(scores, labels, 40, "validated", validated_strategy=chosen, **options)
    assert got.tolist() == select_coreset(scores, labels, 40, chosen, **options).tolist()


def test_validated_without_a_choice_says_how_to_make_one():
    with pytest.raises(ValueError, match="choose_strategy"):
        select_coreset(np.zeros(3), np.zeros(3, dtype=int), 1, "validated")
    with pytest.raises(ValueError, match="validated_strategy must be one of"):
        select_coreset(np.zeros(3), np.zeros(3, dtype=int), 1, "validated",
                       validated_strategy="hard_class_priority")


def test_uniform_ignores_the_scores_and_is_seeded():
    rng = np.random.default_rng(0)
    labels, ids = rng.integers(0, 3, 50), np.arange(50) * 3
    pick = select_coreset(rng.random(50), labels, 10, "uniform", sample_ids=ids, seed=4)
    other_scores = select_coreset(-np.arange(50.0), labels, 10, "uniform", sample_ids=ids, seed=4)
    assert pick.tolist() == other_scores.tolist()
    other_seed = select_coreset(np.zeros(50), labels, 10, "uniform", sample_ids=ids, seed=5)
    assert sorted(pick.tolist()) != sorted(other_seed.tolist())


def test_top_breaks_ties_by_ascending_id():
    ids = np.array([40, 10, 30, 20])
    pos = select_coreset(np.ones(4), np.zeros(4, dtype=int), 2, "top", sample_ids=ids)
    assert ids[pos].tolist() == [10, 20]


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(KeyError, match="class_balanced"):
        select_coreset(np.zeros(3), np.zeros(3, dtype=int), 1, "best")


# --- the workflow's glue: difficulty table and choose() ----------------------------------------


def test_class_error_table_by_hand():
    table = class_error_table(np.array([0, 0, 1, 1, 1, 2]), np.array([1, 0, 1, 1, 0, 0]))
    assert table["error_rate"].tolist() == [0.5, 2 / 3, 0.0]
    assert table["n_predictions"].tolist() == [2, 3, 1]


def test_selection_reads_the_difficulty_table(tmp_path):
    path = tmp_path / "difficulty.parquet"
    io.write_table(class_error_table(np.array([0, 1]), np.array([0, 1])), path,
                   io.CLASS_DIFFICULTY_SCHEMA)
    table = pd.DataFrame({"sample_id": np.arange(20), "label": np.repeat([0, 1], 10),
                          "score": np.zeros(20)})
    selection = {"strategy": "hard_class_priority", "priority_lambda": 1.0}
    pos = choose_rows(table, 6, selection, seed=0, class_error=read_class_error(str(path)))
    assert counts(table["label"], pos, 2) == [2, 4]
    with pytest.raises(ValueError, match="class-difficulty"):
        choose_rows(table, 6, selection, seed=0, class_error=read_class_error(None))
