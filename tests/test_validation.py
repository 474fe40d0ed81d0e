"""The `validated` strategy: the held-out split, the choice, and the workflow around them.

Library tests train real (small) models on digits; the workflow test runs a
real reduced Snakemake run and checks that each `validated` coreset is the
coreset of the strategy its choice file names, and that the choice's training
is counted in the coreset's scoring cost.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import planned_jobs, run_snakemake
from test_workflow_scorers import SMALL, write_config
from unseen.data import load_dataset
from unseen.selection import coreset_size
from unseen.validation import check_candidates, choose_strategy, holdout_split

MLP = {"arch": "mlp", "options": {"width": 32}}
QUICK = {"iterations": 60, "batch_size": 64, "lr": 0.05}


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
       fraction=st.floats(0.01, 0.49), seed=st.integers(0, 5))
def test_holdout_split_is_stratified_disjoint_and_complete(sizes, fraction, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    pool, held = holdout_split(labels, fraction, seed)
    assert np.intersect1d(pool, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([pool, held])), np.arange(len(labels)))
    for c, n_c in enumerate(sizes):
        taken = int((labels[held] == c).sum())
        if n_c == 1:
            assert taken == 0
        else:
            assert 1 <= taken <= n_c - 1
            assert abs(taken - fraction * n_c) <= 0.5 + 1e-9 or taken in (1, n_c - 1)
        assert (labels[pool] == c).any()
    again = holdout_split(labels, fraction, seed)
    assert np.array_equal(again[0], pool) and np.array_equal(again[1], held)


def test_holdout_split_rejects_a_fraction_outside_0_1():
    with pytest.raises(ValueError, match="validation fraction"):
        holdout_split(np.zeros(10, dtype=int), 1.0, 0)


def test_candidates_must_be_known_and_distinct():
    check_candidates(["top", "ccs"])
    for bad in ([], ["top", "top"], ["hard_class_priority"], ["validated"]):
        with pytest.raises(ValueError):
            check_candidates(bad)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digit_scores(digits):
    # a stand-in score with structure: a fixed random score per sample
    rng = np.random.default_rng(0)
    return pd.DataFrame({"sample_id": np.arange(len(digits.train_y)),
                         "label": digits.train_y, "score": rng.random(len(digits.train_y))})


def _choose(data, scores, **selection):
    return choose_strategy(data, scores, 0.8, {"ccs_bins": 10, **selection}, MLP, QUICK,
                           "full_steps", seed=3, device_name="cpu", threads=1)


def test_the_choice_is_the_most_accurate_candidate(digits, digit_scores):
    choice = _choose(digits, digit_scores, validation_candidates=["top", "ccs", "class_balanced"])
    accuracy = choice["validation_accuracy"]
    assert set(accuracy) == {"top", "ccs", "class_balanced"}
    assert accuracy[choice["strategy"]] == max(accuracy.values())
    assert choice["pool_size"] + choice["held_out_size"] == len(digits.train_y)
    assert choice["coreset_size"] == coreset_size(choice["pool_size"], 0.8)
    # each candidate trained as a full_steps retrain of the pool: QUICK's 60 steps each
    assert choice["train_steps"] == 3 * 60
    assert choice["train_samples_seen"] == 3 * 60 * 64


def test_scores_that_hurt_make_the_choice_fall_back_to_uniform(digits):
    # scores that put three classes first: top keeps little else at rate 0.8
    labels = digits.train_y
    harmful = pd.DataFrame({"sample_id": np.arange(len(labels)), "label": labels,
                            "score": (labels < 3).astype(float)})
    choice = _choose(digits, harmful, validation_candidates=["top", "uniform"])
    accuracy = choice["validation_accuracy"]
    assert choice["strategy"] == "uniform", accuracy
    assert accuracy["uniform"] > accuracy["top"] + 0.2


def test_the_choice_is_deterministic_and_never_reads_the_test_set(digits, digit_scores):
    first = _choose(digits, digit_scores)
    blind = dataclasses.replace(digits, test_x=np.zeros_like(digits.test_x),
                                test_y=np.zeros_like(digits.test_y))
    second = _choose(blind, digit_scores)
    for key in ("strategy", "validation_accuracy", "pool_size", "held_out_size", "coreset_size"):
        assert first[key] == second[key], key


def test_a_score_table_missing_samples_is_refused(digits, digit_scores):
    with pytest.raises(ValueError, match="every training sample"):
        _choose(digits, digit_scores.iloc[5:])


# --- the workflow --------------------------------------------------------------------------------


@pytest.mark.workflow
def test_validated_coresets_are_the_chosen_strategys_and_pay_for_the_choice(tmp_path):
    config = {**SMALL, "scorers": ["el2n"], "methods": ["fitting", "unseen_single"],
              "pruning_rates": [0.3],
              "selection": {"strategy": ["validated", "top", "ccs"], "ccs_bins": 10}}
    write_config(tmp_path, config)
    run_snakemake(tmp_path, "--cores", "2", "results/summary.parquet")
    seed_dir = tmp_path / "results/seed0"
    summary = pd.read_parquet(tmp_path / "results/summary.parquet").set_index(
        ["method", "strategy", "pruning_rate"])
    for method, kind in (("fitting", "fitting"), ("unseen_single", "oof")):
        for rate in (f"{r:g}" for r in config["pruning_rates"]):
            choice = json.loads((seed_dir / f"strategy_choice/{kind}-el2n/rate{rate}.json").read_text())
            accuracy = choice["validation_accuracy"]
            assert choice["strategy"] == max(["top", "ccs"], key=lambda s: (accuracy[s], s == "top"))
            chosen = (seed_dir / f"coresets/{method}-el2n-{choice['strategy']}/rate{rate}/coreset.txt")
            validated = seed_dir / f"coresets/{method}-el2n-validated/rate{rate}/coreset.txt"
            assert validated.read_text() == chosen.read_text()
            extra = (summary.loc[(method, "validated", float(rate)), "scoring_sample_epochs"]
                     - summary.loc[(method, choice["strategy"], float(rate)), "scoring_sample_epochs"])
            assert extra == choice["train_samples_seen"] > 0
            # one retrain seed for every coreset of a run: the same coreset, the same accuracy
            assert (summary.loc[(method, "validated", float(rate)), "test_accuracy"]
                    == summary.loc[(method, choice["strategy"], float(rate)), "test_accuracy"])
    # the Python API makes the same choice from the same scores
    from unseen import api

    data = api.load_dataset("digits")
    oof = pd.read_parquet(seed_dir / "scores/oof/el2n.parquet")
    again = api.choose_strategy(data.train_x, data.train_y, oof, 0.3, model=SMALL["final_model"],
                                train=SMALL["final_model"]["train"], device="cpu", threads=1,
                                ccs_bins=10)
    workflow = json.loads((seed_dir / "strategy_choice/oof-el2n/rate0.3.json").read_text())
    assert again["validation_accuracy"] == workflow["validation_accuracy"]
    assert again["strategy"] == workflow["strategy"]
    coreset = api.select(oof, 0.3, "validated", validated_strategy=again["strategy"], ccs_bins=10)
    assert sorted(coreset["sample_id"]) == sorted(
        np.loadtxt(seed_dir / "coresets/unseen_single-el2n-validated/rate0.3/coreset.txt", dtype=int))
    # a strategy added to the list later reuses the choices: no candidate trains again
    write_config(tmp_path, {**config, "selection": {**config["selection"],
                                                    "strategy": ["validated", "top", "ccs", "class_balanced"]}})
    planned = planned_jobs(tmp_path)
    assert "choose_strategy" not in planned, planned
    assert planned.get("select_fitting_coreset") == len(config["pruning_rates"]), planned
