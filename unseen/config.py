"""Load and check a workflow config against ``unseen/config.schema.yaml``.

:func:`validate_config` fills in defaults and raises :class:`ConfigError` with a
message that names the offending key, the value and what is allowed, so a bad
config stops a run before any job starts.
"""

from __future__ import annotations

import copy
import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import yaml
from jsonschema import Draft202012Validator, validators

from unseen.naming import (  # noqa: F401  (METHODS, UNSCORED_METHODS: re-exported)
    METHODS, RANDOM, SCORED_METHODS, UNSCORED_METHODS, CoresetId, rate_in_path,
)

#: The one schema file: package data of ``unseen``. The workflow validates against
#: the same file by path (rules/common.smk), so there is no copy to keep in step.
SCHEMA_FILE = "config.schema.yaml"


class ConfigError(ValueError):
    """The config is invalid; the message names the key and the allowed values."""


def _fill_plugin_enums(schema: dict[str, Any]) -> dict[str, Any]:
    """The config schema with its plugin enums, scorer options and coreset id pattern filled in.

    Sets, where the schema has the key: ``scorers`` items' enum, ``selection.strategy``
    items' enum, ``selection.validation_candidates`` items' enum (sorted names),
    and ``scorer_options``' properties (one object per scorer with options); and
    the pattern of ``extra_selections`` (:class:`unseen.naming.CoresetId`).
    """
    from unseen.scorers import SCORER_PLUGINS
    from unseen.strategies import STRATEGY_PLUGINS, strategies_where

    props = schema.get("properties", {})
    if "scorers" in props:
        props["scorers"]["items"]["enum"] = sorted(SCORER_PLUGINS)
    if "scorer_options" in props:
        props["scorer_options"]["properties"] = {
            name: {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {key: dict(option) for key, option in entry.options.items()},
            }
            for name, entry in sorted(SCORER_PLUGINS.items())
            if entry.options
        }
    if "extra_selections" in props:
        props["extra_selections"]["items"]["pattern"] = f"^(?:{CoresetId.SCORED_PATTERN})$"
    selection = props.get("selection", {}).get("properties", {})
    if "strategy" in selection:
        selection["strategy"]["items"]["enum"] = sorted(STRATEGY_PLUGINS)
    if "validation_candidates" in selection:
        selection["validation_candidates"]["items"]["enum"] = sorted(
            strategies_where(validation_candidate=True)
        )
    return schema


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    """The config schema as a dict: the package's own (``path`` None) or the file at ``path``.

    The package's copy is read through :mod:`importlib.resources`, so it also
    works from a wheel or a zip import, not only from a checkout. The plugin
    enums (scorers, strategies, validation candidates) and the scorers' options
    come from the registries, not the file.
    """
    if path is None:
        return _fill_plugin_enums(yaml.safe_load(resources.files("unseen").joinpath(SCHEMA_FILE).read_text()))
    with open(path) as handle:
        return _fill_plugin_enums(yaml.safe_load(handle))


def _with_defaults(base):
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator:
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


_DefaultFillingValidator = _with_defaults(Draft202012Validator)


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> dict[str, Any]:
    return validate_config({})


def default(*keys: str) -> Any:
    """The default of config key ``keys`` (e.g. ``default("selection", "validation_candidates")``).

    Read from the schema, the one home of every default, for library calls that
    are given no value; a fresh copy each call.
    """
    value = _schema_defaults()
    for key in keys:
        value = value[key]
    return copy.deepcopy(value)


