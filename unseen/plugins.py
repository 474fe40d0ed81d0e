"""What a scorer or a strategy is: a registry entry that declares what it needs.

A scorer (:data:`unseen.scorers.SCORER_PLUGINS`) or a strategy
(:data:`unseen.strategies.STRATEGY_PLUGINS`) is one frozen entry holding its
function, its options (JSON schema of each, with the default) and the side
inputs it needs. Everything else is derived from the registries, never written
out per plugin:

* the config schema's enums and ``scorer_options`` (:func:`unseen.config.load_schema`);
* the rules' extra inputs and resources (``rules/common.smk``: a strategy that
  needs :data:`CLASS_DIFFICULTY` reads ``class_difficulty.parquet``, one that
  needs :data:`STRATEGY_CHOICE` reads its ``strategy_choice`` file, a scorer that
  needs :data:`CHECKPOINT` gets the training resources);
* the preflight check of class-aware strategies (:mod:`unseen.preflight`), the
  class-error hand-over of :mod:`unseen.coresets`, the report's labels and the
  CLI's help.

No module but the registries names a plugin; adding one is a function, one entry
and a test. This module holds only the entry types and the names of the needs
(it imports nothing of the package); the lookups live beside each registry
(:func:`unseen.scorers.scorers_needing`, :func:`unseen.strategies.strategies_where`,
:func:`unseen.strategies.strategies_needing`, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

#: A plugin name: lower case letters, digits and ``_`` (no ``-``: it separates a
#: coreset id's parts, :mod:`unseen.naming`).
NAME_PATTERN = r"[a-z0-9_]+"

#: Side inputs a plugin can need.
#: A scorer: the per-epoch record of the scoring model (every scorer).
RECORD = "record"
#: A scorer: the scoring model's checkpoint and the images it scores (gradient scorers).
CHECKPOINT = "checkpoint"
#: A strategy: the per-class out-of-fold error table (``class_difficulty.parquet``).
CLASS_DIFFICULTY = "class_difficulty"
#: A strategy: the strategy chosen on a held-out split (``strategy_choice/*.json``).
STRATEGY_CHOICE = "strategy_choice"

SCORER_NEEDS = frozenset({RECORD, CHECKPOINT})
STRATEGY_NEEDS = frozenset({CLASS_DIFFICULTY, STRATEGY_CHOICE})


@dataclass(frozen=True)
class ScorerPlugin:
    """One scorer.

    Attributes:
        name: the config name (``scorers:``), lower case, digits and ``_`` only.
        fn: ``fn(record, seed, **options) -> float64 (N,)``, higher = keep first.
        options: option name -> JSON schema of the option, with its ``default``
            (the config's ``scorer_options.<name>``); ``fn`` gets every option.
        needs: side inputs, a subset of :data:`SCORER_NEEDS`.
        description: one line for the CLI help and the docs.
    """

    name: str
    fn: Callable[..., Any]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    needs: frozenset = frozenset({RECORD})
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "scorer")
        _check_needs(self.name, self.needs, SCORER_NEEDS)

    @property
    def needs_model(self) -> bool:
        """True when the scorer runs the model (checkpoint plus images), not only the record."""
        return CHECKPOINT in self.needs

    def option_defaults(self) -> dict[str, Any]:
        return {key: schema["default"] for key, schema in self.options.items()}


@dataclass(frozen=True)
class StrategyPlugin:
    """One selection strategy.

    Attributes:
        name: the config name (``selection.strategy``), lower case and ``_`` only.
        fn: ``fn(sample_ids, scores, labels, n, ctx) -> int64 (n,)`` positions, best first.
        needs: side inputs, a subset of :data:`STRATEGY_NEEDS`.
        class_aware: gives every class a quota (a coreset smaller than the
            number of classes cannot be drawn; checked before a run).
        validation_candidate: ``validated`` may choose it (it needs no side input).
        plain: the report writes no strategy label for it (the paper's default).
        description: one line for the CLI help and the docs.
    """

    name: str
    fn: Callable[..., Any]
    needs: frozenset = frozenset()
    class_aware: bool = False
    validation_candidate: bool = False
    plain: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "strategy")
        _check_needs(self.name, self.needs, STRATEGY_NEEDS)
        if self.validation_candidate and self.needs:
            raise ValueError(f"strategy {self.name!r}: a validation candidate needs no side input")


def _check_name(name: str, kind: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"{kind} name {name!r} must match {NAME_PATTERN} (it is part of a coreset id)")


def _check_needs(name: str, needs: frozenset, allowed: frozenset) -> None:
    unknown = set(needs) - allowed
    if unknown:
        raise ValueError(f"plugin {name!r} needs unknown inputs {sorted(unknown)}; known: {sorted(allowed)}")


def registry(*entries) -> dict[str, Any]:
    """name -> entry, in the order given; a name may appear once."""
    out: dict[str, Any] = {}
    for entry in entries:
        if entry.name in out:
            raise ValueError(f"plugin {entry.name!r} registered twice")
        out[entry.name] = entry
    return out
