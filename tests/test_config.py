"""Invalid configs stop `snakemake` before any job runs, with a message naming key and fix."""

import dataclasses

import pytest

from conftest import DEFAULT_CONFIG, deep_update, make_workdir, run_snakemake
from unseen.budget import RETRAIN_BUDGETS
from unseen.config import (
    METHODS, ConfigError, load_schema, parse_coreset_name, coreset_names, validate_config,
)
from unseen.datasets import DATASETS
from unseen.folds import FOLD_MODES
from unseen.models import MODELS
from unseen.scorers import SCORERS
from unseen.selection import KEEP_CHOICES
from unseen.strategies import STRATEGIES, VALIDATION_CANDIDATES
from unseen.subset_training import RECORD_FORMATS
from unseen.train import COMPILE_MODES, SCHEDULES, TrainSettings

INVALID = [
    ({"folds": {"k": 1}}, ["folds.k", ">= 2"]),
    ({"pruning_rates": [0.3, 1.0]}, ["pruning_rates[1]", "< 1"]),
    ({"pruning_rates": [0.0]}, ["pruning_rates[0]", "> 0"]),
    ({"scorers": ["el2n", "grandiose"]}, ["scorers[1]", "'grandiose'", "'entropy'"]),
    ({"methods": ["unseen", "magic"]}, ["methods[1]", "'magic'", "'fitting'"]),
    ({"dataset": {"name": "imagenet21k"}}, ["dataset.name", "'digits'"]),
    ({"stages": [0.5, 0.4, 1.0]}, ["stages", "increase strictly and end at 1.0"]),
    ({"stages": [0.5, 0.9]}, ["stages", "end at 1.0"]),
    ({"folds": {"mode": "loo"}}, ["folds.mode", "'paper'", "'holdout'"]),
    ({"scoring_model": {"train": {"epochs": 0}}}, ["scoring_model.train.epochs", ">= 1"]),
    ({"selection": {"keep": "middle"}}, ["selection.keep", "'highest'", "'lowest'"]),
    ({"prunning_rates": [0.5]}, ["prunning_rates", "allowed keys", "pruning_rates"]),
    ({"selection": {"strategy": ["top", "greedy"]}},
     ["selection.strategy[1]", "'greedy'", "'hard_class_priority'"]),
    ({"extra_selections": ["unseen-el2n-top", "unseen-grandiose-top"]},
     ["extra_selections[1]", "unknown scorer 'grandiose'", "el2n_avg"]),
    ({"report": {"scorer": "forgetting"}}, ["report.scorer", "'forgetting'", "'el2n'"]),
]


@pytest.mark.parametrize("changes, expected", INVALID, ids=[str(c) for c, _ in INVALID])
def test_invalid_config_is_named_with_key_and_fix(changes, expected):
    # validate_config is what rules/common.smk runs when Snakemake parses the
    # workflow; the test below shows that its error stops a real run there.
    with pytest.raises(ConfigError) as err:
        validate_config(deep_update(DEFAULT_CONFIG, changes))
    output = str(err.value)
    for text in expected:
        assert text in output, f"{text!r} missing from:\n{output}"
    assert output.startswith("invalid config")


