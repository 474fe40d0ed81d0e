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
from unseen.strategies import STRATEGIES

# One validation pass against the one schema (unseen/config.schema.yaml, package
# data): it fills in the defaults and names the key and the allowed values of
# every problem, which Snakemake's own validate() does not.
validate_config(config)
# A missing or incomplete data root stops the run here, before any job starts.
check_dataset(config["dataset"])
# So do damaged outputs, classes too small for the folds or a class-aware coreset,
# and device: cuda without CUDA; once, in the main Snakemake process (unseen.preflight).
if workflow.is_main_process and invocation(sys.argv) != "other":
    preflight(config, "results", sys.argv)

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
RETRAIN_BUDGETS = config["budget"]["retrain"]


def as_json(obj):
    """Compact JSON for a shell argument (quote it with :q in the rule)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def model_json(section):
    return as_json(
        {"arch": config[section]["arch"], "options": config[section]["options"]}
    )


def train_json(section):
    return as_json(config[section]["train"])


def score_resource(key):
    """Scorers that need the model's checkpoint run it (unseen.plugins): give their score jobs
    the training resources."""
    return lambda wildcards: (
        TRAIN if wildcards.scorer in plugins.scorers_needing(plugins.CHECKPOINT) else LIGHT
    ).get(key, 0)


def choice_selection_json():
    """What a strategy choice depends on: the selection options but the strategy list.

    Adding a strategy to `selection.strategy` then does not retrain the choices.
    """
    skip = ("strategy", "priority_lambda")
    return as_json({k: v for k, v in config["selection"].items() if k not in skip})


def stages_of(method):
    """Stage fractions of an UNSEEN method: single-step is one stage of the full target."""
    return [1.0] if method == naming.UNSEEN_SINGLE else config["stages"]


def stage_fractions(wildcards):
    return stages_of(wildcards.unseen_method)


def scorer_options(wildcards):
    return as_json(config["scorer_options"].get(wildcards.scorer, {}))


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
            for need in sorted(plugins.strategy(wildcards.strategy).needs)
        }

    return inputs


def selection_fields(wildcards, input):
    """What every selection spec (unseen.specs) takes from a coreset's wildcards and inputs:
    rate, selection section with the coreset's strategy, seed and the strategy's side inputs."""
    return dict(
        rate=float(wildcards.rate),
        selection={**config["selection"], "strategy": wildcards.strategy},
        seed=int(wildcards.seed),
        **{need: getattr(input, need) for need in plugins.STRATEGY_NEEDS if hasattr(input, need)},
    )


def select_first_stage_command(wildcards, input, output):
    return job_command(specs.SelectFirstStage(
        scores=one(input.scores), stages=stage_fractions(wildcards), output=one(output),
        **selection_fields(wildcards, input),
    ))


def select_next_stage_command(wildcards, input, output):
    return job_command(specs.SelectNextStage(
        previous=one(input.previous), stage_scores=one(input.scores), folds_table=one(input.folds),
        stage=int(wildcards.stage), stages=stage_fractions(wildcards), output=one(output),
        **selection_fields(wildcards, input),
    ))


def select_single_step_command(wildcards, input, output):
    return job_command(specs.SelectSingleStep(
        scores=one(input.scores), output=output.parquet, id_list=output.ids,
        **selection_fields(wildcards, input),
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
        if plugins.strategy_needs(strategy, plugins.STRATEGY_CHOICE) else []
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
        for method, scorer, strategy in [parse_coreset_name(coreset)]
        if plugins.strategy_needs(strategy, plugins.STRATEGY_CHOICE)
    })


def scoring_model_args(wildcards, input):
    """--model SEED PATH for every scoring model (input in all_scoring_models() order)."""
    return " ".join(
        f"--model {seed} {shlex.quote(path)}"
        for (seed, _), path in zip(all_scoring_models(), input)
    )


def one(files):
    """The one path of a rule's input or output item (a single file or a one-file list)."""
    return files if isinstance(files, str) else files[0]


def job_command(spec):
    """The shell command of a job from its typed spec (unseen.specs), quoted: every rule with a
    spec builds its command here, so each job's argument list is written once, in its spec."""
    return spec.command()


def retrain_spec(wildcards, input, output, threads, **trained_on):
    """A retrain of the final model (config final_model); ``trained_on``: its coreset fields."""
    return specs.Retrain(
        dataset_cache=one(input.data), model={"arch": config["final_model"]["arch"],
                                         "options": config["final_model"]["options"]},
        train=config["final_model"]["train"], seed=int(wildcards.seed), device=config["device"],
        threads=threads, metrics_json=output.json, metrics_parquet=output.parquet, **trained_on,
    )


def retrain_command(wildcards, input, output, threads):
    """A coreset's retrain: the coreset, its labels (from its id), budget and scoring cost."""
    coreset = CoresetId.parse(wildcards.coreset)
    return job_command(retrain_spec(
        wildcards, input, output, threads, coreset=input.coreset, method=coreset.method,
        scorer=coreset.scorer, strategy=coreset.strategy, rate=float(wildcards.rate),
        retrain_budget=wildcards.retrain_budget, scoring_predictions=list(input.scoring),
    ))


def retrain_full_command(wildcards, input, output, threads):
    """The full baseline: every training sample, no coreset."""
    return job_command(retrain_spec(wildcards, input, output, threads, method=naming.FULL))


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


def score_table_args(wildcards, input):
    """--score-table SEED SCORER KIND PATH for each table, in expand() order."""
    return " ".join(
        f"--score-table {seed} {scorer} {kind} {shlex.quote(path)}"
        for kind in score_table_inputs(wildcards)
        for (seed, scorer), path in zip(itertools.product(SEEDS, SCORERS), input[kind])
    )
