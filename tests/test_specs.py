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
    specs.PrepareData(dataset={"name": "imagefolder", "root": "/data/my images", "subset": None},
                      output="results/data/dataset.npz"),
    specs.Split(dataset_cache="d.npz", folds=5, seed=2, output="f.parquet"),
    specs.ClassDifficulty(output="c.parquet", predictions=["fold0/p.npz", "fold 1/p.npz"]),
    specs.Aggregate(output="a.parquet", shards=["fold0/el2n.parquet", "fold1/el2n.parquet"]),
    specs.SelectRandom(folds_table="f.parquet", rate=0.3, seed=1, output="c.parquet",
                       id_list="c.txt"),
    specs.Finalize(stage_table="stage3.parquet", output="c.parquet", id_list="c.txt"),
    specs.Summarize(output="s.parquet", csv="s.csv", metrics=["a/metrics.parquet"]),
    specs.ScoringModels(output="r.parquet", model=[("0", "fold0/p.npz"), ("1", "a b/p.npz")]),
    specs.ScoringModels(output="r.parquet"),
    specs.Report(summary="s.parquet", score_table=[("0", "el2n", "fitting", "f.parquet"),
                                                   ("1", "el2n", "unseen", "o o.parquet")],
                 scorer="el2n", per_class_rate=0.7, classes_from="m.json",
                 scoring_models="r.parquet", strategy_choice=["c1.json", "c2.json"],
                 dataset="digits", out_dir="results/report"),
    specs.Report(summary="s.parquet", scorer="el2n", out_dir="report"),
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
    """Every field of every spec is an option of its subcommand (a positional field: a
    positional argument)."""
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for spec in specs.SPECS.values():
        actions = {action.dest: action for action in commands[spec.COMMAND]._actions}
        help_text = commands[spec.COMMAND].format_help()
        for field in dataclasses.fields(spec):
            if field.metadata.get("positional"):
                assert not actions[field.name].option_strings and field.name in help_text
            else:
                assert "--" + field.name.replace("_", "-") in help_text
                assert actions[field.name].option_strings == ["--" + field.name.replace("_", "-")]


@pytest.mark.parametrize("argv, expected", [
    # the rules' command lines before the specs, word for word
    (["aggregate", "--output", "a.parquet", "s0.parquet", "s1.parquet"],
     specs.Aggregate(output="a.parquet", shards=["s0.parquet", "s1.parquet"])),
    (["summarize", "m0.parquet", "m1.parquet", "--output", "s.parquet", "--csv", "s.csv"],
     specs.Summarize(output="s.parquet", csv="s.csv", metrics=["m0.parquet", "m1.parquet"])),
    (["scoring-models", "--output", "r.parquet", "--model", "0", "a.npz", "--model", "1", "b.npz"],
     specs.ScoringModels(output="r.parquet", model=[("0", "a.npz"), ("1", "b.npz")])),
    (["report", "--summary", "s.parquet", "--score-table", "0", "el2n", "fitting", "f.parquet",
      "--scorer", "el2n", "--per-class-rate", "0.7", "--strategy-choice", "a.json",
      "--strategy-choice", "b.json", "--dataset", "digits", "--out-dir", "r"],
     specs.Report(summary="s.parquet", score_table=[("0", "el2n", "fitting", "f.parquet")],
                  scorer="el2n", per_class_rate=0.7, strategy_choice=["a.json", "b.json"],
                  dataset="digits", out_dir="r")),
    (["prepare-data", "--dataset", '{"name": "digits"}', "--output", "d.npz"],
     specs.PrepareData(dataset={"name": "digits"}, output="d.npz")),
])
def test_hand_written_command_lines_still_parse(argv, expected):
    args = cli.build_parser().parse_args(argv)
    assert specs.SPECS[argv[0]].from_args(args) == expected


@pytest.mark.parametrize("argv", [
    ["aggregate", "--output", "a.parquet"],  # a positional list needs one value at least
    ["scoring-models", "--output", "r.parquet", "--model", "0"],  # SEED PATH: two values
    ["report", "--summary", "s.parquet", "--scorer", "el2n"],  # --out-dir is required
])
def test_incomplete_command_lines_are_refused(argv):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv)


def test_positional_arguments_beside_a_list_option_are_refused():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Ambiguous(specs.JobSpec):
        names: list[str] = specs.arg("any number of values", [])
        paths: list[str] = specs.arg("positional", positional=True)

    import argparse

    with pytest.raises(TypeError, match="positional"):
        Ambiguous.add_arguments(argparse.ArgumentParser())


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
