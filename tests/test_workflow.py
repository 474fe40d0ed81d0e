"""Real workflow runs on the digits data: leakage, sizes, nesting, resume with determinism, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import (
    DEFAULT_CONFIG, api_scoring_kwargs, kill_record, make_workdir, planned_jobs, run_snakemake,
)
from unseen import api
from unseen.folds import assign_folds
from unseen.io import load_npz, read_id_list
from unseen.seeds import derive_seed
from unseen.selection import coreset_size, stage_sizes

pytestmark = pytest.mark.workflow

K = DEFAULT_CONFIG["folds"]["k"]
SCORERS = DEFAULT_CONFIG["scorers"]
RATES = [f"{r:g}" for r in DEFAULT_CONFIG["pruning_rates"]]
N_STAGES = len(DEFAULT_CONFIG["stages"])
STRATEGY = DEFAULT_CONFIG["selection"]["strategy"]  # the default recipe's strategy (validated)
SCORED_METHODS = ("fitting", "unseen_single", "unseen")


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def fold_train_ids(run: Path, fold: int) -> np.ndarray:
    """The ids the fold model was trained on, as saved by the training job itself."""
    ckpt = torch.load(run / f"results/seed0/folds/fold{fold}/model.pt", weights_only=True)
    return np.asarray(ckpt["train_ids"])


def test_no_score_comes_from_a_model_that_saw_the_sample(default_run):
    folds = read(default_run / "results/seed0/split/folds.parquet")
    for k in range(K):
        trained_on = fold_train_ids(default_run, k)
        # paper mode: fold model k trains on fold k exactly.
        assert set(trained_on) == set(folds.loc[folds.fold == k, "sample_id"])
        for scorer in SCORERS:
            shard = read(default_run / f"results/seed0/scores/oof/fold{k}/{scorer}.parquet")
            assert (shard["model"] == f"fold{k}").all()
            assert not set(shard["sample_id"]) & set(trained_on)
            assert set(shard["sample_id"]) == set(folds.loc[folds.fold != k, "sample_id"])


def test_every_sample_has_k_minus_1_out_of_fold_scores(default_run):
    folds = read(default_run / "results/seed0/split/folds.parquet")
    for scorer in SCORERS:
        agg = read(default_run / f"results/seed0/scores/oof/{scorer}.parquet")
        assert agg["sample_id"].tolist() == sorted(folds["sample_id"])
        assert (agg["n_scores"] == K - 1).all()
        shards = pd.concat(
            read(default_run / f"results/seed0/scores/oof/fold{k}/{scorer}.parquet") for k in range(K)
        )
        expected = shards.groupby("sample_id")["score"].mean().sort_index()
        assert np.allclose(agg.set_index("sample_id")["score"], expected)
        assert np.isfinite(agg["score"]).all()


def test_coreset_sizes_exact_and_stages_nested(default_run):
    n_total = len(read(default_run / "results/seed0/split/folds.parquet"))
    base = default_run / "results/seed0/coresets"
    for rate in RATES:
        target = coreset_size(n_total, float(rate))
        # coresets are named <method>-<scorer>-<strategy>
        selections = ["random"] + [f"{m}-{s}-{STRATEGY}" for m in SCORED_METHODS for s in SCORERS]
        assert sorted(p.name for p in base.iterdir()) == sorted(selections)
        for selection in selections:
            coreset = read(base / f"{selection}/rate{rate}/coreset.parquet")
            assert len(coreset) == target, selection
            assert coreset["sample_id"].is_unique
            ids = read_id_list(base / f"{selection}/rate{rate}/coreset.txt")
            assert ids.tolist() == sorted(coreset["sample_id"])
        for scorer in SCORERS:
            sizes = stage_sizes(target, DEFAULT_CONFIG["stages"])
            previous: set[int] = set()
            for t in range(1, N_STAGES + 1):
                stage = read(base / f"unseen-{scorer}-{STRATEGY}/rate{rate}/stage{t}.parquet")
                assert len(stage) == sizes[t - 1]
                assert previous <= set(stage["sample_id"])
                assert set(stage.loc[stage.stage < t, "sample_id"]) == previous
                previous = set(stage["sample_id"])
                if t < N_STAGES:
                    # The stage model scores exactly the samples it did not train on.
                    pred = load_npz(base / f"unseen-{scorer}-{STRATEGY}/rate{rate}/stage{t}/predictions.npz")
                    assert set(pred["train_ids"]) == previous
                    assert not set(pred["sample_ids"]) & previous
                    assert len(pred["sample_ids"]) == n_total - len(previous)
            final = read(base / f"unseen-{scorer}-{STRATEGY}/rate{rate}/coreset.parquet")
            assert set(final["sample_id"]) == previous


def test_metrics_and_summary(default_run):
    summary = read(default_run / "results/summary.parquet")
    n_selections = 1 + len(SCORED_METHODS) * len(SCORERS)
    assert len(summary) == n_selections * len(RATES) + 1
    full = summary[summary.method == "full"].iloc[0]
    assert full.coreset_size == full.n_train_total == 1347
    # strategy: the selection's strategy, "none" where nothing was selected by score
    assert set(summary.loc[summary.method.isin(["full", "random"]), "strategy"]) == {"none"}
    assert set(summary.loc[summary.method.isin(SCORED_METHODS), "strategy"]) == {STRATEGY}
    assert set(summary.loc[summary.method.isin(["full", "random"]), "scorer"]) == {"none"}
    expected_rows = {("full", "none", "none", 0.0)} | {
        (m, s, STRATEGY, float(r)) for m in SCORED_METHODS for s in SCORERS for r in RATES
    } | {("random", "none", "none", float(r)) for r in RATES}
    got_rows = set(summary[["method", "scorer", "strategy", "pruning_rate"]].itertuples(index=False, name=None))
    assert got_rows == expected_rows
    # A model trained on digits is far better than chance (10 %).
    assert (summary["test_accuracy"] > 0.5).all()
    assert all(len(pcs) == 10 for pcs in summary["per_class_accuracy"])
    metrics = json.loads(
        (default_run / f"results/seed0/retrain/full_steps/unseen-el2n-{STRATEGY}/rate0.7/metrics.json").read_text())
    assert (metrics["method"], metrics["scorer"], metrics["strategy"]) == ("unseen", "el2n", STRATEGY)
    assert metrics["coreset_size"] == coreset_size(1347, 0.7)
    # full_steps: the retrain takes as many SGD steps as the full-data model,
    # although its coreset is 30 % of the data (every batch is full).
    full = json.loads((default_run / "results/seed0/retrain/full/metrics.json").read_text())
    batch = DEFAULT_CONFIG["final_model"]["train"]["batch_size"]
    epochs = DEFAULT_CONFIG["final_model"]["train"]["epochs"]
    assert full["train_steps"] == 1347 // batch * epochs and full["epochs"] == epochs
    assert metrics["retrain_budget"] == "full_steps"
    assert metrics["train_steps"] == full["train_steps"]
    assert metrics["train_samples_seen"] == metrics["train_steps"] * batch
    assert metrics["epochs"] > epochs
    # scoring: K fold models plus 2 stage models, each with the fitting model's steps,
    # plus (validated) the candidates' training of the strategy choice
    assert metrics["scoring_budget"] == "1"
    choice_steps = 0
    if STRATEGY == "validated":
        choice = json.loads((default_run / "results/seed0/strategy_choice/oof-el2n/rate0.7.json").read_text())
        pool_steps = choice["pool_size"] // batch * epochs
        assert choice["train_steps"] == len(choice["candidates"]) * pool_steps
        choice_steps = choice["train_steps"]
    assert metrics["scoring_steps"] == (K + N_STAGES - 1) * full["train_steps"] + choice_steps
    assert metrics["scoring_sample_epochs"] > 0 and metrics["scoring_wall_seconds"] > 0
    assert metrics["train_samples_per_s"] > 0 and metrics["wall_seconds"] > 0
    assert min(metrics["per_class_accuracy"]) == pytest.approx(metrics["worst_class_accuracy"])


def test_one_log_per_job(default_run):
    logs = list((default_run / "logs").rglob("*.log"))
    assert len(logs) >= K + K * len(SCORERS) + len(SCORERS)
    assert all(p.stat().st_size > 0 for p in logs)
    assert "samples/s" in (default_run / "logs/seed0/train_fold_model/fold0.log").read_text()
    # log names follow the coreset names
    for rate in RATES:
        for scorer in SCORERS:
            assert (default_run / f"logs/seed0/finalize/unseen-{scorer}-{STRATEGY}_rate{rate}.log").stat().st_size
            assert (default_run / f"logs/seed0/select_fitting_coreset/{scorer}-{STRATEGY}_rate{rate}.log").exists()
            for t in range(1, N_STAGES):
                log = f"logs/seed0/train_stage_model/unseen-{scorer}-{STRATEGY}_rate{rate}_stage{t}.log"
                assert "samples/s" in (default_run / log).read_text()
    assert (default_run / "logs/report.log").exists()


def test_changing_scorer_or_rate_retrains_no_fold_model(default_run):
    assert planned_jobs(default_run) == {}
    plan = planned_jobs(default_run, "--config", "scorers=[random]")
    assert plan.get("score_fold") == K and plan.get("aggregate_scores") == 1
    assert "train_fold_model" not in plan and "train_fitting_model" not in plan
    plan = planned_jobs(default_run, "--config", "pruning_rates=[0.3, 0.5]")
    assert "train_fold_model" not in plan and "score_fold" not in plan
    assert plan.get("retrain", 0) > 0
    plan = planned_jobs(default_run, "--config", "stages=[1.0]")
    assert "train_fold_model" not in plan and "aggregate_scores" not in plan
    # A second strategy adds its own coresets and retrains, on the same scores.
    plan = planned_jobs(default_run, "--config", f'selection={{"strategy": ["{STRATEGY}", "ccs"]}}')
    assert not {"train_fold_model", "score_fold", "train_fitting_model", "score_fitting"} & set(plan)
    assert plan.get("select_fitting_coreset") == len(SCORERS) * len(RATES)
    assert plan.get("finalize_unseen_coreset") == 2 * len(SCORERS) * len(RATES)
    assert plan.get("retrain") == 3 * len(SCORERS) * len(RATES)
    # A second retrain budget retrains every coreset once more and scores nothing.
    plan = planned_jobs(default_run, "--config", 'budget={"retrain": ["full_steps", "epochs"]}')
    assert set(plan) == {"retrain", "summarize", "report", "all"}
    assert plan["retrain"] == (1 + len(SCORED_METHODS) * len(SCORERS)) * len(RATES)
    # A change of the scoring budget or of the scoring model's training retrains
    # the fold models (and the stage models), not the full-data model.
    plan = planned_jobs(default_run, "--config", 'budget={"scoring": 0.5}')
    assert plan.get("train_fold_model") == K and "train_fitting_model" not in plan
    assert plan.get("train_stage_model") == len(SCORERS) * len(RATES) * (N_STAGES - 1)
    assert "retrain_full" not in plan
    # (still past the last of record_epochs: earlier ones are refused at parse time)
    epochs = max(DEFAULT_CONFIG["record_epochs"]) + 5
    plan = planned_jobs(default_run, "--config", f'scoring_model={{"train": {{"epochs": {epochs}}}}}')
    assert plan.get("train_fold_model") == K


def test_another_seed_gives_other_folds(default_run, tmp_path):
    # That the same seed gives the same outputs is checked by the resume test below
    # (the killed-and-resumed default_run equals an uninterrupted computation) and by
    # test_slurm.py (a SLURM run equals a local one byte for byte, metrics included).
    other_seed = make_workdir(tmp_path / "seed", {"seeds": [1]})
    run_snakemake(other_seed, "--cores", "2", "results/seed1/split/folds.parquet")
    assert not read(other_seed / "results/seed1/split/folds.parquet")["fold"].equals(
        read(default_run / "results/seed0/split/folds.parquet")["fold"]
    )


def test_resume_after_sigkill_reruns_nothing_finished_and_gives_the_same_outputs(default_run):
    # default_run was killed once two fold models had finished, then resumed
    # exactly as the README says (conftest.killed_and_resumed_run).
    record = json.loads(kill_record(default_run).read_text())
    finished = {Path(p): mtime for p, mtime in record["finished"].items()}
    assert 2 <= len(finished) < K, "the kill should land after some fold models finished"
    assert not record["summary_at_kill"]
    assert record["planned_fold_models"] == K - len(finished)
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rebuilt"
        assert load_npz(path)["logits"].ndim == 3  # no half-written file under a final name
    # The resumed run equals an uninterrupted computation of the same folds and
    # fold models: the Python API's, in this process (test_slurm.py compares a
    # whole killed-and-resumed SLURM run with a local run, byte for byte).
    data = api.load_dataset("digits")
    folds = read(default_run / "results/seed0/split/folds.parquet")
    assert np.array_equal(folds["sample_id"], np.arange(len(data.train_y)))
    assert np.array_equal(folds["fold"], assign_folds(data.train_y, K, derive_seed(0, "folds")))
    uninterrupted = api.out_of_fold_scores(data.train_x, data.train_y, SCORERS[0], k=K,
                                           mode=DEFAULT_CONFIG["folds"]["mode"],
                                           **api_scoring_kwargs(DEFAULT_CONFIG))
    pd.testing.assert_frame_equal(read(default_run / f"results/seed0/scores/oof/{SCORERS[0]}.parquet"),
                                  uninterrupted)


def test_holdout_mode_scores_each_sample_once(tmp_path):
    k = 3
    workdir = make_workdir(
        tmp_path,
        {"folds": {"k": k, "mode": "holdout"}, "methods": ["unseen"], "scorers": ["el2n"],
         "pruning_rates": [0.5], "stages": [1.0], "selection": {"strategy": ["top"]}},
    )
    run_snakemake(workdir, "--cores", "2", "results/seed0/coresets/unseen-el2n-top/rate0.5/coreset.parquet")
    folds = read(workdir / "results/seed0/split/folds.parquet")
    agg = read(workdir / "results/seed0/scores/oof/el2n.parquet")
    assert (agg["n_scores"] == 1).all() and len(agg) == len(folds)
    assert sorted(set(folds["fold"])) == list(range(k))
    for fold in range(k):
        trained_on = set(fold_train_ids(workdir, fold))
        assert trained_on == set(folds.loc[folds.fold != fold, "sample_id"])
        shard = read(workdir / f"results/seed0/scores/oof/fold{fold}/el2n.parquet")
        assert set(shard["sample_id"]) == set(folds.loc[folds.fold == fold, "sample_id"])
    coreset = read(workdir / "results/seed0/coresets/unseen-el2n-top/rate0.5/coreset.parquet")
    assert len(coreset) == coreset_size(len(folds), 0.5) and (coreset["stage"] == 1).all()
    # Single-step selection keeps exactly the top aggregated scores.
    top = agg.sort_values(["score", "sample_id"], ascending=[False, True]).head(len(coreset))
    assert set(top["sample_id"]) == set(coreset["sample_id"])
