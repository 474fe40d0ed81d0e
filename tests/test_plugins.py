"""Plugins declare what they need; names, seeds and coreset ids have one home (issue 23)."""

from __future__ import annotations

import ast
import dataclasses
import re
import tokenize
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from unseen import naming, plugins, specs
from unseen.config import load_schema, validate_config
from unseen.naming import CoresetId
from unseen.scorers import MODEL_SCORERS, SCORER_PLUGINS, SCORERS, PredictionRecord, compute_scores
from unseen.strategies import (
    CLASS_AWARE_STRATEGIES, DEFAULT_STRATEGY, STRATEGIES, STRATEGY_PLUGINS, VALIDATION_CANDIDATES,
    strategies_needing,
)

REPO = Path(__file__).resolve().parents[1]
PLUGIN_NAMES = set(SCORERS) | set(STRATEGIES)


def test_registries_derive_the_old_tables():
    """The derived tables follow the entries, and hold at least the built-in plugins (a new
    plugin adds to them without editing this test)."""
    assert list(STRATEGIES) == list(STRATEGY_PLUGINS)
    assert VALIDATION_CANDIDATES == tuple(
        name for name, entry in STRATEGY_PLUGINS.items() if entry.validation_candidate)
    assert {"top", "ccs", "class_balanced", "auto"} <= set(VALIDATION_CANDIDATES)
    assert CLASS_AWARE_STRATEGIES == tuple(
        name for name, entry in STRATEGY_PLUGINS.items() if entry.class_aware)
    assert {"class_balanced", "hard_class_priority"} <= set(CLASS_AWARE_STRATEGIES)
    assert DEFAULT_STRATEGY == "top"
    assert MODEL_SCORERS == {name for name, entry in SCORER_PLUGINS.items() if entry.needs_model}
    assert {"grand", "grand_last"} <= MODEL_SCORERS
    assert "hard_class_priority" in strategies_needing(plugins.CLASS_DIFFICULTY)
    assert strategies_needing(plugins.STRATEGY_CHOICE) == ("validated",)
    # every selection job takes every strategy side input, by the need's name
    for spec in (specs.SelectFirstStage, specs.SelectNextStage, specs.SelectSingleStep):
        assert plugins.STRATEGY_NEEDS <= {field.name for field in dataclasses.fields(spec)}


def test_plugin_names_fit_a_coreset_id():
    for name in PLUGIN_NAMES:
        assert re.fullmatch(plugins.NAME_PATTERN, name)
    with pytest.raises(ValueError, match="must match"):
        plugins.StrategyPlugin("with-hyphen", lambda *a: None)
    with pytest.raises(ValueError, match="unknown inputs"):
        plugins.ScorerPlugin("x", lambda r, seed: None, needs=frozenset({"oracle"}))


def test_schema_plugin_choices_come_only_from_the_registries():
    raw = yaml.safe_load(resources.files("unseen").joinpath("config.schema.yaml").read_text())
    props = raw["properties"]
    # the file names no plugin: nothing to keep in step when one is added
    assert "enum" not in props["scorers"]["items"]
    assert "properties" not in props["scorer_options"]
    assert "enum" not in props["selection"]["properties"]["strategy"]["items"]
    assert "enum" not in props["selection"]["properties"]["validation_candidates"]["items"]
    assert "pattern" not in props["extra_selections"]["items"]
    loaded = load_schema()["properties"]
    assert loaded["scorers"]["items"]["enum"] == sorted(SCORERS)
    assert loaded["selection"]["properties"]["strategy"]["items"]["enum"] == sorted(STRATEGIES)
    assert (loaded["selection"]["properties"]["validation_candidates"]["items"]["enum"]
            == sorted(VALIDATION_CANDIDATES))
    options = loaded["scorer_options"]["properties"]
    assert set(options) == {name for name, entry in SCORER_PLUGINS.items() if entry.options}
    assert options["tdds"]["properties"]["window"]["default"] == 10
    filled = validate_config({"scorer_options": {"tdds": {"window": 5}}})["scorer_options"]
    assert filled["tdds"] == {"window": 5, "decay": 0.9}
    assert filled["grand_last"] == {"batch_size": 1024}


def test_scorer_option_defaults_are_the_entrys():
    rng = np.random.default_rng(0)
    record = PredictionRecord(sample_ids=np.arange(6), labels=rng.integers(0, 3, 6),
                              epochs=np.arange(1, 13), logits=rng.normal(size=(12, 6, 3)))
    for name in ("tdds", "dyn_unc"):
        defaults = SCORER_PLUGINS[name].option_defaults()
        np.testing.assert_array_equal(compute_scores(name, record), compute_scores(name, record, 0, defaults))
    with pytest.raises(ValueError, match="bad options"):
        compute_scores("el2n", record, 0, {"window": 3})


def _string_literals(path: Path):
    """(line, value) of every plain string literal of a Python file or a Snakemake file."""
    if path.suffix == ".py":
        with open(path) as handle:
            for tok in tokenize.generate_tokens(handle.readline):
                if tok.type == tokenize.STRING:
                    try:
                        yield tok.start[0], ast.literal_eval(tok.string)
                    except (ValueError, SyntaxError):
                        continue
    else:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"([\"'])([^\"'\n]*)\1", line):
                yield i, match.group(2)


def test_no_module_but_the_registries_names_a_plugin():
    files = [*sorted((REPO / "rules").glob("*.smk")), REPO / "workflow" / "Snakefile",
             *(REPO / "unseen" / f"{name}.py" for name in ("preflight", "coresets", "report", "tables",
                                                          "plots", "cli", "specs", "steps", "jobs"))]
    # "random" is also a method (naming.RANDOM), "auto" also a device (naming.AUTO_DEVICE)
    only_plugins = PLUGIN_NAMES - {naming.RANDOM, naming.AUTO_DEVICE}
    found = [f"{path.relative_to(REPO)}:{line}: {value!r}"
             for path in files for line, value in _string_literals(path) if value in only_plugins]
    assert not found, "plugin names written outside the registries:\n" + "\n".join(found)


@pytest.mark.parametrize("name", ["random", "unseen-el2n-top", "fitting-grand_last-validated",
                                  "unseen_single-el2n_avg-class_balanced", "unseen-el2n-top2"])
def test_coreset_id_has_one_format_and_one_parse(name):
    parsed = CoresetId.parse(name)
    assert str(parsed) == name
    assert re.fullmatch(CoresetId.PATTERN, name)
    schema_pattern = load_schema()["properties"]["extra_selections"]["items"]["pattern"]
    assert bool(re.search(schema_pattern, name)) == (name != "random")


@pytest.mark.parametrize("name", ["oracle-el2n-top", "unseen-el2n", "unseen-el-2n-top", "Random"])
def test_coreset_id_rejects(name):
    with pytest.raises(ValueError, match="coreset name"):
        CoresetId.parse(name)
    assert not re.fullmatch(CoresetId.PATTERN, name)


def test_model_names_and_seed_labels():
    assert naming.fold_model_name(3) == "fold3"
    assert naming.FITTING_MODEL == "fitting"
    coreset = CoresetId(naming.UNSEEN, "el2n", "validated")
    # the workflow writes the rate from its wildcard, the API from a float: the same name
    assert naming.stage_model_name("2", coreset, "0.3") == "stage2-unseen-el2n-validated-rate0.3"
    assert naming.stage_model_name(2, coreset, 0.3) == "stage2-unseen-el2n-validated-rate0.3"
    assert (naming.FOLDS_SEED, naming.RETRAIN_SEED, naming.SELECT_SEED) == ("folds", "retrain", "select")