# one schema error and one error of the checks after the schema (coreset names)
@pytest.mark.parametrize("changes, expected", [INVALID[0], INVALID[-2]], ids=["schema", "names"])
def test_invalid_config_stops_snakemake_before_any_job(tmp_path, changes, expected):
    workdir = make_workdir(tmp_path, changes)
    proc = run_snakemake(workdir, "--cores", "1", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for text in expected:
        assert text in output, f"{text!r} missing from:\n{output}"
    assert "invalid config" in output
    assert not (workdir / "results").exists()
    assert not (workdir / "logs").exists()


def test_defaults_fill_a_minimal_config():
    config = validate_config({})
    assert config["folds"] == {"k": 5, "mode": "paper"}
    assert config["scoring_model"]["train"]["epochs"] >= 1
    assert config["final_model"]["train"] is not config["scoring_model"]["train"]
    assert config["stages"][-1] == 1.0


def test_a_single_strategy_name_is_a_one_item_list():
    assert validate_config({"selection": {"strategy": "ccs"}})["selection"]["strategy"] == ["ccs"]
    assert validate_config({})["selection"]["strategy"] == ["validated"]
    both = validate_config({"selection": {"strategy": ["ccs", "top"]}})
    assert both["selection"]["strategy"] == ["ccs", "top"]


def test_coreset_names_are_the_grid_plus_extra_selections():
    config = validate_config({
        "methods": ["full", "random", "fitting", "unseen_single", "unseen"],
        "scorers": ["el2n", "loss"],
        "selection": {"strategy": ["top", "ccs"]},
        "extra_selections": ["unseen-aum-hard_class_priority", "fitting-loss-ccs"],
    })
    grid = [f"{m}-{s}-{t}" for m in ("fitting", "unseen_single", "unseen")
            for s in ("el2n", "loss") for t in ("top", "ccs")]
    # fitting-loss-ccs is already in the grid: listed once
    assert coreset_names(config) == ["random", *grid, "unseen-aum-hard_class_priority"]
    assert parse_coreset_name("random") == ("random", "none", "none")
    assert parse_coreset_name("unseen_single-el2n_avg-class_balanced") == (
        "unseen_single", "el2n_avg", "class_balanced")
    assert coreset_names(validate_config({"methods": ["full", "unseen"], "scorers": ["el2n"]})) == [
        "unseen-el2n-validated"]


@pytest.mark.parametrize("changes, key, words", [
    ({"extra_selections": ["unseen_single-el2n-top", "unseen-nonsense-top"]},
     "extra_selections[1]", ["'nonsense'", *sorted(SCORERS)]),
    ({"extra_selections": ["unseen-el2n-greedy"]},
     "extra_selections[0]", ["'greedy'", *sorted(STRATEGIES)]),
    ({"scorers": ["el2n", "loss"], "report": {"scorer": "aum"}},
     "report.scorer", ["'aum'", "['el2n', 'loss']"]),
    ({"pruning_rates": [0.3, 0.7], "report": {"per_class_rate": 0.5}},
     "report.per_class_rate", ["0.5", "[0.3, 0.7]"]),
    ({"extra_selections": ["oracle-el2n-top"]}, "extra_selections[0]", ["a string matching"]),
    ({"methods": ["unseen_single", "oracle"]}, "methods[1]", ["'oracle'", "'unseen_single'"]),
])
def test_matrix_keys_are_checked_by_name(changes, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(changes)
    message = str(err.value)
    assert f"config key '{key}'" in message
    for word in words:
        assert word in message, f"{word!r} missing from {message}"


@pytest.mark.parametrize("section, arch, options, key, words", [
    # a typo: named with the model's options and defaults (from its factory's signature)
    ("scoring_model", "small_cnn", {"widht": 16}, "scoring_model.options.widht",
     ["model 'small_cnn' has no option 'widht'", "did you mean 'width'?",
      "allowed options of 'small_cnn': width (default 32)", "rename or remove 'widht'"]),
    ("final_model", "airbench", {"width": 32, "whiten": 3}, "final_model.options.whiten",
     ["model 'airbench' has no option 'whiten'", "whiten_kernel (default 2)",
      "bn_momentum (default 0.4)", "logit_scale (default 0.111111)"]),
    # a model without options
    ("final_model", "resnet18", {"width": 64}, "final_model.options.width",
     ["model 'resnet18' takes no options", "remove final_model.options"]),
    # a value of the wrong type
    ("scoring_model", "mlp", {"width": 16.5}, "scoring_model.options.width",
     ["16.5 is not an integer", "model 'mlp' takes width as an integer", "width: 128"]),
    ("final_model", "airbench", {"bn_momentum": "fast"}, "final_model.options.bn_momentum",
     ["'fast' is not a number", "bn_momentum: 0.4"]),
    ("scoring_model", "small_cnn", {"width": True}, "scoring_model.options.width",
     ["True is not an integer"]),
], ids=["typo", "typo-airbench", "no-options", "float-for-int", "string-for-float", "bool-for-int"])
def test_model_options_the_model_does_not_take_are_named_at_validation(
        section, arch, options, key, words):
    """Issue 24, item 9: a model option typo used to pass the config check and fail
    only when the first training job built the model (after queueing on a cluster)."""
    with pytest.raises(ConfigError) as err:
        validate_config({section: {"arch": arch, "options": options}})
    message = str(err.value)
    assert f"config key '{key}'" in message, message
    for word in words:
        assert word in message, f"{word!r} missing from {message}"


def test_model_options_follow_the_factory_signature(monkeypatch):
    """The allowed options are read from the factories, so every model's own defaults
    pass, numbers given as strings (--config) are taken, and a new option of a factory
    is accepted with no other edit."""
    import unseen.models
    from unseen.models import model_options

    for arch in MODELS:
        options = model_options(arch)
        config = validate_config({"scoring_model": {"arch": arch, "options": options},
                                  "final_model": {"arch": arch, "options": dict(options)}})
        assert config["final_model"]["options"] == options
    assert validate_config({"scoring_model": {"arch": "small_cnn", "options": {"width": "16"}}})[
        "scoring_model"]["options"] == {"width": 16}

    def mlp_with_depth(in_shape, num_classes, width: int = 128, depth: int = 2):
        return unseen.models.mlp(in_shape, num_classes, width)

    monkeypatch.setitem(unseen.models.MODELS, "mlp", mlp_with_depth)
    assert validate_config({"scoring_model": {"options": {"depth": 3}}})[
        "scoring_model"]["options"] == {"depth": 3}
    with pytest.raises(ConfigError, match=r"width \(default 128\), depth \(default 2\)"):
        validate_config({"scoring_model": {"options": {"dpeth": 3}}})
    # the Python API builds models directly: the same check, the same words
    with pytest.raises(TypeError, match="'options.dpeth': model 'mlp' has no option 'dpeth'"):
        unseen.models.build_model("mlp", (1, 8, 8), 10, dpeth=3)


def test_valid_report_and_extra_selections_pass():
    config = validate_config({
        "scorers": ["el2n", "loss"], "pruning_rates": [0.3, 0.7],
        "report": {"scorer": "loss", "per_class_rate": 0.7},
        "extra_selections": ["unseen_single-aum-ccs"],
    })
    assert config["report"] == {"scorer": "loss", "per_class_rate": 0.7}
    assert validate_config({})["report"] == {"scorer": None, "per_class_rate": None}


def test_every_problem_is_listed():
    with pytest.raises(ConfigError) as err:
        validate_config({"folds": {"k": 0}, "scorers": ["x"]})
    assert "folds.k" in str(err.value) and "scorers[0]" in str(err.value)


def _schema_enums(schema: dict) -> dict[str, list]:
    props, selection = schema["properties"], schema["properties"]["selection"]["properties"]
    model = schema["$defs"]["model"]["properties"]
    return {
        "dataset.name": props["dataset"]["properties"]["name"]["enum"],
        "scorers": props["scorers"]["items"]["enum"],
        "methods": props["methods"]["items"]["enum"],
        "folds.mode": props["folds"]["properties"]["mode"]["enum"],
        "budget.retrain": props["budget"]["properties"]["retrain"]["items"]["enum"],
        "record_format": props["record_format"]["enum"],
        "selection.keep": selection["keep"]["enum"],
        "selection.strategy": selection["strategy"]["items"]["enum"],
        "selection.validation_candidates": selection["validation_candidates"]["items"]["enum"],
        "model.arch": model["arch"]["enum"],
        "model.train.schedule": model["train"]["properties"]["schedule"]["enum"],
        "model.train.torch_compile": model["train"]["properties"]["torch_compile"]["enum"],
    }


def test_every_schema_choice_is_the_codes_own_list():
    """The schema documents each choice list; the code's registry or constant is its home."""
    code = {
        "dataset.name": DATASETS, "scorers": SCORERS, "methods": METHODS, "folds.mode": FOLD_MODES,
        "budget.retrain": RETRAIN_BUDGETS, "record_format": RECORD_FORMATS,
        "selection.keep": KEEP_CHOICES, "selection.strategy": STRATEGIES,
        "selection.validation_candidates": VALIDATION_CANDIDATES, "model.arch": MODELS,
        "model.train.schedule": SCHEDULES, "model.train.torch_compile": COMPILE_MODES,
    }
    enums = _schema_enums(load_schema())
    assert enums.keys() == code.keys()
    for key, names in code.items():
        assert sorted(enums[key]) == sorted(names), key
    # the first of an ordered choice list is the schema's default
    assert validate_config({})["folds"]["mode"] == FOLD_MODES[0]
    assert validate_config({})["record_format"] == RECORD_FORMATS[0]
    assert validate_config({})["budget"]["retrain"] == [RETRAIN_BUDGETS[0]]


def test_training_settings_defaults_are_the_schemas():
    """TrainSettings (library calls) and a config's scoring/final model train alike by default."""
    filled = validate_config({})
    for section in ("scoring_model", "final_model"):
        assert filled[section]["train"] == dataclasses.asdict(TrainSettings())


def test_training_state_default_is_the_jobs():
    """A job run by hand (unseen retrain ...) writes its state as often as a workflow job."""
    from unseen.resume import DEFAULT_EVERY_MINUTES

    assert validate_config({})["training_state"]["every_minutes"] == DEFAULT_EVERY_MINUTES


def test_command_line_values_are_coerced_to_numbers(tmp_path):
    workdir = make_workdir(tmp_path)
    ok = run_snakemake(workdir, "-n", "--config", 'folds={"k": 3}', "pruning_rates=[0.5]")
    assert "train_fold_model" in ok.stdout + ok.stderr
    bad = run_snakemake(workdir, "-n", "--config", "pruning_rates=[0.3, 1.5]", check=False)
    assert bad.returncode != 0 and "pruning_rates[1]" in bad.stdout + bad.stderr
