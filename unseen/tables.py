"""The tables an UNSEEN pruning study's report and figures are drawn from.

Everything here is a pure function of the tables the workflow writes, loaded as
pandas DataFrames (no figures, no HTML; :mod:`unseen.plots` draws these tables,
:mod:`unseen.report` writes them):

* ``metrics``: one row per retrained model (``method, scorer, strategy,
  pruning_rate, seed, coreset_size, n_train_total, test_accuracy,
  worst_class_accuracy, per_class_accuracy, epochs, train_samples_seen,
  wall_seconds, retrain_budget, scoring_budget, scoring_sample_epochs,
  scoring_wall_seconds, ...``; ``results/summary.parquet``, results/README.md).
* the `validated` strategy's choice files
  (``results/seed*/strategy_choice/*/rate*.json``).

Accuracies are fractions in [0, 1] unless a column or argument says points
(percentage points, 100 x the fraction). Scores follow the package convention:
higher = more important to keep (kept first).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from unseen.config import UNSCORED_METHODS
from unseen.naming import NONE
from unseen.plugins import STRATEGY_CHOICE
from unseen.strategies import strategies_needing, strategies_where

SELECTION_KEYS = ("retrain_budget", "scoring_budget", "method", "scorer", "strategy", "pruning_rate")

SUMMARY_COLUMNS = (
    *SELECTION_KEYS, "coreset_size", "n_seeds",
    "test_accuracy_mean", "test_accuracy_std",
    "worst_class_accuracy_mean", "worst_class_accuracy_std",
    "per_class_accuracy_std_mean",
    "train_steps_mean", "scoring_steps",
    "scoring_sample_epochs", "scoring_wall_seconds", "retrain_wall_seconds_mean",
)

_METHOD_LABELS = {
    "fitting": "fitting",
    "unseen": "UNSEEN",
    "unseen_single": "UNSEEN single-step",
}

#: Strategies the labels leave out: the registry's plain ones and "none" (full, random).
PLAIN_STRATEGIES = (*strategies_where(plain=True), NONE)


# --------------------------------------------------------------------------- #
# Summary table
# --------------------------------------------------------------------------- #


def selection_label(method: str, scorer: str, strategy: str) -> str:
    """Short human label for a selection, e.g. "UNSEEN el2n (ccs)".

    "full" and "random" need no scorer; other methods read "fitting <scorer>",
    "UNSEEN <scorer>", "UNSEEN single-step <scorer>", and any strategy other than
    "top"/"none" is appended in parentheses.
    """
    if method in UNSCORED_METHODS:
        base = method
    else:
        base = f"{_METHOD_LABELS.get(method, method)} {scorer}"
    if strategy in PLAIN_STRATEGIES:
        return base
    return f"{base} ({strategy})"


def per_class_matrix(per_class: pd.Series | Sequence) -> np.ndarray:
    """Stack per-class accuracy lists into a float array of shape (n_models, n_classes).

    Lists of different lengths are right-padded with NaN, the same marker a
    class without test samples already carries.
    """
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in per_class]
    if not arrays:
        return np.empty((0, 0))
    lengths = np.array([a.size for a in arrays])
    out = np.full((len(arrays), int(lengths.max())), np.nan)
    out[np.arange(out.shape[1]) < lengths[:, None]] = np.concatenate(arrays)
    return out


def _nan_row_std(matrix: np.ndarray) -> np.ndarray:
    """Population std of each row ignoring NaN; NaN for an all-NaN row (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(matrix, axis=1)


def require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise ValueError naming the ``columns`` that ``df`` (called ``name``) lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")


def _coreset_size_column(sizes) -> pd.Series:
    """Mean coreset size per group; int64 when every group's seeds agree."""
    if (sizes.nunique() <= 1).all():
        return sizes.first().astype(np.int64)
    return sizes.mean()


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of accuracy and compute for every selection.

    Args:
        metrics: one row per retrained model (see module docstring); accuracies in
            [0, 1], ``wall_seconds`` = retraining wall time in seconds,
            ``scoring_sample_epochs`` / ``scoring_wall_seconds`` = the scoring
            cost of the model's coreset (optional columns).

    Returns:
        One row per (retrain_budget, scoring_budget, method, scorer, strategy,
        pruning_rate), sorted by retrain_budget, pruning_rate, method, scorer,
        strategy, scoring_budget, with columns
        :data:`SUMMARY_COLUMNS`:
        ``coreset_size`` (int64 when all seeds of every row agree, else the float
        mean), ``n_seeds``, ``test_accuracy_mean/_std`` and
        ``worst_class_accuracy_mean/_std`` (std over seeds, ddof=1, NaN with one
        seed), ``per_class_accuracy_std_mean`` (per model the population std over
        classes of its per-class accuracies ignoring NaN, then the mean over
        seeds), ``scoring_sample_epochs`` and ``scoring_wall_seconds`` (mean over
        seeds; 0 for full/random; NaN for a scored selection whose metrics lack
        the scoring cost, so the gap stays visible), ``train_steps_mean`` (the
        retrain's SGD steps), ``scoring_steps`` (SGD steps of its scoring models),
        ``retrain_wall_seconds_mean``.

    Raises:
        ValueError: missing columns, or two rows for the same selection and seed.
    """
    model_keys = [*SELECTION_KEYS, "seed"]
    require_columns(
        metrics,
        [*model_keys, "coreset_size", "test_accuracy", "worst_class_accuracy",
         "per_class_accuracy", "wall_seconds", "train_steps"],
        "metrics",
    )
    if metrics.duplicated(model_keys).any():
        dup = metrics.loc[metrics.duplicated(model_keys), model_keys].iloc[0].to_dict()
        raise ValueError(f"metrics has more than one row for {dup}")
    compute_cols = ["scoring_sample_epochs", "scoring_wall_seconds", "scoring_steps"]
    models = metrics[model_keys + ["coreset_size", "test_accuracy", "worst_class_accuracy",
                                   "wall_seconds", "train_steps"]].copy()
    models["per_class_std"] = _nan_row_std(per_class_matrix(metrics["per_class_accuracy"]))
    for column in compute_cols:
        models[column] = metrics[column].astype(np.float64) if column in metrics else np.nan
    models.loc[models["method"].isin(UNSCORED_METHODS), compute_cols] = 0.0

    grouped = models.groupby(list(SELECTION_KEYS), sort=False, dropna=False)
    out = pd.DataFrame(
        {
            "coreset_size": _coreset_size_column(grouped["coreset_size"]),
            "n_seeds": grouped["seed"].nunique(),
            "test_accuracy_mean": grouped["test_accuracy"].mean(),
            "test_accuracy_std": grouped["test_accuracy"].std(ddof=1),
            "worst_class_accuracy_mean": grouped["worst_class_accuracy"].mean(),
            "worst_class_accuracy_std": grouped["worst_class_accuracy"].std(ddof=1),
            "per_class_accuracy_std_mean": grouped["per_class_std"].mean(),
            "train_steps_mean": grouped["train_steps"].mean(),
            "scoring_steps": grouped["scoring_steps"].mean(),
            "scoring_sample_epochs": grouped["scoring_sample_epochs"].mean(),
            "scoring_wall_seconds": grouped["scoring_wall_seconds"].mean(),
            "retrain_wall_seconds_mean": grouped["wall_seconds"].mean(),
        }
    ).reset_index()
    out = out.sort_values(
        ["retrain_budget", "pruning_rate", "method", "scorer", "strategy", "scoring_budget"],
        kind="stable",
    ).reset_index(drop=True)
    return out[list(SUMMARY_COLUMNS)]




# --------------------------------------------------------------------------- #
# Difference to random
# --------------------------------------------------------------------------- #

DIFFERENCE_COLUMNS = (*SELECTION_KEYS, "n_seeds", "difference_mean", "difference_std")


def difference_to_random_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy of every selection minus random's, paired by seed, rate and retrain budget.

    Args:
        metrics: one row per retrained model (module docstring).

    Returns:
        One row per selection (:data:`SELECTION_KEYS`) other than random, columns
        :data:`DIFFERENCE_COLUMNS`: ``difference_mean`` / ``difference_std`` are the
        mean and std (ddof=1, NaN with one seed) over seeds of ``test_accuracy -
        random's test_accuracy`` of the same seed, pruning rate and retrain budget,
        as a fraction (0.003 = 0.3 points); ``n_seeds`` counts the seeds that have
        both. The full-data model gets one row per rate and retrain budget of
        random (its own rate stays 0 in ``metrics``): how far random is below the
        full data. Empty when the run has no random coresets.
    """
    require_columns(metrics, [*SELECTION_KEYS, "seed", "test_accuracy"], "metrics")
    random = metrics[metrics["method"] == "random"]
    pairing = ["retrain_budget", "pruning_rate", "seed"]
    if random.duplicated(pairing).any():
        raise ValueError("metrics has more than one random model per seed, rate and retrain budget")
    baseline = random[pairing + ["test_accuracy"]].rename(columns={"test_accuracy": "random"})
    full = metrics[metrics["method"] == "full"].drop(columns=["retrain_budget", "pruning_rate"])
    full = full.merge(baseline[pairing], on="seed")
    others = metrics[~metrics["method"].isin(["random", "full"])]
    rows = pd.concat([full, others], ignore_index=True).merge(baseline, on=pairing)
    rows["difference"] = rows["test_accuracy"] - rows["random"]
    grouped = rows.groupby(list(SELECTION_KEYS), sort=False, dropna=False)
    out = pd.DataFrame({
        "n_seeds": grouped["seed"].nunique(),
        "difference_mean": grouped["difference"].mean(),
        "difference_std": grouped["difference"].std(ddof=1),
    }).reset_index()
    out = out.sort_values(["retrain_budget", "pruning_rate", "method", "scorer", "strategy",
                           "scoring_budget"], kind="stable").reset_index(drop=True)
    return out[list(DIFFERENCE_COLUMNS)]


# --------------------------------------------------------------------------- #
# Cost against quality
# --------------------------------------------------------------------------- #

ABLATION_KEYS = SELECTION_KEYS

ABLATION_COLUMNS = (
    *ABLATION_KEYS, "n_seeds", "test_accuracy_mean", "test_accuracy_std",
    "scoring_compute_mean", "retrain_compute_mean",
)


def budget_ablation_table(metrics: pd.DataFrame, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Accuracy and compute per (retrain budget, scoring budget, selection, pruning rate).

    The cost-quality table: of one run (one scoring budget, the report's
    ``cost_quality`` figure) or of several runs joined (one per scoring budget,
    the budget ablation of :mod:`unseen.ablation`).

    Args:
        metrics: retrain metrics rows (``results/summary.parquet``) of one or
            more runs that share seeds and data; exactly one ``full`` row per
            seed (the unit of compute), and no (selection, budgets, seed) twice.
        seeds: keep only these seeds, so that budgets run on fewer seeds than
            the main run are compared on the same seeds (None: all).

    Returns:
        One row per group, columns :data:`ABLATION_COLUMNS`:
        ``test_accuracy_mean/_std`` (fraction, std over seeds with ddof=1),
        ``scoring_compute_mean`` (training samples processed by the coreset's
        scoring models divided by those of the same seed's full-data model:
        1.0 = one full training; 0 for random), ``retrain_compute_mean`` (the
        retrain's samples processed, same unit). Sorted by retrain budget,
        pruning rate, method, scorer, strategy, scoring budget.

    Raises:
        ValueError: a seed without exactly one full-data row, or duplicate rows.
    """
    if seeds is not None:
        metrics = metrics[metrics["seed"].isin(list(seeds))]
    full = metrics[metrics["method"] == "full"]
    counts = full["seed"].value_counts()
    seeds = sorted(metrics["seed"].unique())
    if sorted(counts.index) != seeds or (counts != 1).any():
        raise ValueError(
            "budget ablation needs exactly one full-data model per seed (the unit of compute); "
            f"got {counts.to_dict()} for seeds {seeds}: pass the main run's metrics once"
        )
    pruned = metrics[metrics["method"] != "full"]
    keys = [*ABLATION_KEYS, "seed"]
    if pruned.duplicated(keys).any():
        dup = pruned.loc[pruned.duplicated(keys), keys].iloc[0].to_dict()
        raise ValueError(f"more than one metrics row for {dup}: was a run passed twice?")
    unit = full.set_index("seed")["train_samples_seen"].astype(np.float64)
    rows = pruned.assign(
        scoring_compute=pruned["scoring_sample_epochs"].astype(np.float64)
        / pruned["seed"].map(unit),
        retrain_compute=pruned["train_samples_seen"].astype(np.float64) / pruned["seed"].map(unit),
    )
    grouped = rows.groupby(list(ABLATION_KEYS), sort=False)
    out = pd.DataFrame(
        {
            "n_seeds": grouped["seed"].nunique(),
            "test_accuracy_mean": grouped["test_accuracy"].mean(),
            "test_accuracy_std": grouped["test_accuracy"].std(ddof=1),
            "scoring_compute_mean": grouped["scoring_compute"].mean(),
            "retrain_compute_mean": grouped["retrain_compute"].mean(),
        }
    ).reset_index()
    out = out.sort_values(
        ["retrain_budget", "pruning_rate", "method", "scorer", "strategy", "scoring_budget"],
        kind="stable",
    ).reset_index(drop=True)
    return out[list(ABLATION_COLUMNS)]


# --------------------------------------------------------------------------- #
# The recommended recipe against the best baseline
# --------------------------------------------------------------------------- #

#: Methods a recipe may use, preferred first: single-step UNSEEN costs K trainings, multi-step more.
RECIPE_METHODS = ("unseen_single", "unseen")
_CHOOSING_STRATEGIES = strategies_needing(STRATEGY_CHOICE)
#: Strategies a recipe may use, preferred first: those that choose on a held-out split
#: (`validated`, the configured default), then the others in registry order.
RECIPE_STRATEGIES = (*_CHOOSING_STRATEGIES,
                     *(s for s in strategies_where() if s not in _CHOOSING_STRATEGIES))
#: The baselines a recipe must beat: random and the fitting model's scores (any scorer, strategy).
BASELINE_METHODS = ("random", "fitting")

MARGIN_COLUMNS = (
    "retrain_budget", "pruning_rate", "n_seeds",
    "recipe_accuracy_mean", "recipe_accuracy_std",
    "baseline_method", "baseline_scorer", "baseline_strategy",
    "baseline_accuracy_mean", "baseline_accuracy_std",
    "margin_mean", "margin_std", "within_spread",
)


def recommended_recipe(
    selections: Iterable[tuple[str, str, str]], scorer: str
) -> tuple[str, str, str] | None:
    """The (method, scorer, strategy) the report holds against the baselines.

    The config's default recipe is UNSEEN with the first scorer and strategy
    `validated`; from the ``selections`` a run has, the first of
    :data:`RECIPE_STRATEGIES` x :data:`RECIPE_METHODS` (strategy first: single-step
    `validated`, multi-step `validated`, single-step `auto`, ...) with ``scorer``.
    None when the run has no UNSEEN selection of ``scorer``.
    """
    present = set(selections)
    for strategy in RECIPE_STRATEGIES:
        for method in RECIPE_METHODS:
            if (method, scorer, strategy) in present:
                return (method, scorer, strategy)
    return None


def recipe_margin_table(metrics: pd.DataFrame, recipe: tuple[str, str, str]) -> pd.DataFrame:
    """Per retrain budget and pruning rate: the recipe against the best baseline, paired by seed.

    Args:
        metrics: one row per retrained model (module docstring), one scoring
            budget per selection.
        recipe: (method, scorer, strategy), e.g. from :func:`recommended_recipe`.

    Returns:
        One row per (retrain_budget, pruning_rate) where the recipe and a
        baseline (:data:`BASELINE_METHODS`, any scorer and strategy) both have
        models, columns :data:`MARGIN_COLUMNS`. The best baseline is the one with
        the highest mean test accuracy over seeds (ties: the first by method,
        scorer, strategy). Accuracies are fractions with mean and std over seeds
        (ddof=1, NaN with one seed); ``margin_mean`` / ``margin_std`` are the mean
        and std over the seeds both have of the recipe's test accuracy minus
        the best baseline's (fraction; 0.002 = 0.2 points); ``n_seeds`` counts
        those seeds; ``within_spread`` is True when ``|margin_mean| <=
        margin_std`` (the margin is inside the seed spread), False when outside,
        NaN (None) with one seed.

    Raises:
        ValueError: the recipe has more than one scoring budget at a rate.
    """
    require_columns(metrics, [*SELECTION_KEYS, "seed", "test_accuracy"], "metrics")
    method, scorer, strategy = recipe
    is_recipe = ((metrics["method"] == method) & (metrics["scorer"] == scorer)
                 & (metrics["strategy"] == strategy))
    rows = []
    for (budget, rate), part in metrics[metrics["pruning_rate"] > 0].groupby(
            ["retrain_budget", "pruning_rate"], sort=True):
        mine = part[is_recipe.loc[part.index]]
        baselines = part[part["method"].isin(BASELINE_METHODS)]
        if mine.empty or baselines.empty:
            continue
        if mine["scoring_budget"].nunique() > 1:
            raise ValueError(f"recipe {recipe} has several scoring budgets at {budget}, rate {rate}")
        means = (baselines.groupby(["method", "scorer", "strategy", "scoring_budget"], sort=True)
                 ["test_accuracy"].mean())
        best = means.index[int(np.argmax(means.to_numpy()))]
        chosen = baselines[(baselines[["method", "scorer", "strategy", "scoring_budget"]]
                            .apply(tuple, axis=1) == best)]
        paired = mine.set_index("seed")["test_accuracy"].to_frame("recipe").join(
            chosen.set_index("seed")["test_accuracy"].rename("baseline"), how="inner")
        margin = paired["recipe"] - paired["baseline"]
        margin_std = float(margin.std(ddof=1)) if len(margin) > 1 else float("nan")
        margin_mean = float(margin.mean())
        rows.append({
            "retrain_budget": budget, "pruning_rate": float(rate), "n_seeds": len(paired),
            "recipe_accuracy_mean": float(mine["test_accuracy"].mean()),
            "recipe_accuracy_std": float(mine["test_accuracy"].std(ddof=1)),
            "baseline_method": best[0], "baseline_scorer": best[1], "baseline_strategy": best[2],
            "baseline_accuracy_mean": float(chosen["test_accuracy"].mean()),
            "baseline_accuracy_std": float(chosen["test_accuracy"].std(ddof=1)),
            "margin_mean": margin_mean, "margin_std": margin_std,
            "within_spread": None if np.isnan(margin_std) else bool(abs(margin_mean) <= margin_std),
        })
    return pd.DataFrame(rows, columns=list(MARGIN_COLUMNS))


# --------------------------------------------------------------------------- #
# The `validated` strategy's choices
# --------------------------------------------------------------------------- #

#: The fixed columns of :func:`strategy_choices_table`; a ``held_out_accuracy_<candidate>``
#: column per candidate strategy follows ``strategy``.
STRATEGY_CHOICES_COLUMNS = ("seed", "scores", "pruning_rate", "strategy", "held_out_size", "pool_size")


def strategy_choices_table(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The `validated` strategy's choices, one row per seed, score table and pruning rate.

    Args:
        paths: choice files ``results/seed{seed}/strategy_choice/{oof|fitting}-{scorer}/rate{rate}.json``
            (written by :func:`unseen.jobs.choose_strategy`; results/README.md).

    Returns:
        Columns ``seed`` (int64), ``scores`` (the score table: the choice file's
        folder, ``oof-<scorer>`` for UNSEEN or ``fitting-<scorer>``),
        ``pruning_rate`` (fraction removed), ``strategy`` (the chosen candidate),
        ``held_out_accuracy_<candidate>`` (float64, accuracy in [0, 1] on the
        held-out samples of the model trained on that candidate's coreset; one
        column per candidate, in the candidates' order), ``held_out_size`` and
        ``pool_size`` (int64, samples held out / selected from). Sorted by
        scores, pruning rate, seed. No files: the fixed columns only.
    """
    rows = []
    for path in paths:
        path = Path(path)
        choice = json.loads(path.read_text())
        rows.append({
            "seed": int(choice["seed"]), "scores": path.parent.name,
            "pruning_rate": float(choice["pruning_rate"]), "strategy": choice["strategy"],
            **{f"held_out_accuracy_{c}": float(choice["validation_accuracy"][c])
               for c in choice["candidates"]},
            "held_out_size": int(choice["held_out_size"]), "pool_size": int(choice["pool_size"]),
        })
    if not rows:
        return pd.DataFrame({"seed": pd.Series(dtype=np.int64), "scores": pd.Series(dtype=object),
                             "pruning_rate": pd.Series(dtype=np.float64),
                             "strategy": pd.Series(dtype=object),
                             "held_out_size": pd.Series(dtype=np.int64),
                             "pool_size": pd.Series(dtype=np.int64)})
    table = pd.DataFrame(rows)
    accuracy = [c for c in table.columns if c.startswith("held_out_accuracy_")]
    table = table[["seed", "scores", "pruning_rate", "strategy", *accuracy,
                   "held_out_size", "pool_size"]]
    return table.sort_values(["scores", "pruning_rate", "seed"], kind="stable").reset_index(drop=True)


def strategy_choices_overview(choices: pd.DataFrame) -> pd.DataFrame:
    """Per score table and rate: what `validated` chose in how many seeds, and the held-out accuracies.

    Args:
        choices: :func:`strategy_choices_table`.

    Returns:
        Columns ``scores``, ``pruning rate`` (e.g. ``30 %``), ``chosen (seeds)``
        (e.g. ``top (2), ccs (1)``) and ``held-out acc. <candidate> (%)``: each
        seed's held-out accuracy in percent, seeds in order, joined by `` / ``.
    """
    accuracy = [c for c in choices.columns if c.startswith("held_out_accuracy_")]
    rows = []
    for (scores, rate), part in choices.groupby(["scores", "pruning_rate"], sort=True):
        part = part.sort_values("seed")
        row = {"scores": scores, "pruning rate": f"{100 * rate:g} %",
               "chosen (seeds)": ", ".join(f"{s} ({n})" for s, n in
                                           part["strategy"].value_counts().items())}
        for column in accuracy:
            row[f"held-out acc. {column.removeprefix('held_out_accuracy_')} (%)"] = " / ".join(
                "" if pd.isna(v) else f"{100 * v:.1f}" for v in part[column])
        rows.append(row)
    columns = ["scores", "pruning rate", "chosen (seeds)"] + [
        f"held-out acc. {c.removeprefix('held_out_accuracy_')} (%)" for c in accuracy]
    return pd.DataFrame(rows, columns=columns)
