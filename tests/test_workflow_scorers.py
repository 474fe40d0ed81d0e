"""Every scorer and every selection strategy end to end in real Snakemake runs.

Two reduced runs on the default data (digits): one with every scorer (UNSEEN
and fitting, strategy top, float16 logit records) and one with the other
strategies together in one strategy list (two UNSEEN stages, statistics
records, retrain and summary): each strategy gets its own coresets,
``<method>-<scorer>-<strategy>``, from the same fold and fitting models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_snakemake
from unseen.scorers import SCORERS
from unseen.selection import coreset_size, select_top, stage_sizes
from unseen.strategies import hard_class_weights

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parent.parent
RATE = 0.5
K = 2

SMALL = {
    "dataset": {"name": "digits"},
    "seeds": [0],
    "folds": {"k": K, "mode": "paper"},
    "scoring_model": {"arch": "mlp", "options": {"width": 32},
                      "train": {"epochs": 6, "batch_size": 64, "lr": 0.05}},
    "final_model": {"arch": "mlp", "options": {"width": 32},
                    "train": {"epochs": 4, "batch_size": 64, "lr": 0.05}},
    "record_epochs": [2, 3, 4, 5],
    "scorer_options": {"tdds": {"window": 3}, "dyn_unc": {"window": 3}},
    "pruning_rates": [RATE],
    "selection": {"strategy": ["top"]},
    "device": "cpu",
}


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(workdir: Path, *targets: str) -> None:
    run_snakemake(workdir, "--cores", "2", *targets)


def read(workdir: Path, relative: str) -> pd.DataFrame:
    return pd.read_parquet(workdir / "results" / "seed0" / relative)


def n_train(workdir: Path) -> int:
    return len(read(workdir, "split/folds.parquet"))


def assert_exact_coreset(table: pd.DataFrame, n: int) -> None:
    assert len(table) == n
    assert not table["sample_id"].duplicated().any()


# --- every scorer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("all_scorers")
    config = {**SMALL, "scorers": sorted(SCORERS), "methods": ["unseen", "fitting"],
              "stages": [1.0], "record_format": "logits"}
    write_config(workdir, config)
    targets = [f"results/seed0/coresets/{method}-{scorer}-top/rate{RATE:g}/coreset.parquet"
               for method in ("unseen", "fitting") for scorer in sorted(SCORERS)]
    snakemake(workdir, *targets)
    return workdir


@pytest.mark.parametrize("scorer", sorted(SCORERS))
def test_unseen_scores_come_from_every_model_that_never_saw_the_sample(scorer_run, scorer):
    oof = read(scorer_run, f"scores/oof/{scorer}.parquet")
    folds = read(scorer_run, "split/folds.parquet")
    assert oof["sample_id"].tolist() == sorted(folds["sample_id"])
    assert (oof["n_scores"] == K - 1).all()
    assert np.isfinite(oof["score"]).all()
    for fold in range(K):
        shard = read(scorer_run, f"scores/oof/fold{fold}/{scorer}.parquet")
        # paper mode: fold model k scores exactly the samples outside fold k
        outside = folds.loc[folds["fold"] != fold, "sample_id"]
        assert sorted(shard["sample_id"]) == sorted(outside)


@pytest.mark.parametrize("method", ["unseen", "fitting"])
@pytest.mark.parametrize("scorer", sorted(SCORERS))
def test_every_scorer_gives_an_exact_top_coreset(scorer_run, scorer, method):
    scores = read(scorer_run, f"scores/{'oof' if method == 'unseen' else 'fitting'}/{scorer}.parquet")
    coreset = read(scorer_run, f"coresets/{method}-{scorer}-top/rate{RATE:g}/coreset.parquet")
    n = coreset_size(n_train(scorer_run), RATE)
    assert_exact_coreset(coreset, n)
    expected = scores["sample_id"].to_numpy()[
        select_top(scores["sample_id"].to_numpy(), scores["score"].to_numpy(), n)
    ]
    assert sorted(coreset["sample_id"]) == sorted(expected)


def test_scorers_disagree_with_each_other(scorer_run):
    def ids(scorer):
        path = f"coresets/unseen-{scorer}-top/rate{RATE:g}/coreset.parquet"
        return set(read(scorer_run, path)["sample_id"])

    # the dynamics and gradient scorers are not relabelled copies of one another
    new = ["aum", "dyn_unc", "el2n", "el2n_avg", "forgetting", "grand", "grand_last", "tdds"]
    assert len({frozenset(ids(s)) for s in new}) == len(new)


def test_hard_samples_by_loss_are_kept_first(scorer_run):
    # direction end to end: the kept samples have higher out-of-fold loss
    oof = read(scorer_run, "scores/oof/loss.parquet")
    kept = set(read(scorer_run, f"coresets/unseen-loss-top/rate{RATE:g}/coreset.parquet")["sample_id"])
    inside = oof["sample_id"].isin(kept)
    assert oof.loc[inside, "score"].min() >= oof.loc[~inside, "score"].max()


# --- every strategy --------------------------------------------------------------------------


STRATEGIES = ["hard_class_priority", "class_balanced", "ccs"]


@pytest.fixture(scope="module")
def strategy_run(tmp_path_factory) -> Path:
    """One run with every strategy in the list, through retrain to the summary."""
    workdir = tmp_path_factory.mktemp("strategies")
    config = {**SMALL, "scorers": ["el2n_avg"], "methods": ["unseen", "fitting"],
              "stages": [0.5, 1.0], "record_format": "stats",
              "selection": {"strategy": STRATEGIES, "ccs_beta": 0.1, "ccs_bins": 10,
                            "priority_lambda": 2.0}}
    write_config(workdir, config)
    snakemake(workdir, "results/summary.parquet")
    return workdir


def test_every_strategy_goes_through_retrain_to_the_summary(strategy_run):
    summary = pd.read_parquet(strategy_run / "results" / "summary.parquet")
    got = sorted(zip(summary["method"], summary["scorer"], summary["strategy"]))
    assert got == sorted((m, "el2n_avg", s) for m in ("fitting", "unseen") for s in STRATEGIES)
    assert (summary["coreset_size"] == coreset_size(n_train(strategy_run), RATE)).all()
    assert summary["test_accuracy"].between(0, 1).all()
    # each retrain trained on its own strategy's coreset
    for row in summary.itertuples():
        coreset = read(strategy_run, f"coresets/{row.method}-el2n_avg-{row.strategy}/rate{RATE:g}/coreset.parquet")
        assert len(coreset) == row.coreset_size
    # one set of scoring models serves every strategy
    assert sorted(p.name for p in (strategy_run / "results/seed0/folds").iterdir()) == ["fold0", "fold1"]
    assert sorted(p.name for p in (strategy_run / "results/seed0/coresets").iterdir()) == sorted(
        f"{m}-el2n_avg-{s}" for m in ("fitting", "unseen") for s in STRATEGIES
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gives_exact_coresets_at_every_stage(strategy_run, strategy):
    workdir = strategy_run
    n = coreset_size(n_train(workdir), RATE)
    sizes = stage_sizes(n, [0.5, 1.0])
    for method in ("unseen", "fitting"):
        coreset = read(workdir, f"coresets/{method}-el2n_avg-{strategy}/rate{RATE:g}/coreset.parquet")
        assert_exact_coreset(coreset, n)
    folder = f"coresets/unseen-el2n_avg-{strategy}/rate{RATE:g}"
    stages = read(workdir, f"{folder}/coreset.parquet")
    assert (stages["stage"] == 1).sum() == sizes[0]
    stage1 = read(workdir, f"{folder}/stage1.parquet")
    assert_exact_coreset(stage1, sizes[0])
    assert set(stage1["sample_id"]) == set(stages.loc[stages["stage"] == 1, "sample_id"])
    # the strategy's own stage model trained on its own stage 1
    with np.load(workdir / "results/seed0" / folder / "stage1/predictions.npz") as npz:
        assert set(npz["train_ids"]) == set(stage1["sample_id"])


def test_strategies_select_different_coresets(strategy_run):
    for method in ("unseen", "fitting"):
        ids = {
            s: frozenset(read(strategy_run, f"coresets/{method}-el2n_avg-{s}/rate{RATE:g}/coreset.parquet")["sample_id"])
            for s in STRATEGIES
        }
        assert len(set(ids.values())) == len(STRATEGIES), method


def test_the_record_holds_statistics_not_logits(strategy_run):
    with np.load(strategy_run / "results/seed0/folds/fold0/predictions.npz") as npz:
        assert "logits" not in npz.files
        assert npz["stat_target_logit"].shape[0] == 5  # epochs 2..5 and the last (6)


def _class_counts(workdir: Path, selection: str) -> np.ndarray:
    coreset = read(workdir, f"coresets/{selection}/rate{RATE:g}/coreset.parquet")
    return np.bincount(coreset["label"], minlength=10)


@pytest.mark.parametrize("method", ["unseen", "fitting"])
def test_class_balanced_keeps_every_class_in_proportion(strategy_run, method):
    workdir = strategy_run
    population = np.bincount(read(workdir, "split/folds.parquet")["label"], minlength=10)
    got = _class_counts(workdir, f"{method}-el2n_avg-class_balanced")
    share = got.sum() * population / population.sum()
    assert np.all(np.abs(got - share) <= 1.5), (got, share)


@pytest.mark.parametrize("method", ["unseen", "fitting"])
def test_hard_class_priority_follows_out_of_fold_error(strategy_run, method):
    workdir = strategy_run
    population = np.bincount(read(workdir, "split/folds.parquet")["label"], minlength=10)
    difficulty = pd.read_parquet(workdir / "results/seed0/class_difficulty.parquet")
    assert (difficulty["n_predictions"] == population * (K - 1)).all()
    weights = hard_class_weights(population, difficulty["error_rate"].to_numpy(), 2.0)
    got = _class_counts(workdir, f"{method}-el2n_avg-hard_class_priority")
    wish = np.minimum(got.sum() * weights / weights.sum(), population)
    assert np.all(np.abs(got - wish) <= 1.5), (got, wish)
    assert not np.allclose(wish, got.sum() * population / population.sum(), atol=2)


def test_ccs_leaves_out_the_hardest_unseen_samples(strategy_run):
    workdir = strategy_run
    oof = read(workdir, "scores/oof/el2n_avg.parquet")
    stage1 = set(read(workdir, f"coresets/unseen-el2n_avg-ccs/rate{RATE:g}/stage1.parquet")["sample_id"])
    n_drop = int(0.1 * len(oof))
    hardest = oof["sample_id"].to_numpy()[
        select_top(oof["sample_id"].to_numpy(), oof["score"].to_numpy(), n_drop)
    ]
    assert not stage1 & set(hardest)
    # and it covers the easy end that top selection never reaches
    easiest = oof.nsmallest(50, "score")["sample_id"]
    assert stage1 & set(easiest)
