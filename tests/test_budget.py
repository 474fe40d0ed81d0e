"""Training budgets, the rate-aware auto strategy, dataset subsets and the budget ablation.

Budget rules are checked on real training jobs (digits), reading back the step
counts the trainer itself recorded, not only on the arithmetic.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from unseen import io, jobs, predictions
from unseen.ablation import write_budget_ablation
from unseen.budget import (
    planned_steps,
    retrain_train_settings,
    scoring_budget_label,
    scoring_train_settings,
    steps_per_epoch,
)
from unseen.config import ConfigError, validate_config
from unseen.data import load_dataset, save_cached, stratified_subset
from unseen.folds import assign_folds
from unseen.strategies import auto_strategy_name, select_coreset
from unseen.tables import ABLATION_COLUMNS, budget_ablation_table

TRAIN = {"epochs": 3, "batch_size": 64, "lr": 0.05}
MODEL = {"arch": "mlp", "options": {"width": 16}}


# --------------------------------------------------------------------------- #
# Budget arithmetic
# --------------------------------------------------------------------------- #


def test_steps_per_epoch_drops_the_ragged_batch_and_handles_tiny_sets():
    assert steps_per_epoch(1000, 64) == 15  # 15 full batches, 40 samples dropped
    assert steps_per_epoch(64, 64) == 1
    assert steps_per_epoch(10, 64) == 1  # one batch of the whole set
    with pytest.raises(ValueError, match="0 samples"):
        steps_per_epoch(0, 64)


def test_planned_steps_epochs_or_fixed_iterations():
    assert planned_steps(1000, TRAIN) == 15 * 3
    assert planned_steps(1000, {**TRAIN, "iterations": 7}) == 7


@pytest.mark.parametrize("budget, steps", [(1.0, 45), (0.5, 23), (0.25, 11), (2, 90)])
def test_scoring_budget_is_a_fraction_of_the_fitting_models_steps(budget, steps):
    # fitting model: 1000 samples, 64 per batch, 3 epochs = 45 steps; b * 45 rounded half up
    settings = scoring_train_settings(TRAIN, 1000, budget)
    assert settings["iterations"] == steps
    assert {k: v for k, v in settings.items() if k != "iterations"} == TRAIN


def test_epochs_budgets_keep_the_settings_as_written():
    assert scoring_train_settings(TRAIN, 1000, "epochs") == TRAIN
    assert retrain_train_settings(TRAIN, 1000, "epochs") == TRAIN
    assert retrain_train_settings(TRAIN, 1000, "full_steps")["iterations"] == 45


@pytest.mark.parametrize("bad", [0, -1, "half", True, None])
def test_bad_scoring_budget_is_named(bad):
    with pytest.raises(ValueError, match="scoring budget"):
        scoring_train_settings(TRAIN, 1000, bad)


def test_bad_retrain_budget_names_the_choices():
    with pytest.raises(ValueError, match="full_steps"):
        retrain_train_settings(TRAIN, 1000, "steps")


def test_budget_labels():
    assert scoring_budget_label(1.0) == "1"
    assert scoring_budget_label(0.25) == "0.25"
    assert scoring_budget_label("epochs") == "epochs"


def test_config_budget_defaults_and_errors():
    config = validate_config({})
    assert config["budget"] == {"scoring": 1.0, "retrain": ["full_steps"]}
    # a single retrain name is a one-item list; a number from --config arrives as text
    config = validate_config({"budget": {"scoring": "0.5", "retrain": "epochs"}})
    assert config["budget"] == {"scoring": 0.5, "retrain": ["epochs"]}
    with pytest.raises(ConfigError, match="budget.scoring"):
        validate_config({"budget": {"scoring": "lots"}})
    with pytest.raises(ConfigError, match=r"budget.retrain\[0\].*full_steps"):
        validate_config({"budget": {"retrain": ["forever"]}})


# --------------------------------------------------------------------------- #
# Budgets in real training jobs (digits)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("budget") / "dataset.npz"
    save_cached(load_dataset("digits"), path)
    return path


def _train(cache, tmp_path, name, train_ids, record_ids, budget):
    out = tmp_path / name
    job = jobs.ScoringModelJob(
        str(cache), MODEL, TRAIN, [], 0, "cpu", 1, str(out / "model.pt"),
        str(out / "predictions.npz"), scoring_budget=budget,
    )
    jobs.train_scoring_model(job, train_ids, record_ids, name)
    return io.load_npz(out / "predictions.npz")


def test_a_stage_model_without_a_name_is_refused_before_training(digits_cache, tmp_path):
    """train-scoring-model --coreset derives the stage model's seed from its name: it must be given."""
    proc = subprocess.run(
        [sys.executable, "-m", "unseen", "train-scoring-model", "--coreset", "stage1.parquet",
         "--dataset-cache", str(digits_cache), "--folds-table", "folds.parquet",
         "--model", '{"arch": "mlp"}', "--train", "{}", "--seed", "0",
         "--checkpoint", str(tmp_path / "model.pt"), "--predictions", str(tmp_path / "p.npz")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "--coreset needs --model-name" in proc.stderr, proc.stderr
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("budget", [1.0, 0.5, "epochs"])
def test_fold_model_gets_its_budget_of_the_fitting_models_steps(digits_cache, tmp_path, budget):
    n = 1347
    everyone = np.arange(n)
    fold = everyone[assign_folds(np.zeros(n, dtype=int), 5, 0) == 0]  # 270 samples
    fitting = _train(digits_cache, tmp_path, "fitting", everyone, everyone, None)
    fold_model = _train(digits_cache, tmp_path, "fold0", fold, np.setdiff1d(everyone, fold), budget)
    full_steps = int(fitting["train_steps"])
    assert full_steps == (n // 64) * 3 == planned_steps(n, TRAIN)
    assert str(fitting["scoring_budget"]) == "1"
    if budget == "epochs":
        assert int(fold_model["train_steps"]) == (len(fold) // 64) * 3
    else:
        assert int(fold_model["train_steps"]) == math.floor(budget * full_steps + 0.5)
    assert str(fold_model["scoring_budget"]) == scoring_budget_label(budget)
    assert int(fold_model["train_samples_seen"]) == int(fold_model["train_steps"]) * 64
    cost = predictions.scoring_cost([str(tmp_path / "fold0/predictions.npz")])
    assert cost["scoring_steps"] == int(fold_model["train_steps"])
    assert cost["scoring_budget"] == scoring_budget_label(budget)


@pytest.mark.parametrize("budget", ["full_steps", "epochs"])
def test_retrain_budget_on_a_small_coreset(digits_cache, tmp_path, budget):
    ids = np.arange(0, 1347, 10)  # 135 samples, 2 full batches per epoch
    coreset = tmp_path / "coreset.parquet"
    io.write_table(
        pd.DataFrame({"sample_id": ids, "label": np.zeros(len(ids), int),
                      "stage": np.ones(len(ids), int), "score": np.zeros(len(ids))}),
        coreset, io.CORESET_SCHEMA,
    )
    jobs.retrain(
        str(digits_cache), str(coreset), MODEL, TRAIN, 0, "cpu", 1,
        {"method": "random", "scorer": "none", "strategy": "none", "pruning_rate": 0.9},
        str(tmp_path / "m.json"), str(tmp_path / "m.parquet"), [], budget,
    )
    metrics = json.loads((tmp_path / "m.json").read_text())
    expected = planned_steps(1347, TRAIN) if budget == "full_steps" else 2 * 3
    assert metrics["train_steps"] == expected
    assert metrics["retrain_budget"] == budget
    assert metrics["scoring_budget"] == "none" and metrics["scoring_steps"] == 0
    row = io.read_table(tmp_path / "m.parquet").iloc[0]
    assert row["train_steps"] == expected and row["retrain_budget"] == budget


# --------------------------------------------------------------------------- #
# The rate-aware auto strategy
# --------------------------------------------------------------------------- #


def test_auto_switches_from_top_to_ccs_at_the_configured_rate():
    assert auto_strategy_name(0.3, 0.8) == "top"
    assert auto_strategy_name(0.79, 0.8) == "top"
    assert auto_strategy_name(0.8, 0.8) == "ccs"
    assert auto_strategy_name(0.9, 0.8) == "ccs"
    assert auto_strategy_name(0.9, 1.0) == "top"


@pytest.mark.parametrize("n, same_as", [(700, "top"), (100, "ccs")])
def test_auto_is_top_or_ccs_by_the_rate_it_prunes(n, same_as):
    rng = np.random.default_rng(0)
    scores, labels = rng.random(1000), rng.integers(0, 10, 1000)
    auto = select_coreset(scores, labels, n, "auto", seed=3)
    assert np.array_equal(auto, select_coreset(scores, labels, n, same_as, seed=3))
    # An explicit rate wins over the one inferred from n: the later UNSEEN stages.
    explicit = select_coreset(scores, labels, n, "auto", seed=3, pruning_rate=0.95)
    assert np.array_equal(explicit, select_coreset(scores, labels, n, "ccs", seed=3))


def test_auto_selection_job_uses_the_coreset_rate(tmp_path):
    rng = np.random.default_rng(1)
    n = 500
    scores = tmp_path / "scores.parquet"
    io.write_table(
        pd.DataFrame({"sample_id": np.arange(n), "label": rng.integers(0, 5, n),
                      "model": "fitting", "score": rng.random(n)}),
        scores, io.SHARD_SCHEMA,
    )
    picked = {}
    for strategy in ("auto", "top", "ccs"):
        for rate in (0.5, 0.9):
            out = tmp_path / f"{strategy}{rate}.parquet"
            jobs.select_by_scores(str(scores), rate, {"strategy": strategy}, str(out),
                                  str(tmp_path / "ids.txt"), seed=0)
            picked[strategy, rate] = set(io.read_table(out)["sample_id"])
    assert picked["auto", 0.5] == picked["top", 0.5] != picked["ccs", 0.5]
    assert picked["auto", 0.9] == picked["ccs", 0.9] != picked["top", 0.9]


# --------------------------------------------------------------------------- #
# dataset.subset
# --------------------------------------------------------------------------- #


def test_stratified_subset_keeps_class_shares_and_is_seeded():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    keep = stratified_subset(labels, 100, seed=0)
    assert len(keep) == 100 and np.all(np.diff(keep) > 0)
    assert np.bincount(labels[keep]).tolist() == [10, 20, 30, 40]
    assert np.array_equal(keep, stratified_subset(labels, 100, seed=0))
    assert not np.array_equal(keep, stratified_subset(labels, 100, seed=1))
    assert len(stratified_subset(labels, 0.25, seed=0)) == 250
    with pytest.raises(ValueError, match="dataset.subset"):
        stratified_subset(labels, 5000, seed=0)


def test_subset_in_the_dataset_spec_changes_the_cache_and_keeps_the_test_split():
    full = load_dataset("digits")
    small = load_dataset({"name": "digits", "subset": 500, "subset_seed": 0})
    assert len(small.train_y) == 500 and len(small.test_y) == len(full.test_y)
    assert small.fingerprint != full.fingerprint
    keep = stratified_subset(full.train_y, 500, 0)
    assert np.array_equal(small.train_x, full.train_x[keep])
    # sample ids are row indices of the subset, 0..n-1
    assert small.sample_ids.tolist() == list(range(500))


# --------------------------------------------------------------------------- #
# Budget ablation
# --------------------------------------------------------------------------- #


def _row(method, strategy, rate, seed, acc, budget, scoring, retrain="full_steps", seen=1000):
    return {"method": method, "scorer": "el2n" if method != "random" else "none",
            "strategy": strategy, "pruning_rate": rate, "seed": seed, "test_accuracy": acc,
            "retrain_budget": retrain, "scoring_budget": budget,
            "scoring_sample_epochs": scoring, "train_samples_seen": seen}


def test_budget_ablation_expresses_compute_in_full_trainings(tmp_path):
    rows = [_row("full", "none", 0.0, s, 0.9, "none", 0, seen=1000 + s) for s in (0, 1)]
    for s in (0, 1):
        rows += [
            _row("random", "none", 0.5, s, 0.80, "none", 0),
            _row("unseen_single", "auto", 0.5, s, 0.84 + s / 100, "1", 5 * (1000 + s)),
            _row("unseen_single", "auto", 0.5, s, 0.82, "0.25", (1000 + s) * 5 // 4),
            _row("unseen_single", "auto", 0.5, s, 0.70, "1", 5 * (1000 + s),
                 retrain="epochs", seen=500),
        ]
    table = budget_ablation_table(pd.DataFrame(rows))
    assert list(table.columns) == list(ABLATION_COLUMNS)
    one = table[(table.scoring_budget == "1") & (table.retrain_budget == "full_steps")].iloc[0]
    assert one["scoring_compute_mean"] == pytest.approx(5.0)
    assert one["test_accuracy_mean"] == pytest.approx(0.845)
    assert one["test_accuracy_std"] == pytest.approx(0.01 / math.sqrt(2))
    quarter = table[table.scoring_budget == "0.25"].iloc[0]
    assert quarter["scoring_compute_mean"] == pytest.approx(1.25, abs=1e-3)
    epochs = table[table.retrain_budget == "epochs"].iloc[0]
    assert epochs["retrain_compute_mean"] == pytest.approx(np.mean([500 / 1000, 500 / 1001]))
    assert table.loc[table.method == "random", "scoring_compute_mean"].tolist() == [0.0]

    # seed 1 left out: the means are seed 0's alone
    seed0 = budget_ablation_table(pd.DataFrame(rows), seeds=[0])
    one0 = seed0[(seed0.scoring_budget == "1") & (seed0.retrain_budget == "full_steps")].iloc[0]
    assert one0["test_accuracy_mean"] == pytest.approx(0.84)
    assert math.isnan(one0["test_accuracy_std"])

    paths = write_budget_ablation(pd.DataFrame(rows), tmp_path)
    assert pd.read_parquet(paths["table"]).equals(table)
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_ablation_needs_one_full_model_per_seed():
    rows = [_row("unseen_single", "auto", 0.5, 0, 0.8, "1", 5000)]
    with pytest.raises(ValueError, match="one full-data model per seed"):
        budget_ablation_table(pd.DataFrame(rows))
    full = _row("full", "none", 0.0, 0, 0.9, "none", 0)
    with pytest.raises(ValueError, match="passed twice"):
        budget_ablation_table(pd.DataFrame([full, rows[0], rows[0]]))
