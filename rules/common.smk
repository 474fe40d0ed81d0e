# Helpers for every rule file. Config validation, targets, job parameters.
import itertools
import json
import os
import shlex
import sys
import types

from unseen.budget import RETRAIN_BUDGETS as RETRAIN_BUDGET_NAMES
from unseen.config import coreset_names, validate_config
from unseen.data import check_dataset, dataset_fingerprint
from unseen import naming, plugins, specs
from unseen.naming import CoresetId
from unseen.preflight import invocation, preflight
from unseen.scorers import scorers_needing
from unseen.strategies import STRATEGIES, strategies_needing, strategy_needs, strategy_plugin

# One validation pass against the one schema (unseen/config.schema.yaml, package
# data): it fills in the defaults and names the key and the allowed values of
# every problem, which Snakemake's own validate() does not.
validate_config(config)
# A missing or incomplete data root stops the run here, before any job starts.
check_dataset(config["dataset"])
# What the data are (one stat per source file; every image of an ImageFolder): computed once,
# for prepare_data's params trigger and the parse-time checks.
DATASET_FINGERPRINT = dataset_fingerprint(config["dataset"])
# Damaged outputs, classes too small for the folds or a class-aware coreset, and device:
# cuda without CUDA stop it here too; once, in the main Snakemake process (unseen.preflight).
if workflow.is_main_process and invocation(sys.argv) != "other":
    preflight(config, "results", sys.argv, DATASET_FINGERPRINT)

