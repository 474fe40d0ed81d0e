"""The regime table (unseen.regime): fit statistics by hand, rows from predictions
files, the report's sentences and its warning; and the table of a real default run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from unseen import regime
from unseen.io import SCORING_MODELS_SCHEMA


def test_fit_statistics_against_torch_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4)) * 3
    labels = rng.integers(0, 4, size=50)
    stats = regime.fit_statistics(logits, labels)
    expected_loss = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels)
    ).item()
    assert stats["mean_loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert stats["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_fit_statistics_hand_example_and_large_logits():
    # two samples: right with a margin of log(3) (p = 3/4), wrong (p of the label = 1/4)
    logits = np.array([[np.log(3.0), 0.0], [np.log(3.0), 0.0]]) + 1000.0
    stats = regime.fit_statistics(logits, np.array([0, 1]))
    assert stats["accuracy"] == 0.5
    assert stats["mean_loss"] == pytest.approx((-np.log(0.75) - np.log(0.25)) / 2)


def test_fit_statistics_of_nothing_is_nan():
    stats = regime.fit_statistics(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert np.isnan(stats["accuracy"]) and np.isnan(stats["mean_loss"])


@pytest.mark.parametrize(
    "name, kind",
    [("fitting", "fitting"), ("fold0", "fold"), ("fold12", "fold"),
     ("stage1-unseen-el2n-validated-rate0.3", "stage")],
)
def test_model_kind(name, kind):
    assert regime.model_kind(name) == kind


def test_model_kind_refuses_other_names():
    with pytest.raises(ValueError, match="not a scoring model's name: 'retrain'"):
        regime.model_kind("retrain")


def arrays(name, train, scored, **stats):
    return {"model_name": np.array(name), "train_ids": np.arange(train),
            "sample_ids": np.arange(scored), "train_steps": np.int64(7),
            **{k: np.float64(v) for k, v in stats.items()}}


def test_regime_row_reads_the_statistics_and_nan_for_old_files():
    row = regime.regime_row(arrays("fold2", 10, 40, train_accuracy=1.0, train_loss=0.01,
                                   scored_accuracy=0.8, scored_loss=0.6), seed=3)
    assert row == {"seed": 3, "model": "fold2", "kind": "fold", "n_train": 10, "n_scored": 40,
                   "train_accuracy": 1.0, "train_loss": 0.01, "scored_accuracy": 0.8,
                   "scored_loss": 0.6, "train_steps": 7}
    assert list(row) == SCORING_MODELS_SCHEMA.names
    old = regime.regime_row(arrays("fitting", 50, 50), seed=0)
    assert np.isnan(old["train_accuracy"]) and np.isnan(old["scored_loss"])


def table(fitting_accuracies, fold_accuracy=1.0):
    rows = []
    for seed, accuracy in enumerate(fitting_accuracies):
        rows.append(regime.regime_row(arrays("fitting", 50, 50, train_accuracy=accuracy,
                                             train_loss=0.1, scored_accuracy=accuracy,
                                             scored_loss=0.1), seed))
        for k in range(2):
            rows.append(regime.regime_row(arrays(f"fold{k}", 25, 25, train_accuracy=fold_accuracy,
                                                 train_loss=0.0, scored_accuracy=0.7,
                                                 scored_loss=0.9), seed))
    return pd.DataFrame(rows)


def test_regime_summary_means_per_kind_and_fitted_in_every_seed():
    summary = regime.regime_summary(table([1.0, 0.995]))
    assert summary["by_kind"]["fitting"] == {"train_accuracy": pytest.approx(0.9975),
                                             "scored_accuracy": pytest.approx(0.9975), "models": 2}
    assert summary["by_kind"]["fold"]["models"] == 4
    assert summary["by_kind"]["fold"]["scored_accuracy"] == pytest.approx(0.7)
    assert summary["fitted"] is True
    # one seed under the threshold is enough to be outside the regime
    assert regime.regime_summary(table([1.0, 0.95]))["fitted"] is False


def test_regime_sentences_warn_only_when_the_fitting_model_is_not_fitted():
    fitted = regime.regime_sentences(table([1.0, 0.999]))
    assert len(fitted) == 2 and not any("Warning" in line for line in fitted)
    assert fitted[0].startswith("fitting model (2): training accuracy 99.95%")
    learning = regime.regime_sentences(table([0.88, 0.9]))
    assert learning[-1].startswith("Warning: the fitting model reaches 89.00% training accuracy")
    assert "under 99%" in learning[-1]


def test_regime_sentences_without_scoring_models_and_without_fitting_model():
    empty = SCORING_MODELS_SCHEMA.empty_table().to_pandas()
    assert regime.regime_sentences(empty) == [
        "No scoring models in this run (no fitting, fold or stage model was trained)."
    ]
    folds_only = table([1.0]).query("kind == 'fold'")
    lines = regime.regime_sentences(folds_only)
    assert len(lines) == 1 and lines[0].startswith("fold models (2)")


@pytest.mark.workflow
def test_default_run_records_every_scoring_model_and_its_fit(default_run):
    results = default_run / "results"
    models = pd.read_parquet(results / "scoring_models.parquet")
    assert list(models.columns) == SCORING_MODELS_SCHEMA.names
    files = sorted(results.glob("seed*/**/predictions.npz"))
    assert len(models) == len(files) and len(files) > 6
    by_name = models.set_index(["seed", "model"])
    for path in files:
        with np.load(path) as record:
            name = str(record["model_name"])
            seed = int(path.relative_to(results).parts[0].removeprefix("seed"))
            row = by_name.loc[(seed, name)]
            assert row["n_train"] == len(record["train_ids"])
            assert row["n_scored"] == len(record["sample_ids"])
            # scored accuracy: what the scorers read, the last recorded epoch
            last = record["logits"][-1].astype(np.float64)
            assert row["scored_accuracy"] == pytest.approx(
                np.mean(last.argmax(1) == record["labels"]))
            if name == "fitting":
                # its training accuracy comes from a separate inference pass after
                # training; it scores the same samples, so both agree
                assert row["train_accuracy"] == pytest.approx(row["scored_accuracy"], abs=2 / len(last))
    assert set(models["kind"]) == {"fitting", "fold", "stage"}
    assert ((models["train_accuracy"] >= 0) & (models["train_accuracy"] <= 1)).all()
    # the copy in the report, and the regime said in words
    pd.testing.assert_frame_equal(pd.read_parquet(results / "report/scoring_models.parquet"), models)
    page = (results / "report/regime.html").read_text()
    assert "fitting model (1): training accuracy" in page and "fold models (5)" in page
