"""One typed spec per job kind: the job's arguments, written once.

A spec is a frozen dataclass whose fields are the job's arguments. From it come
the console script's subcommand (:func:`add_arguments` builds the argparse
options, :meth:`JobSpec.from_args` reads them back), the command line a rule
runs (:meth:`JobSpec.command`, built by the rules' one helper ``job_command`` in
``rules/common.smk``) and the call of the job (:meth:`JobSpec.run`). Adding an
argument to a job is one field here (plus its use in the job).

Field types map to options: ``str``/``int``/``float`` take one value, ``dict``
and JSON lists (``json=True``) one JSON text, ``list[str]`` any number of
values, ``bool`` a flag; a field without a default is a required option.
Field metadata makes two more kinds: ``positional=True`` (a ``list[str]`` of
positional arguments, e.g. ``aggregate``'s shards; written after the options)
and ``repeat=True`` (an option given once per item, e.g. ``--strategy-choice A
--strategy-choice B``; with ``nargs=N`` each item is a tuple of N texts, e.g.
``--model SEED PATH``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import typing
from typing import Any, ClassVar

from unseen import plugins
from unseen.budget import RETRAIN_BUDGETS
from unseen.folds import FOLD_MODES
from unseen.naming import AUTO_DEVICE, NONE
from unseen.resume import DEFAULT_EVERY_MINUTES
from unseen.subset_training import RECORD_FORMATS


def arg(help: str = "", default: Any = dataclasses.MISSING, *, choices=None, json_value=False,
        metavar=None, positional=False, repeat=False, nargs=None):
    """A spec field: its help text, default, allowed values; ``json_value``: passed as JSON text;
    ``positional``: positional arguments; ``repeat``: an option given once per item, of ``nargs``
    texts each (one when None)."""
    metadata = {"help": help, "choices": choices, "json": json_value, "metavar": metavar,
                "positional": positional, "repeat": repeat, "nargs": nargs}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def _kind(spec_type: type, field: dataclasses.Field) -> str:
    """positional, repeat, json, list, bool or scalar: how a field is written on a command line."""
    if field.metadata.get("positional"):
        return "positional"
    if field.metadata.get("repeat"):
        return "repeat"
    hint = typing.get_type_hints(spec_type)[field.name]
    origin = typing.get_origin(hint)
    if field.metadata.get("json") or hint is dict or origin is dict:
        return "json"
    if hint is bool:
        return "bool"
    if origin is list:
        return "list"
    return "scalar"


def _scalar_type(spec_type: type, field: dataclasses.Field):
    hint = typing.get_type_hints(spec_type)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (int, float) else str


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Base of every job spec: ``COMMAND`` (the subcommand) and ``HELP`` are class constants."""

    COMMAND: ClassVar[str] = ""
    HELP: ClassVar[str] = ""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One option per field (positional fields: positional arguments)."""
        kinds = {field.name: _kind(cls, field) for field in dataclasses.fields(cls)}
        if "positional" in kinds.values() and "list" in kinds.values():
            # an option of any number of values would take the positional arguments after it
            raise TypeError(f"{cls.__name__}: a list option and positional arguments in one spec")
        for field in dataclasses.fields(cls):
            kind = kinds[field.name]
            required = (field.default is dataclasses.MISSING
                        and field.default_factory is dataclasses.MISSING)
            options: dict[str, Any] = {"help": field.metadata.get("help") or None}
            if kind == "bool":
                parser.add_argument(_flag(field), action="store_true", **options)
                continue
            if field.metadata.get("metavar"):
                options["metavar"] = field.metadata["metavar"]
            if kind == "positional":
                parser.add_argument(field.name, nargs="+" if required else "*", **options)
                continue
            if required:
                options["required"] = True
            else:
                options["default"] = (field.default if field.default_factory is dataclasses.MISSING
                                      else field.default_factory())
            if field.metadata.get("choices") is not None:
                options["choices"] = field.metadata["choices"]
            if kind == "json":
                options["type"] = _json
            elif kind == "list":
                options["nargs"] = "*"
            elif kind == "repeat":
                options["action"] = "append"
                if field.metadata.get("nargs"):
                    options["nargs"] = field.metadata["nargs"]
            else:
                options["type"] = _scalar_type(cls, field)
            parser.add_argument(_flag(field), **options)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "JobSpec":
        values = {}
        for field in dataclasses.fields(cls):
            value = getattr(args, field.name)
            if _kind(cls, field) == "repeat" and field.metadata.get("nargs"):
                value = [tuple(item) for item in value]
            values[field.name] = value
        return cls(**values)

    def argv(self) -> list[str]:
        """The command-line arguments that give this spec back (:meth:`from_args`)."""
        out: list[str] = []
        positionals: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = _kind(type(self), field)
            if value is None or (kind == "bool" and not value):
                continue
            if kind == "bool":
                out.append(_flag(field))
            elif kind == "positional":
                positionals += map(str, value)
            elif kind == "repeat":
                for item in value:
                    items = item if field.metadata.get("nargs") else [item]
                    out += [_flag(field), *map(str, items)]
            elif kind == "json":
                out += [_flag(field), _as_json(value)]
            elif kind == "list":
                out += [_flag(field), *map(str, value)] if value else []
            else:
                out += [_flag(field), str(value)]
        return out + positionals

    def command(self, ranks: int = 1) -> str:
        """The shell command that runs this job (``python -m unseen COMMAND ...``), quoted.

        ``ranks`` > 1 (a training job on that many GPUs, :mod:`unseen.distributed`): torchrun
        starts one process per GPU (``--standalone``: a free port of its own, so jobs that
        share a node do not meet).
        """
        launch = ["python", "-m", "unseen"]
        if ranks > 1:
            launch = ["python", "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node", str(ranks), "-m", "unseen"]
        return shlex.join([*launch, self.COMMAND, *self.argv()])

    def run(self) -> None:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retrain(JobSpec):
    """Train a fresh model on a coreset (all training samples without one); evaluate on test."""

    COMMAND: ClassVar[str] = "retrain"
    HELP: ClassVar[str] = "train a fresh model on a coreset; evaluate on test"

    dataset_cache: str = arg("dataset .npz from prepare-data")
    coreset: str | None = arg("coreset Parquet; omit to train on all", None)
    method: str = arg("the coreset's method (config methods)")
    scorer: str = arg(f"{NONE} for full and random", NONE)
    strategy: str = arg(f"{NONE} for full and random", NONE)
    rate: float = arg("pruning rate", 0.0)
    scoring_predictions: list[str] = arg(
        "predictions.npz of every scoring model the coreset needed (its scoring cost)", [])
    retrain_budget: str = arg(
        "full_steps: the full-data model's SGD steps; epochs: train.epochs over the coreset",
        RETRAIN_BUDGETS[0], choices=RETRAIN_BUDGETS)
    model: dict = arg('JSON, e.g. {"arch": "mlp"}')
    train: dict = arg("JSON training settings")
    seed: int = arg("run seed")
    device: str = arg(f"{AUTO_DEVICE}, cpu, cuda or cuda:N", AUTO_DEVICE)
    threads: int = arg("CPU threads for torch", 1)
    state_every_minutes: float = arg(
        "write the training state every this many minutes (0: only on SIGTERM/SIGUSR1;"
        " docs: training_state.every_minutes)", DEFAULT_EVERY_MINUTES)
    metrics_json: str = arg("metrics JSON to write")
    metrics_parquet: str = arg("metrics Parquet row to write")

    def run(self) -> None:
        from unseen import jobs

        labels = {"method": self.method, "scorer": self.scorer, "strategy": self.strategy,
                  "pruning_rate": self.rate}
        jobs.retrain(
            self.dataset_cache, self.coreset, self.model, self.train, self.seed, self.device,
            self.threads, labels, self.metrics_json, self.metrics_parquet,
            list(self.scoring_predictions), self.retrain_budget, self.state_every_minutes,
        )


class JobArgumentError(SystemExit):
    """A job's arguments that contradict each other: exits naming the subcommand and the fix."""

    def __init__(self, command: str, message: str):
        super().__init__(f"unseen {command}: {message}")


