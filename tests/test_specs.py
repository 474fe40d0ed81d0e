"""One typed spec per job kind: the command line a rule writes is the one the CLI reads back."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from unseen import cli, specs


def _retrain(**changes) -> specs.Retrain:
    base = dict(dataset_cache="results/data/dataset.npz", method="unseen", scorer="el2n",
                strategy="validated", rate=0.3, coreset="c d/coreset.parquet",
                scoring_predictions=["a.npz", "b.npz"], model={"arch": "mlp", "options": {}},
                train={"epochs": 2, "lr": 0.05}, seed=3, threads=2,
                metrics_json="m.json", metrics_parquet="m.parquet")
    return specs.Retrain(**{**base, **changes})


@pytest.mark.parametrize("spec", [
    _retrain(),
    _retrain(coreset=None, method="full", scorer="none", strategy="none", rate=0.0,
             scoring_predictions=[]),
    _retrain(retrain_budget="epochs", device="cpu"),
    specs.SelectFirstStage(scores="s.parquet", rate=0.7, stages=[0.5, 1.0], output="o.parquet",
                           selection={"strategy": "validated", "keep": "highest"}, seed=1,
                           strategy_choice="c.json"),
    specs.SelectNextStage(previous="p.parquet", stage_scores="s.parquet", folds_table="f.parquet",
                          stage=2, stages=[0.5, 1.0], rate=0.3, output="o.parquet",
                          class_difficulty="d.parquet"),
    specs.SelectSingleStep(scores="s.parquet", rate=0.3, output="o.parquet", id_list="o.txt"),
    specs.TrainScoringModel(dataset_cache="d.npz", folds_table="f.parquet", fold=2,
                            fold_mode="holdout", scoring_budget="0.5", model={"arch": "mlp"},
                            train={"epochs": 2}, record_epochs=[1, 2], record_format="stats",
                            seed=4, checkpoint="m.pt", predictions="p.npz"),
    specs.TrainScoringModel(dataset_cache="d.npz", folds_table="f.parquet", all_samples=True,
                            model={"arch": "mlp"}, train={}, seed=0, checkpoint="m.pt",
                            predictions="p.npz"),
    specs.Score(predictions="p.npz", scorer="grand", options={"passes": 2}, allow_seen=True,
                checkpoint="m.pt", dataset_cache="d.npz", device="cpu", output="s.parquet"),
    specs.ChooseStrategy(dataset_cache="d.npz", scores="s.parquet", rate=0.5,
                         selection={"validation_fraction": 0.1}, model={"arch": "mlp"},
                         train={}, seed=1, threads=2, output="c.json"),
])
def test_spec_round_trips_through_the_console_script(spec):
    argv = shlex.split(spec.command())
    assert argv[:4] == ["python", "-m", "unseen", spec.COMMAND]
    args = cli.build_parser().parse_args(argv[3:])
    assert type(spec).from_args(args) == spec


def test_spec_defaults_are_the_parsers():
    parser = cli.build_parser()
    args = parser.parse_args(["retrain", "--dataset-cache", "d.npz", "--method", "full",
                              "--model", "{}", "--train", "{}", "--seed", "0",
                              "--metrics-json", "m.json", "--metrics-parquet", "m.parquet"])
    spec = specs.Retrain.from_args(args)
    assert (spec.coreset, spec.scorer, spec.strategy, spec.rate) == (None, "none", "none", 0.0)
    assert (spec.retrain_budget, spec.device, spec.threads, spec.scoring_predictions) == (
        "full_steps", "auto", 1, [])
    with pytest.raises(SystemExit):
        parser.parse_args(["retrain", "--method", "full"])  # required options missing


def test_every_field_is_an_option():
    for spec in specs.SPECS.values():
        help_text = cli.build_parser()._subparsers._group_actions[0].choices[spec.COMMAND].format_help()
        for field in dataclasses.fields(spec):
            assert "--" + field.name.replace("_", "-") in help_text


@pytest.mark.parametrize("trained_on, message", [
    ({}, "give exactly one of --fold, --coreset and --all-samples"),
    ({"fold": 0, "all_samples": True}, "give exactly one of --fold, --coreset and --all-samples"),
    ({"coreset": "stage1.parquet"}, "--coreset needs --model-name"),
])
def test_a_scoring_model_job_names_what_it_trains_on(trained_on, message):
    spec = specs.TrainScoringModel(dataset_cache="d.npz", folds_table="f.parquet", model={},
                                   train={}, seed=0, checkpoint="m.pt", predictions="p.npz",
                                   **trained_on)
    with pytest.raises(SystemExit, match=message):
        spec.model_identity()


def test_a_bad_scoring_budget_is_named():
    with pytest.raises(SystemExit, match="--scoring-budget -1"):
        specs.scoring_budget_value("-1")
    assert specs.scoring_budget_value("epochs") == "epochs"
    assert specs.scoring_budget_value("0.5") == 0.5
    assert specs.scoring_budget_value(None) is None