def _key(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _allowed(error) -> str:
    schema = error.schema
    v = error.validator
    if v == "enum":
        return f"allowed values: {', '.join(map(repr, schema['enum']))}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bounds = []
        for name, sym in [("exclusiveMinimum", ">"), ("minimum", ">="),
                          ("exclusiveMaximum", "<"), ("maximum", "<=")]:
            if name in schema:
                bounds.append(f"{sym} {schema[name]}")
        return "allowed: a value " + " and ".join(bounds)
    if v == "additionalProperties":
        return f"allowed keys: {', '.join(sorted(schema.get('properties', {})))}"
    if v == "type":
        return f"allowed type: {schema['type']}"
    if v == "pattern":
        return f"allowed: a string matching {schema['pattern']}"
    if v in ("minItems", "maxItems", "uniqueItems"):
        return f"allowed: a list with {v}={schema[v]}"
    return ""


def _format(error) -> str:
    key = _key(error.absolute_path)
    allowed = _allowed(error)
    return f"config key '{key}': {error.message}" + (f"; {allowed}" if allowed else "")


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fill defaults into ``config`` in place, check it, and return it.

    Raises:
        ConfigError: listing every problem, each naming the key and the allowed values.
    """
    schema = load_schema() if schema is None else schema
    _coerce_command_line_strings(config, schema)
    _strategy_name_as_list(config)
    _budget_values(config)
    errors = sorted(
        _DefaultFillingValidator(schema).iter_errors(config),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    problems = [_format(e) for e in errors]
    if not problems:
        problems = _semantic_problems(config)
    if problems:
        raise ConfigError(
            "invalid config (fix config/config.yaml or the --config/--configfile values):\n  - "
            + "\n  - ".join(problems)
        )
    return config


def _coerce_command_line_strings(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Turn strings where the schema wants a number or boolean into that type.

    ``snakemake --config 'folds={"k": 3}'`` hands nested values over as strings
    ("3"); a user means the number.
    """
    for _ in range(100):
        changed = False
        for error in _DefaultFillingValidator(schema).iter_errors(config):
            wanted = error.schema.get("type") if error.validator == "type" else None
            wanted = wanted if isinstance(wanted, list) else [wanted]
            if not isinstance(error.instance, str) or not set(wanted) & {"number", "integer", "boolean"}:
                continue
            try:
                value = yaml.safe_load(error.instance)
            except yaml.YAMLError:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, str):
                parent = config
                *head, last = list(error.absolute_path)
                for part in head:
                    parent = parent[part]
                parent[last] = value
                changed = True
        if not changed:
            return


def _strategy_name_as_list(config: dict[str, Any]) -> None:
    """``selection.strategy: ccs`` means ``[ccs]``: one name is a one-item list."""
    selection = config.get("selection")
    if isinstance(selection, dict) and isinstance(selection.get("strategy"), str):
        selection["strategy"] = [selection["strategy"]]


def _budget_values(config: dict[str, Any]) -> None:
    """``budget.retrain: epochs`` means ``[epochs]``; ``budget.scoring: "0.5"`` (from --config) is 0.5."""
    budget = config.get("budget")
    if not isinstance(budget, dict):
        return
    if isinstance(budget.get("retrain"), str):
        budget["retrain"] = [budget["retrain"]]
    scoring = budget.get("scoring")
    if isinstance(scoring, str) and scoring != "epochs":
        try:
            budget["scoring"] = float(scoring)
        except ValueError:
            pass


def parse_coreset_name(name: str) -> tuple[str, str, str]:
    """(method, scorer, strategy) of a coreset name; ``random`` is (random, none, none).

    Names are ``random`` or ``<method>-<scorer>-<strategy>``, e.g.
    ``unseen-el2n-top`` (:class:`unseen.naming.CoresetId`, which parses them).
    """
    return CoresetId.parse(name).astuple()


def coreset_names(config: dict[str, Any]) -> list[str]:
    """Every pruned coreset a (validated) config asks for, in a stable order.

    ``random``, then the grid of scoring methods x ``scorers`` x
    ``selection.strategy``, then ``extra_selections`` not already in the grid.
    """
    methods = config["methods"]
    names = [str(CoresetId(RANDOM))] if RANDOM in methods else []
    for method in SCORED_METHODS:
        if method in methods:
            names += [
                str(CoresetId(method, scorer, strategy))
                for scorer in config["scorers"]
                for strategy in config["selection"]["strategy"]
            ]
    return names + [name for name in config["extra_selections"] if name not in names]