# Jobs run this checkout's package (python -m unseen), also inside `--use-conda`
# environments that hold only the dependencies: always the same code as the
# Snakefile, which imports it from REPO_ROOT (set there).
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={shlex.quote(REPO_ROOT)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
RESULTS = "results"
SEEDS = config["seeds"]
SCORERS = config["scorers"]
METHODS = config["methods"]
RATES = [f"{rate:g}" for rate in config["pruning_rates"]]
FOLDS = list(range(config["folds"]["k"]))
# {unseen_method} is unseen (the stages of `stages`) or unseen_single (one step).
# A coreset id's wildcards ({unseen_method}-{scorer}-{strategy}, written by naming.CoresetId)
UNSEEN_CORESET = str(CoresetId("{unseen_method}", "{scorer}", "{strategy}"))
FITTING_CORESET = str(CoresetId(naming.FITTING, "{scorer}", "{strategy}"))
STAGE_DIR = f"{RESULTS}/seed{{seed}}/coresets/{UNSEEN_CORESET}/rate{{rate}}"
CONDA_ENV_FILE = "../workflow/envs/unseen.yaml"
CORESET_NAMES = coreset_names(config)
REPORT_SCORER = config["report"]["scorer"] or SCORERS[0]
REPORT_DIR = f"{RESULTS}/report"
STRATEGY_PATTERN = "|".join(sorted(STRATEGIES))
RETRAIN_BUDGET_PATTERN = "|".join(RETRAIN_BUDGET_NAMES)
TRAIN = config["resources"]["train"]
LIGHT = config["resources"]["light"]
# What a SLURM profile places a job by (config resources.train / resources.light): every
# training job declares TRAIN_RESOURCES, every light job LIGHT_RESOURCES.
TRAIN_RESOURCES = {key: TRAIN[key] for key in ("mem_mb", "runtime", "gpu")}
LIGHT_RESOURCES = {key: LIGHT[key] for key in ("mem_mb", "runtime")}
RETRAIN_BUDGETS = config["budget"]["retrain"]
# How often a training job writes its state (unseen.resume); passed in the command only (not in
# job_settings), so changing it reruns nothing.
STATE_EVERY_MINUTES = config["training_state"]["every_minutes"]


def as_json(obj):
    """Compact JSON for a shell argument (quote it with :q in the rule)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def score_resource(key):
    """Scorers that need the model's checkpoint run it (unseen.plugins): give their score jobs
    the training resources."""
    return lambda wildcards: (
        TRAIN if wildcards.scorer in scorers_needing(plugins.CHECKPOINT) else LIGHT
    ).get(key, 0)


def model_spec(section):
    """The model a config section (scoring_model, final_model) trains: its arch and options."""
    return {"arch": config[section]["arch"], "options": config[section]["options"]}


def stages_of(method):
    """Stage fractions of an UNSEEN method: single-step is one stage of the full target."""
    return [1.0] if method == naming.UNSEEN_SINGLE else config["stages"]


def stage_fractions(wildcards):
    return stages_of(wildcards.unseen_method)


def class_difficulty_path(seed):
    """The out-of-fold class error table of a seed (rules/folds.smk)."""
    return f"{RESULTS}/seed{seed}/class_difficulty.parquet"


def strategy_choice_path(seed, method, scorer, rate):
    """The choice file a `validated` coreset of ``method`` reads (rules/validation.smk)."""
    kind = "fitting" if method == naming.FITTING else "oof"
    return f"{RESULTS}/seed{seed}/strategy_choice/{kind}-{scorer}/rate{rate}.json"


def side_input_path(need, seed, method, scorer, rate):
    """The file behind a strategy's side input (unseen.plugins.STRATEGY_NEEDS)."""
    if need == plugins.CLASS_DIFFICULTY:
        return class_difficulty_path(seed)
    if need == plugins.STRATEGY_CHOICE:
        return strategy_choice_path(seed, method, scorer, rate)
    raise ValueError(f"no file for side input {need!r}")


def side_inputs(method):
    """The side inputs the coreset's strategy declares it needs (its registry entry), by need."""

    def inputs(wildcards):
        return {
            need: side_input_path(need, wildcards.seed, method, wildcards.scorer, wildcards.rate)
            for need in sorted(strategy_plugin(wildcards.strategy).needs)
        }

    return inputs


def job_settings(settings):
    """A params entry for Snakemake's params trigger: the settings a job's spec takes from the
    config and the wildcards, as JSON.

    Every spec command below is a function of the job's input, output or threads, and
    Snakemake leaves such "derived" params out of its params trigger; without this entry a
    changed setting (final_model.train, selection options, ...) would rerun nothing. Paths
    and threads are left out of it, as they were of the rules' params before the specs.
    """
    return lambda wildcards: as_json(settings(wildcards))


def selection_settings(wildcards):
    """What every selection spec (unseen.specs) takes from a coreset's wildcards and the config:
    rate, selection section with the coreset's strategy, seed (and a stage job's fractions)."""
    settings = dict(
        rate=float(wildcards.rate),
        selection={**config["selection"], "strategy": wildcards.strategy},
        seed=int(wildcards.seed),
    )
    if hasattr(wildcards, "unseen_method"):
        settings["stages"] = stage_fractions(wildcards)
    return settings


def side_input_fields(input):
    """The strategy's side inputs (unseen.plugins.STRATEGY_NEEDS) as spec fields, named like the need."""
    return {need: getattr(input, need) for need in plugins.STRATEGY_NEEDS if hasattr(input, need)}


def select_first_stage_command(wildcards, input, output):
    return job_command(specs.SelectFirstStage(
        scores=one(input.scores), output=one(output), **side_input_fields(input),
        **selection_settings(wildcards),
    ))


def select_next_stage_command(wildcards, input, output):
    return job_command(specs.SelectNextStage(
        previous=one(input.previous), stage_scores=one(input.scores), folds_table=one(input.folds),
        stage=int(wildcards.stage), output=one(output), **side_input_fields(input),
        **selection_settings(wildcards),
    ))


def select_single_step_command(wildcards, input, output):
    return job_command(specs.SelectSingleStep(
        scores=one(input.scores), output=output.parquet, id_list=output.ids,
        **side_input_fields(input), **selection_settings(wildcards),
    ))


def all_coresets():
    return expand(
        f"{RESULTS}/seed{{seed}}/coresets/{{coreset}}/rate{{rate}}/coreset.parquet",
        seed=SEEDS,
        coreset=CORESET_NAMES,
        rate=RATES,
    )


def all_metrics():
    pruned = expand(
        f"{RESULTS}/seed{{seed}}/retrain/{{retrain_budget}}/{{coreset}}/rate{{rate}}/metrics.parquet",
        seed=SEEDS,
        retrain_budget=RETRAIN_BUDGETS,
        coreset=CORESET_NAMES,
        rate=RATES,
    )
    full = expand(f"{RESULTS}/seed{{seed}}/retrain/full/metrics.parquet", seed=SEEDS)
    return pruned + (full if "full" in METHODS else [])


def previous_stage(wildcards):
    base = STAGE_DIR.format(**wildcards)
    prev = int(wildcards.stage) - 1
    return {
        "previous": f"{base}/stage{prev}.parquet",
        "scores": f"{base}/stage{prev}/scores.parquet",
    }


def scoring_predictions(wildcards):
    """Predictions of every scoring model a coreset needed (its scoring cost).

    A `validated` coreset also needed its strategy choice: the candidates' training counts too.
    """
    method, scorer, strategy = CoresetId.parse(wildcards.coreset).astuple()
    seed_dir = f"{RESULTS}/seed{wildcards.seed}"
    if method == naming.RANDOM:
        return []
    choice = (
        [strategy_choice_path(wildcards.seed, method, scorer, wildcards.rate)]
        if strategy_needs(strategy, plugins.STRATEGY_CHOICE) else []
    )
    if method == naming.FITTING:
        return [f"{seed_dir}/fitting/predictions.npz"] + choice
    folds = [f"{seed_dir}/folds/fold{k}/predictions.npz" for k in FOLDS]
    base = f"{seed_dir}/coresets/{wildcards.coreset}/rate{wildcards.rate}"
    stages = [f"{base}/stage{t}/predictions.npz" for t in range(1, len(stages_of(method)))]
    return folds + stages + choice


def all_scoring_models():
    """(run seed, predictions.npz) of every scoring model the run trains, sorted, for the regime table."""
    models = set()
    for seed, coreset, rate in itertools.product(SEEDS, CORESET_NAMES, RATES):
        wildcards = types.SimpleNamespace(seed=seed, coreset=coreset, rate=rate)
        models.update((seed, path) for path in scoring_predictions(wildcards) if path.endswith(".npz"))
    return sorted(models)


def all_strategy_choices():
    """Every `validated` choice file of the run, sorted, for the report's strategy_choices table."""
    return sorted({
        strategy_choice_path(seed, method, scorer, rate)
        for seed, coreset, rate in itertools.product(SEEDS, CORESET_NAMES, RATES)
        for method, scorer, strategy in [CoresetId.parse(coreset).astuple()]
        if strategy in strategies_needing(plugins.STRATEGY_CHOICE)
    })


def one(files):
    """The one path of a rule's input or output item (a single file or a one-file list)."""
    return files if isinstance(files, str) else files[0]


def job_command(spec, resources=None):
    """The shell command of a job from its typed spec (unseen.specs), quoted: every rule with a
    spec builds its command here, so each job's argument list is written once, in its spec.

    A training job passes its ``resources``: with ``gpu: N`` > 1 (resources.train.gpu, or the
    profile's set-resources of its rule) it trains data-parallel on N ranks, one per GPU
    (torchrun; unseen.distributed)."""
    return spec.command(ranks=max(1, int(getattr(resources, "gpu", 0) or 0)))


def retrain_settings(wildcards):
    """A coreset's retrain (config final_model) as spec settings: model, training, seed, device,
    the coreset's labels (from its id) and retrain budget."""
    coreset = CoresetId.parse(wildcards.coreset)
    return dict(
        retrain_full_settings(wildcards), method=coreset.method, scorer=coreset.scorer,
        strategy=coreset.strategy, rate=float(wildcards.rate),
        retrain_budget=wildcards.retrain_budget,
    )


def retrain_full_settings(wildcards):
    """The full baseline's retrain: every training sample, no coreset."""
    return dict(
        model=model_spec("final_model"),
        train=config["final_model"]["train"], seed=int(wildcards.seed), device=config["device"],
        method=naming.FULL,
    )


def retrain_command(wildcards, input, output, threads, resources):
    """A coreset's retrain: its settings plus the coreset, the dataset and its scoring cost."""
    return job_command(specs.Retrain(
        dataset_cache=one(input.data), coreset=input.coreset, scoring_predictions=list(input.scoring),
        threads=threads, metrics_json=output.json, metrics_parquet=output.parquet,
        state_every_minutes=STATE_EVERY_MINUTES, **retrain_settings(wildcards),
    ), resources)


def retrain_full_command(wildcards, input, output, threads, resources):
    return job_command(specs.Retrain(
        dataset_cache=one(input.data), threads=threads, metrics_json=output.json,
        metrics_parquet=output.parquet, state_every_minutes=STATE_EVERY_MINUTES,
        **retrain_full_settings(wildcards),
    ), resources)


def scoring_model_settings(wildcards):
    """What every scoring model's training job takes from the config (scoring_model, record_*),
    the run seed and the device; the rules add what it trains on."""
    return dict(
        model=model_spec("scoring_model"),
        train=config["scoring_model"]["train"], record_epochs=config["record_epochs"],
        record_format=config["record_format"], seed=int(wildcards.seed), device=config["device"],
    )


def fold_model_settings(wildcards):
    """Fold model k: trains on fold k (folds.mode) for budget.scoring of the fitting model's steps."""
    return dict(scoring_model_settings(wildcards), fold=int(wildcards.fold),
                fold_mode=config["folds"]["mode"], scoring_budget=str(config["budget"]["scoring"]))


def fitting_model_settings(wildcards):
    """The fitting model: every training sample, train.epochs as written (the budgets' reference)."""
    return dict(scoring_model_settings(wildcards), all_samples=True)


def stage_model_settings(wildcards):
    """Stage model t of an UNSEEN coreset: trains on S_t (its stage table, an input)."""
    coreset = CoresetId(wildcards.unseen_method, wildcards.scorer, wildcards.strategy)
    return dict(scoring_model_settings(wildcards), scoring_budget=str(config["budget"]["scoring"]),
                model_name=naming.stage_model_name(wildcards.stage, coreset, wildcards.rate))


def scoring_model_command(settings):
    """The command of a scoring model's training job with ``settings`` (unseen.specs.TrainScoringModel)."""

    def command(wildcards, input, output, threads, resources):
        return job_command(specs.TrainScoringModel(
            dataset_cache=one(input.data), folds_table=one(input.folds),
            coreset=one(input.coreset) if hasattr(input, "coreset") else None,
            threads=threads, checkpoint=output.checkpoint, predictions=output.predictions,
            state_every_minutes=STATE_EVERY_MINUTES, **settings(wildcards),
        ), resources)

    return command


def score_settings(wildcards):
    """A score job's settings: the scorer, its options (scorer_options), the run seed, the device."""
    return dict(scorer=wildcards.scorer, options=config["scorer_options"].get(wildcards.scorer, {}),
                seed=int(wildcards.seed), device=config["device"])


def fitting_score_settings(wildcards):
    """The fitting baseline's scores: its model scores its own training samples, by design."""
    return dict(score_settings(wildcards), allow_seen=True)


def score_command(settings):
    """The command of a score job with ``settings`` (unseen.specs.Score)."""

    def command(wildcards, input, output):
        return job_command(specs.Score(
            predictions=one(input.predictions), checkpoint=one(input.checkpoint),
            dataset_cache=one(input.data), output=one(output), **settings(wildcards),
        ))

    return command


def choice_settings(wildcards):
    """A `validated` choice: the final model's training under the first retrain budget, the
    selection options but the strategy list (adding a strategy retrains no choice)."""
    skip = ("strategy", "priority_lambda")
    return dict(
        rate=float(wildcards.rate),
        selection={k: v for k, v in config["selection"].items() if k not in skip},
        retrain_budget=RETRAIN_BUDGETS[0],
        model=model_spec("final_model"),
        train=config["final_model"]["train"], seed=int(wildcards.seed), device=config["device"],
    )


def choose_strategy_command(wildcards, input, output, threads, resources):
    return job_command(specs.ChooseStrategy(
        dataset_cache=one(input.data), scores=one(input.scores), threads=threads, output=one(output),
        state_every_minutes=STATE_EVERY_MINUTES, **choice_settings(wildcards),
    ), resources)


def score_table_inputs(wildcards):
    """Score tables of every seed and grid scorer: fitting and out-of-fold (UNSEEN)."""
    tables = {}
    if naming.FITTING in METHODS:
        tables["fitting"] = expand(
            f"{RESULTS}/seed{{seed}}/scores/fitting/{{scorer}}.parquet", seed=SEEDS, scorer=SCORERS
        )
    if set(naming.UNSEEN_METHODS) & set(METHODS):
        tables["unseen"] = expand(
            f"{RESULTS}/seed{{seed}}/scores/oof/{{scorer}}.parquet", seed=SEEDS, scorer=SCORERS
        )
    return tables


def prepare_data_command(wildcards, output):
    """The dataset cache's job (unseen.specs.PrepareData). A function of ``output``, so a
    "derived" param: where the data are (dataset.root) is no rerun trigger; rules/data.smk
    names what the data are in params Snakemake's params trigger sees."""
    return job_command(specs.PrepareData(dataset=config["dataset"], output=one(output)))


def split_settings(wildcards):
    """The fold split's settings: folds.k and the run seed."""
    return dict(folds=config["folds"]["k"], seed=int(wildcards.seed))


def split_command(wildcards, input, output):
    return job_command(specs.Split(dataset_cache=one(input), output=one(output),
                                   **split_settings(wildcards)))


def aggregate_command(wildcards, input, output):
    """The out-of-fold aggregate of one scorer: its fold shards (unseen.specs.Aggregate)."""
    return job_command(specs.Aggregate(output=one(output), shards=list(input)))


def class_difficulty_command(wildcards, input, output):
    """Per-class out-of-fold error rate from the fold models' predictions."""
    return job_command(specs.ClassDifficulty(output=one(output), predictions=list(input)))


def select_random_settings(wildcards):
    """The random baseline's settings: the rate and run seed of its wildcards."""
    return dict(rate=float(wildcards.rate), seed=int(wildcards.seed))


def select_random_command(wildcards, input, output):
    return job_command(specs.SelectRandom(
        folds_table=one(input), output=output.parquet, id_list=output.ids,
        **select_random_settings(wildcards),
    ))


def finalize_command(wildcards, input, output):
    """Publish an UNSEEN coreset's last stage (unseen.specs.Finalize)."""
    return job_command(specs.Finalize(stage_table=one(input), output=output.parquet,
                                      id_list=output.ids))


def summarize_command(wildcards, input, output):
    return job_command(specs.Summarize(output=output.parquet, csv=output.csv, metrics=list(input)))


def scoring_models_command(wildcards, input, output):
    """The regime table: (run seed, predictions.npz) of every scoring model, in
    all_scoring_models() order (the rule's input)."""
    return job_command(specs.ScoringModels(
        output=one(output),
        model=[(str(seed), path) for (seed, _), path in zip(all_scoring_models(), input)],
    ))


def report_settings(wildcards):
    """What the report takes from the config: the figures' scorer (report.scorer, else the first
    scorer), report.per_class_rate and the dataset's name."""
    rate = config["report"]["per_class_rate"]
    return dict(scorer=REPORT_SCORER, per_class_rate=None if rate is None else float(rate),
                dataset=config["dataset"]["name"])


def report_command(wildcards, input, output):
    """The report job (unseen.specs.Report): score tables as (seed, scorer, kind, path) in
    score_table_inputs order, every `validated` choice file, the report folder."""
    tables = [
        (str(seed), scorer, kind, path)
        for kind in score_table_inputs(wildcards)
        for (seed, scorer), path in zip(itertools.product(SEEDS, SCORERS), input[kind])
    ]
    return job_command(specs.Report(
        summary=one(input.summary), score_table=tables, classes_from=one(input.classes),
        scoring_models=one(input.scoring_models), strategy_choice=list(input.choices),
        out_dir=os.path.dirname(output.summary_parquet), **report_settings(wildcards),
    ))