def scoring_budget_value(text: str | None) -> float | str | None:
    """A ``--scoring-budget`` text as the budget: ``epochs``, a positive fraction, or None."""
    from unseen.budget import EPOCHS, check_scoring_budget

    if text is None:
        return None
    try:
        value = text if text == EPOCHS else float(text)
        check_scoring_budget(value)
    except ValueError as err:
        raise JobArgumentError("train-scoring-model", f"--scoring-budget {text}: {err}") from None
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainScoringModel(JobSpec):
    """Train a scoring model and record its predictions: fold model k (``fold``), stage model
    on S_t (``coreset``, with ``model_name``) or the fitting model (``all_samples``)."""

    COMMAND: ClassVar[str] = "train-scoring-model"
    HELP: ClassVar[str] = (
        "train a scoring model and record its predictions: fold model k (--fold),"
        " stage model on S_t (--coreset) or the fitting model (--all-samples)")

    dataset_cache: str = arg("dataset .npz from prepare-data")
    folds_table: str = arg("fold table of the run seed")
    fold: int | None = arg("fold model k: trains on fold k (paper mode)", None)
    coreset: str | None = arg("stage table of S_t: trains on it, records the rest", None)
    all_samples: bool = arg("the fitting model: trains on and records every training sample",
                            False)
    fold_mode: str = arg("which samples a fold model trains on", FOLD_MODES[0],
                         choices=FOLD_MODES)
    model_name: str | None = arg("names the model and derives its seed; default fold<k> or fitting",
                                 None)
    scoring_budget: str | None = arg(
        "fraction of the fitting model's SGD steps (e.g. 1.0), or 'epochs' (docs: budget.scoring);"
        " omitted: train.epochs as written (the fitting model)", None)
    model: dict = arg('JSON, e.g. {"arch": "mlp"}')
    train: dict = arg("JSON training settings")
    record_epochs: list = arg("JSON list of epochs", [], json_value=True)
    record_format: str = arg(
        "per-epoch record: float16 logits, per-sample statistics, or auto (by class count)",
        RECORD_FORMATS[0], choices=RECORD_FORMATS)
    seed: int = arg("run seed")
    device: str = arg(f"{AUTO_DEVICE}, cpu, cuda or cuda:N", AUTO_DEVICE)
    threads: int = arg("CPU threads for torch", 1)
    state_every_minutes: float = arg(
        "write the training state every this many minutes (0: only on SIGTERM/SIGUSR1;"
        " docs: training_state.every_minutes)", DEFAULT_EVERY_MINUTES)
    checkpoint: str = arg("model.pt to write")
    predictions: str = arg("predictions.npz to write")

    def model_identity(self) -> str:
        """The model's name (it derives the model's seed): ``model_name``, fold<k> or fitting."""
        from unseen.naming import FITTING_MODEL, fold_model_name

        trained_on = [self.fold is not None, self.coreset is not None, self.all_samples]
        if sum(trained_on) != 1:
            raise JobArgumentError(self.COMMAND, "give exactly one of --fold, --coreset and"
                                   " --all-samples (what the model trains on)")
        if self.coreset is not None and self.model_name is None:
            raise JobArgumentError(self.COMMAND, "--coreset needs --model-name (the stage model's"
                                   " name)")
        return self.model_name or (fold_model_name(self.fold) if self.fold is not None
                                   else FITTING_MODEL)

    def run(self) -> None:
        from unseen import jobs

        name = self.model_identity()
        budget = scoring_budget_value(self.scoring_budget)
        train_ids, record_ids = jobs.scoring_model_samples(
            self.folds_table, self.fold, self.fold_mode, self.coreset)
        job = jobs.ScoringModelJob(
            self.dataset_cache, self.model, self.train, list(self.record_epochs),
            self.seed, self.device, self.threads, self.checkpoint,
            self.predictions, self.record_format, budget, self.state_every_minutes,
        )
        jobs.train_scoring_model(job, train_ids, record_ids, name)