def _semantic_problems(config: dict[str, Any]) -> list[str]:
    from unseen.scorers import SCORERS
    from unseen.strategies import STRATEGIES

    problems = _rate_problems(config["pruning_rates"]) + _model_option_problems(config)
    for i, name in enumerate(config["extra_selections"]):
        _, scorer, strategy = parse_coreset_name(name)
        if scorer not in SCORERS or strategy not in STRATEGIES:
            problems.append(
                f"config key 'extra_selections[{i}]': {name!r} names an unknown "
                + (f"scorer {scorer!r}; allowed scorers: {', '.join(sorted(SCORERS))}"
                   if scorer not in SCORERS
                   else f"strategy {strategy!r}; allowed strategies: {', '.join(sorted(STRATEGIES))}")
            )
    report_scorer = config["report"]["scorer"]
    if report_scorer is not None and report_scorer not in config["scorers"]:
        problems.append(
            f"config key 'report.scorer': {report_scorer!r} is not in 'scorers'; "
            f"allowed: one of {config['scorers']} or null"
        )
    rate = config["report"]["per_class_rate"]
    if rate is not None and rate not in config["pruning_rates"]:
        problems.append(
            f"config key 'report.per_class_rate': {rate} is not in 'pruning_rates'; "
            f"allowed: one of {config['pruning_rates']} or null"
        )
    scoring = config["budget"]["scoring"]
    if scoring != "epochs" and not (isinstance(scoring, (int, float)) and scoring > 0):
        problems.append(
            f"config key 'budget.scoring': {scoring!r} is invalid; allowed: \"epochs\" or a "
            "number > 0 (a fraction of the fitting model's SGD steps, e.g. 1.0 or 0.5)"
        )
    stages = config["stages"]
    if any(b <= a for a, b in zip(stages, stages[1:])) or stages[-1] != 1.0:
        problems.append(
            f"config key 'stages': {stages} is invalid; allowed: fractions of the target "
            "size that increase strictly and end at 1.0, e.g. [0.5, 0.75, 1.0] or [1.0]"
        )
    return problems


def _model_option_problems(config: dict[str, Any]) -> list[str]:
    """``scoring_model.options`` and ``final_model.options`` that their model does not take.

    The allowed options are the model factory's keyword arguments
    (:func:`unseen.models.model_options`), so a typo stops the run here instead
    of failing every training job after it was queued. A string that reads as
    the wanted type (``"16"`` from ``--config``) is taken as that value.
    ``unseen.models`` (and torch with it) is imported only when some options are set.
    """
    sections = [s for s in ("scoring_model", "final_model") if config[s]["options"]]
    if not sections:
        return []
    from unseen.models import model_option_problems

    problems = []
    for section in sections:
        arch, options = config[section]["arch"], config[section]["options"]
        for name, value in list(options.items()):
            if isinstance(value, str):
                try:
                    parsed = yaml.safe_load(value)
                except yaml.YAMLError:
                    continue
                if not isinstance(parsed, str) and not model_option_problems(arch, {name: parsed}):
                    options[name] = parsed
        problems += [
            f"config key {problem}"
            for problem in model_option_problems(arch, options, f"{section}.options")
        ]
    return problems


def _rate_problems(rates: list[float]) -> list[str]:
    """Rates whose path form is not the rate itself: rounded (0.1234567 -> 0.123457,
    0.30000001 -> 0.3, colliding with 0.3) or in exponent form (1e-05), which the
    ``{rate}`` wildcard cannot match.
    """
    problems = []
    for i, rate in enumerate(rates):
        text = rate_in_path(rate)
        if not re.fullmatch(r"0\.\d+", text):
            problems.append(
                f"config key 'pruning_rates[{i}]': {rate} would be written as 'rate{text}' in"
                " output paths, which the workflow cannot match; allowed: a rate of at least"
                " 0.0001 written as a decimal, e.g. 0.001"
            )
        elif float(text) != rate:
            problems.append(
                f"config key 'pruning_rates[{i}]': {rate} would be written as 'rate{text}' in"
                f" output paths and run as {text}; allowed: a rate with at most 6 significant"
                f" digits, e.g. {text}"
            )
    return problems
