"""The one home of every name the workflow and the API must agree on.

* Methods (config ``methods``) and ``none``, the scorer and strategy of a
  coreset that uses neither (full, random).
* Scoring-model names (``fitting``, ``fold{k}``, ``stage{t}-<coreset id>-rate{rate}``):
  a model's seed derives from its name, so the workflow and :mod:`unseen.api`
  train the same model only if they name it alike.
* The label of every seeded step (:func:`unseen.seeds.derive_seed`).
* :class:`CoresetId`, ``random`` or ``<method>-<scorer>-<strategy>``, with one
  format, one parse and one pattern (the Snakefile's wildcard and the config
  schema's ``extra_selections``).

Plugin names are :data:`unseen.plugins.NAME_PATTERN`: no ``-``, so an id splits
into its parts one way only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unseen.plugins import NAME_PATTERN

#: The scorer and strategy of a coreset that is not drawn from scores.
NONE = "none"

#: Methods a run can compare (config ``methods``).
FULL = "full"
RANDOM = "random"
FITTING = "fitting"
UNSEEN = "unseen"
UNSEEN_SINGLE = "unseen_single"
#: Methods that score samples (each gives one coreset per scorer and strategy), and the rest.
SCORED_METHODS = (FITTING, UNSEEN_SINGLE, UNSEEN)
UNSCORED_METHODS = (FULL, RANDOM)
METHODS = UNSCORED_METHODS + SCORED_METHODS
#: UNSEEN methods: out-of-fold scores, in stages (unseen) or one step (unseen_single).
UNSEEN_METHODS = (UNSEEN, UNSEEN_SINGLE)

#: Seed labels: each seeded step derives its seed as ``derive_seed(run seed, LABEL, ...)``.
FOLDS_SEED = "folds"  # the fold assignment
RETRAIN_SEED = "retrain"  # every retrain's initialisation (all methods share it)
SELECT_SEED = "select"  # a selection, with the pruning rate and the stage
RANDOM_CORESET_SEED = "random"  # the random baseline, with the pruning rate
VALIDATION_SPLIT_SEED = "validation-split"  # the held-out split of the validated strategy
# A scoring model's seed label is its name (fold_model_name, FITTING_MODEL, stage_model_name).

#: The device that is CUDA when CUDA is available, else the CPU (config ``device``).
AUTO_DEVICE = "auto"

#: The fitting baseline's scoring model, trained on every training sample.
FITTING_MODEL = "fitting"


def rate_in_path(rate: float | str) -> str:
    """How a pruning rate is written in names and output paths (``0.3``): ``f"{rate:g}"``.

    A string (a Snakemake wildcard) is already written so and is returned as it is.
    """
    return rate if isinstance(rate, str) else f"{rate:g}"


def fold_model_name(fold: int) -> str:
    """Fold model ``fold``'s name, ``fold{k}``."""
    return f"fold{fold}"


def stage_model_name(stage: int, coreset: "CoresetId", rate: float | str) -> str:
    """The model trained on S_stage of ``coreset`` at ``rate``: ``stage{t}-<id>-rate{rate}``."""
    return f"stage{stage}-{coreset}-rate{rate_in_path(rate)}"


def _alternatives(names) -> str:
    return "|".join(names)


@dataclass(frozen=True)
class CoresetId:
    """A pruned coreset's identity: ``random`` or ``<method>-<scorer>-<strategy>``.

    ``str(coreset_id)`` is its one format (directory names, stage model names,
    config ``extra_selections``); :meth:`parse` its one parse.
    """

    method: str
    scorer: str = NONE
    strategy: str = NONE

    #: Regular expression of every id (the Snakefile's ``{coreset}`` wildcard).
    PATTERN = (
        rf"{RANDOM}|(?:{_alternatives(SCORED_METHODS)})-{NAME_PATTERN}-{NAME_PATTERN}"
    )
    #: Regular expression of a scored coreset's id (config ``extra_selections``).
    SCORED_PATTERN = rf"(?:{_alternatives(SCORED_METHODS)})-{NAME_PATTERN}-{NAME_PATTERN}"

    def __str__(self) -> str:
        if self.method == RANDOM:
            return RANDOM
        return f"{self.method}-{self.scorer}-{self.strategy}"

    @classmethod
    def parse(cls, name: str) -> "CoresetId":
        """The id written as ``name``; ValueError unless it matches :attr:`PATTERN`."""
        if not re.fullmatch(cls.PATTERN, name):
            raise ValueError(
                f"coreset name {name!r} is not {RANDOM} or <method>-<scorer>-<strategy>"
                f" (method one of {', '.join(SCORED_METHODS)}; scorer and strategy"
                f" {NAME_PATTERN})"
            )
        if name == RANDOM:
            return cls(RANDOM)
        method, scorer, strategy = name.split("-")
        return cls(method, scorer, strategy)

    def astuple(self) -> tuple[str, str, str]:
        return self.method, self.scorer, self.strategy