def _scorer_names() -> tuple[str, ...]:
    from unseen.scorers import SCORERS

    return tuple(sorted(SCORERS))


def _model_scorers_help(what: str) -> str:
    from unseen.scorers import scorers_needing

    return f"{what}; needed by {', '.join(scorers_needing(plugins.CHECKPOINT)) or 'no scorer'}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Score(JobSpec):
    """Score the samples one scoring model recorded, with one scorer (higher = keep first)."""

    COMMAND: ClassVar[str] = "score"
    HELP: ClassVar[str] = "score recorded predictions with one scorer"

    predictions: str = arg("predictions.npz of a scoring model")
    scorer: str = arg(f"one of {', '.join(_scorer_names())}", choices=_scorer_names(),
                      metavar="SCORER")
    options: dict = arg("JSON scorer options", {})
    seed: int = arg("run seed", 0)
    allow_seen: bool = arg("fitting baseline only: the model scores its own training samples",
                           False)
    checkpoint: str | None = arg(_model_scorers_help("model.pt"), None)
    dataset_cache: str | None = arg(_model_scorers_help("dataset .npz"), None)
    device: str = arg(_model_scorers_help("device of the scorers that run the model"),
                      AUTO_DEVICE)
    output: str = arg("score table to write (Parquet)")

    def run(self) -> None:
        from unseen import jobs

        jobs.score_shard(
            self.predictions, self.scorer, self.seed, self.output, self.allow_seen,
            self.checkpoint, self.dataset_cache, self.options, self.device,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChooseStrategy(JobSpec):
    """The `validated` strategy's choice at one rate, on a split held out of the training set."""

    COMMAND: ClassVar[str] = "choose-strategy"
    HELP: ClassVar[str] = (
        "the validated strategy's choice at one rate, on a split held out of the training set")

    dataset_cache: str = arg("dataset .npz from prepare-data")
    scores: str = arg("score table of every training sample")
    rate: float = arg("pruning rate")
    selection: dict = arg(
        "JSON config selection section (validation_candidates, validation_fraction)", {})
    retrain_budget: str = arg("how long each candidate's model trains (as a retrain)",
                              RETRAIN_BUDGETS[0], choices=RETRAIN_BUDGETS)
    model: dict = arg('JSON, e.g. {"arch": "mlp"}')
    train: dict = arg("JSON training settings")
    seed: int = arg("run seed")
    device: str = arg(f"{AUTO_DEVICE}, cpu, cuda or cuda:N", AUTO_DEVICE)
    threads: int = arg("CPU threads for torch", 1)
    state_every_minutes: float = arg(
        "write the training state every this many minutes (0: only on SIGTERM/SIGUSR1;"
        " docs: training_state.every_minutes)", DEFAULT_EVERY_MINUTES)
    output: str = arg("choice JSON to write")

    def run(self) -> None:
        from unseen import jobs

        jobs.choose_strategy(
            self.dataset_cache, self.scores, self.rate, self.selection, self.model, self.train,
            self.retrain_budget, self.seed, self.device, self.threads, self.output,
            self.state_every_minutes,
        )


def _selection_help() -> str:
    from unseen.strategies import DEFAULT_STRATEGY, STRATEGIES

    return ('JSON config "selection" section, e.g. {"strategy": NAME, "keep": "highest"} with'
            f" NAME one of {', '.join(sorted(STRATEGIES))}; missing keys take the defaults"
            f" ({DEFAULT_STRATEGY}, highest)")


def _needed_by(need: str, what: str) -> str:
    from unseen.strategies import strategies_needing

    return f"{what}; needed by {', '.join(strategies_needing(need)) or 'no strategy'}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Selection(JobSpec):
    """What every selection job reads: the rate, the selection section, the seed, the side inputs.

    There is one field per side input a strategy can declare
    (:data:`unseen.plugins.STRATEGY_NEEDS`), named like the need; a rule passes
    those its coreset's strategy needs (``rules/common.smk``: ``side_inputs``).
    """

    rate: float = arg("pruning rate")
    selection: dict = arg(_selection_help(), {})
    seed: int = arg("run seed (CCS sampling)", 0)
    class_difficulty: str | None = arg(
        _needed_by(plugins.CLASS_DIFFICULTY, "Parquet from class-difficulty"), None)
    strategy_choice: str | None = arg(
        _needed_by(plugins.STRATEGY_CHOICE, "JSON from choose-strategy"), None)
    output: str = arg("coreset or stage table to write (Parquet)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectFirstStage(_Selection):
    COMMAND: ClassVar[str] = "select-first-stage"
    HELP: ClassVar[str] = "stage 1: top M1 by aggregated score"

    scores: str = arg("aggregated out-of-fold score table")
    stages: list = arg("JSON stage fractions", json_value=True)

    def run(self) -> None:
        from unseen import jobs

        jobs.select_first_stage(
            self.scores, self.rate, self.stages, self.selection, self.output, self.seed,
            self.class_difficulty, self.strategy_choice,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectNextStage(_Selection):
    COMMAND: ClassVar[str] = "select-next-stage"
    HELP: ClassVar[str] = "stage t: add the top unselected samples"

    previous: str = arg("stage table of S_{t-1}")
    stage_scores: str = arg("the stage model's scores of the samples not yet selected")
    folds_table: str = arg("fold table (its size is the training set's)")
    stage: int = arg("the stage t (2, 3, ...)")
    stages: list = arg("JSON stage fractions", json_value=True)

    def run(self) -> None:
        from unseen import io, jobs

        n_total = len(io.read_table(self.folds_table, io.FOLDS_SCHEMA))
        jobs.select_next_stage(
            self.previous, self.stage_scores, n_total, self.rate, self.stages, self.selection,
            self.stage, self.output, self.seed, self.class_difficulty, self.strategy_choice,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectSingleStep(_Selection):
    COMMAND: ClassVar[str] = "select-single-step"
    HELP: ClassVar[str] = (
        "single-step coreset from a score table, by any strategy (the fitting baseline)")

    scores: str = arg("score table")
    id_list: str = arg("plain list of the coreset's sample ids to write")

    def run(self) -> None:
        from unseen import jobs

        jobs.select_by_scores(
            self.scores, self.rate, self.selection, self.output, self.id_list, self.seed,
            self.class_difficulty, self.strategy_choice,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrepareData(JobSpec):
    """Decode the config's dataset once into the cache file every job reads."""

    COMMAND: ClassVar[str] = "prepare-data"
    HELP: ClassVar[str] = "decode a dataset once into the cache file"

    dataset: dict = arg('JSON {"name": ..., "root": ...}')
    output: str = arg("dataset .npz to write")

    def run(self) -> None:
        from unseen import jobs

        jobs.prepare_data(self.dataset, self.output)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Split(JobSpec):
    """Assign the training samples to K stratified folds."""

    COMMAND: ClassVar[str] = "split"
    HELP: ClassVar[str] = "assign training samples to K stratified folds"

    dataset_cache: str = arg("dataset .npz from prepare-data")
    folds: int = arg("the number of folds K")
    seed: int = arg("run seed")
    output: str = arg("fold table to write (Parquet)")

    def run(self) -> None:
        from unseen import jobs

        jobs.split(self.dataset_cache, self.folds, self.seed, self.output)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassDifficulty(JobSpec):
    """Per-class error rate of the fold models on the samples they never trained on."""

    COMMAND: ClassVar[str] = "class-difficulty"
    HELP: ClassVar[str] = "per-class out-of-fold error rate"

    output: str = arg("class error table to write (Parquet)")
    predictions: list[str] = arg("fold models' predictions.npz", positional=True)

    def run(self) -> None:
        from unseen import jobs

        jobs.class_difficulty(list(self.predictions), self.output)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Aggregate(JobSpec):
    """Mean, std and count of each sample's out-of-fold scores across the fold shards."""

    COMMAND: ClassVar[str] = "aggregate"
    HELP: ClassVar[str] = "average out-of-fold scores per sample"

    output: str = arg("aggregated score table to write (Parquet)")
    shards: list[str] = arg("score tables of the fold models, one per fold", positional=True)

    def run(self) -> None:
        from unseen import jobs

        jobs.aggregate(list(self.shards), self.output)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectRandom(JobSpec):
    """The random baseline: a uniform seeded subset of the coreset size."""

    COMMAND: ClassVar[str] = "select-random"
    HELP: ClassVar[str] = "random baseline coreset"

    folds_table: str = arg("fold table (its samples are the training set)")
    rate: float = arg("pruning rate")
    seed: int = arg("run seed")
    output: str = arg("coreset to write (Parquet)")
    id_list: str = arg("plain list of the coreset's sample ids to write")

    def run(self) -> None:
        from unseen import jobs

        jobs.select_random(self.folds_table, self.rate, self.seed, self.output, self.id_list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finalize(JobSpec):
    """Publish the final stage table as the coreset."""

    COMMAND: ClassVar[str] = "finalize"
    HELP: ClassVar[str] = "publish a stage table as the coreset"

    stage_table: str = arg("stage table of the last stage")
    output: str = arg("coreset to write (Parquet)")
    id_list: str = arg("plain list of the coreset's sample ids to write")

    def run(self) -> None:
        from unseen import jobs

        jobs.finalize_coreset(self.stage_table, self.output, self.id_list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Summarize(JobSpec):
    """Every retrain's metrics in one table (Parquet and CSV)."""

    COMMAND: ClassVar[str] = "summarize"
    HELP: ClassVar[str] = "collect all retrain metrics into one table"

    output: str = arg("summary table to write (Parquet)")
    csv: str = arg("the same table as CSV, to write")
    metrics: list[str] = arg("metrics.parquet of every retrain", positional=True)

    def run(self) -> None:
        from unseen import jobs

        jobs.summarize(list(self.metrics), self.output, self.csv)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoringModels(JobSpec):
    """The regime table: how well every scoring model fits its training samples."""

    COMMAND: ClassVar[str] = "scoring-models"
    HELP: ClassVar[str] = "the regime table: how well every scoring model fits its training samples"

    output: str = arg("regime table to write (Parquet)")
    model: list[tuple[str, ...]] = arg(
        "a scoring model's predictions.npz and its run seed; repeat for every model", [],
        repeat=True, nargs=2, metavar=("SEED", "PREDICTIONS"))

    def run(self) -> None:
        from unseen import jobs

        jobs.scoring_models(list(self.model), self.output)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report(JobSpec):
    """Tables, HTML notes and figures of a run (results/report/)."""

    COMMAND: ClassVar[str] = "report"
    HELP: ClassVar[str] = "tables and figures of a run (results/report/)"

    summary: str = arg("results/summary.parquet")
    score_table: list[tuple[str, ...]] = arg(
        "a score table (KIND fitting or unseen); repeat for every seed and scorer", [],
        repeat=True, nargs=4, metavar=("SEED", "SCORER", "KIND", "PATH"))
    scorer: str = arg("scorer of the histogram and rank figures")
    per_class_rate: float | None = arg("pruning rate of the per-class figure; default: the highest", None)
    classes_from: str | None = arg("a metrics.json holding class names", None)
    scoring_models: str | None = arg("results/scoring_models.parquet (the regime table)", None)
    strategy_choice: list[str] = arg(
        "a `validated` choice file (strategy_choice/*/rate*.json); repeat for each", [],
        repeat=True, metavar="JSON")
    dataset: str | None = arg("the dataset's name, for the overview", None)
    out_dir: str = arg("folder to write the report to")

    def run(self) -> None:
        from unseen import jobs

        jobs.report(
            self.summary, list(self.score_table), self.out_dir, self.scorer, self.per_class_rate,
            self.classes_from, self.scoring_models, list(self.strategy_choice), self.dataset,
        )


#: Every job kind with a spec, by subcommand.
SPECS: dict[str, type[JobSpec]] = {
    spec.COMMAND: spec for spec in (
        PrepareData, Split, ClassDifficulty, Aggregate, SelectRandom, Finalize,
        TrainScoringModel, Score, ChooseStrategy, SelectFirstStage, SelectNextStage,
        SelectSingleStep, Retrain, Summarize, ScoringModels, Report,
    )
}
