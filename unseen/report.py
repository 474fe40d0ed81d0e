"""The report job: every table, figure and HTML note of one run in ``results/report/``.

Orchestration only: the tables come from :mod:`unseen.tables` and
:mod:`unseen.diagnostics`, the figures from :mod:`unseen.plots`, the regime
sentences from :mod:`unseen.regime`; this module reads nothing but what it is
given and writes the files (results/README.md lists them). Imports point one
way: report -> plots -> tables.

Accuracies are fractions in [0, 1] in the tables and percent or points
(percentage points) in the HTML; scores follow the package convention:
higher = more important to keep (kept first).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from unseen.budget import RETRAIN_BUDGETS
from unseen.config import SCORED_METHODS, UNSCORED_METHODS
from unseen.diagnostics import aligned_ranks, diagnostics_table
from unseen.io import SCORING_MODELS_SCHEMA, atomic_path
from unseen.naming import FULL, NONE, RANDOM
from unseen.plots import (
    placeholder_plot,
    plot_accuracy_vs_rate,
    plot_cost_quality,
    plot_per_class_accuracy,
    plot_rank_stability,
    plot_score_histograms,
)
from unseen.regime import FITTED_TRAIN_ACCURACY, regime_sentences, regime_summary
from unseen.strategies import CLASS_AWARE_STRATEGIES, DEFAULT_STRATEGY
from unseen.tables import (
    RECIPE_STRATEGIES,
    budget_ablation_table,
    difference_to_random_table,
    recipe_margin_table,
    recommended_recipe,
    selection_label,
    strategy_choices_overview,
    strategy_choices_table,
    summary_table,
)

REPORT_TABLES = ("summary", "diagnostics", "scoring_models", "strategy_choices")
REPORT_FIGURES = ("accuracy_vs_rate", "cost_quality", "score_histograms", "rank_stability",
                  "per_class_accuracy")
REPORT_NOTES = ("overview", "regime", "strategy_choices_note")
_UNSEEN_PREFERENCE = ("unseen", "unseen_single", "fitting")


def per_class_selections(
    available: Sequence[tuple[str, str, str]], scorer: str
) -> list[tuple[str, str, str]]:
    """The (method, scorer, strategy) triples the per-class figure compares.

    Hard-class priority against class-balanced (plus top) for ``scorer`` under
    the first of unseen, unseen_single, fitting that has both; without such a
    pair, the top-strategy coresets of ``scorer``. Random and full are added
    as references when present.
    """
    present = set(available)
    chosen: list[tuple[str, str, str]] = []
    for method in _UNSEEN_PREFERENCE:
        pair = [(method, scorer, strategy) for strategy in CLASS_AWARE_STRATEGIES]
        if all(p in present for p in pair):
            chosen = [s for s in [(method, scorer, DEFAULT_STRATEGY), *pair] if s in present]
            break
    if not chosen:
        chosen = [(m, scorer, DEFAULT_STRATEGY) for m in SCORED_METHODS
                  if (m, scorer, DEFAULT_STRATEGY) in present]
    references = [s for s in [(RANDOM, NONE, NONE), (FULL, NONE, NONE)] if s in present]
    return references + chosen


# --------------------------------------------------------------------------- #
# HTML notes
# --------------------------------------------------------------------------- #


def _points(fraction: float) -> str:
    """A signed difference of accuracies (fraction) in points, two decimals: ``+0.22``."""
    return f"{100 * fraction:+.2f}"


def _percent(mean: float, std: float) -> str:
    """Accuracy (fraction) in percent, two decimals, ``± std`` when the std is defined."""
    return f"{100 * mean:.2f}" if pd.isna(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _rate(rate: float) -> str:
    return f"{100 * rate:g} %"


def margin_sentences(margins: pd.DataFrame) -> list[str]:
    """Plain sentences on :func:`unseen.tables.recipe_margin_table`: where a margin is noise.

    One per row whose margin is inside the seed spread (a tie) or below the
    baseline by more than it; one for the whole table when it has one seed
    (no spread: no margin can be told from noise).
    """
    if margins.empty:
        return []
    if (margins["n_seeds"] < 2).all():
        return ["One seed: there is no spread over seeds, so none of these margins can be told "
                "from seed-to-seed noise (list more seeds in the config to measure it)."]
    lines = []
    for row in margins.itertuples():
        where = f"At {_rate(row.pruning_rate)} ({row.retrain_budget})"
        baseline = selection_label(row.baseline_method, row.baseline_scorer, row.baseline_strategy)
        spread = f"{100 * row.margin_std:.2f} points over {row.n_seeds} seeds"
        if row.within_spread:
            lines.append(f"{where} the margin, {_points(row.margin_mean)} points, is inside the "
                         f"seed spread (std {spread}): the recipe and {baseline} cannot be told "
                         "apart.")
        elif row.margin_mean < 0:
            lines.append(f"{where} the recipe is below {baseline} by "
                         f"{-100 * row.margin_mean:.2f} points, more than the seed spread "
                         f"(std {spread}).")
    return lines


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="")


def overview_html(
    metrics: pd.DataFrame, regime: pd.DataFrame, scorer: str, dataset: str | None = None
) -> str:
    """The summary block at the top of the report (``overview.html``).

    Args:
        metrics: one row per retrained model (``results/summary.parquet``).
        regime: the regime table (``results/scoring_models.parquet``).
        scorer: the report scorer; the recipe uses it.
        dataset: the dataset's name (config ``dataset.name``), or None.

    Says the dataset, N (training samples), K (fold models per seed, from the
    regime table), seeds, the scoring and retrain budgets, the fitting model's
    training accuracy and the fold models' out-of-fold accuracy, the
    recommended recipe (:func:`unseen.tables.recommended_recipe`: which one and
    why) and its margin over the best baseline at each rate and retrain budget
    with the std over seeds of the paired margin
    (:func:`unseen.tables.recipe_margin_table`), and a plain sentence where a
    margin is inside the seed spread (:func:`margin_sentences`).
    """
    seeds = sorted(int(s) for s in metrics["seed"].unique())
    n_train = sorted(int(n) for n in metrics["n_train_total"].unique()) if len(metrics) else []
    folds = regime[regime["kind"] == "fold"]
    k = len(folds) // max(folds["seed"].nunique(), 1) if len(folds) else 0
    scored = metrics[metrics["method"].isin(SCORED_METHODS)]
    scoring_budgets = sorted(set(scored["scoring_budget"]) - {"none"})
    retrain_budgets = [b for b in RETRAIN_BUDGETS if b in set(scored["retrain_budget"])] or sorted(
        set(metrics["retrain_budget"]))
    facts = [
        f"Data: {html.escape(dataset or 'the configured dataset')}, N = "
        f"{', '.join(f'{n:,}' for n in n_train) or '?'} training samples, "
        f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))}).",
        f"K = {k} fold models per seed." if k else "No fold models (no UNSEEN method in this run).",
        "Scoring budget: " + (", ".join(scoring_budgets) or "none")
        + " (each fold and stage model's SGD steps as a multiple of the fitting model's; "
        "<code>epochs</code>: its own epochs); retrain budget: " + ", ".join(retrain_budgets) + ".",
    ]
    summary = regime_summary(regime) if len(regime) else {"by_kind": {}, "fitted": None}
    kinds = summary["by_kind"]
    if "fitting" in kinds:
        fitted = summary["fitted"]  # every seed, as regime.html's warning reads it
        facts.append(
            f"Fitting model: {kinds['fitting']['train_accuracy']:.2%} training accuracy on its "
            f"un-augmented training samples (mean over seeds; "
            f"{'fitted' if fitted else 'not fitted in every seed'}: the paper's regime starts at "
            f"{FITTED_TRAIN_ACCURACY:.0%}).")
    if "fold" in kinds:
        facts.append(
            f"Fold models: {kinds['fold']['scored_accuracy']:.2%} out-of-fold accuracy on the "
            f"samples they score ({kinds['fold']['train_accuracy']:.2%} on their own training "
            "samples).")
    selections = set(metrics[["method", "scorer", "strategy"]].itertuples(index=False, name=None))
    recipe = recommended_recipe(selections, scorer)
    parts = ["<h3>At a glance</h3>\n<ul>\n"
             + "".join(f"<li>{line}</li>\n" for line in facts) + "</ul>\n"]
    if recipe is None:
        parts.append(f"<p>No UNSEEN selection of {html.escape(scorer)} in this run: no recipe "
                     "to hold against the baselines.</p>\n")
        return "".join(parts)
    preferred = RECIPE_STRATEGIES[0]
    why = ("the config's default recipe" if recipe[2] == preferred
           else f"no <code>{preferred}</code> selection in this run, so the first of "
                f"{', '.join(RECIPE_STRATEGIES)} that it has")
    parts.append(f"<p>Recipe: <b>{html.escape(selection_label(*recipe))}</b> ({why}; "
                 "single-step UNSEEN before multi-step, which costs more).</p>\n")
    margins = recipe_margin_table(metrics, recipe)
    if margins.empty:
        parts.append("<p>No random or fitting coresets to hold the recipe against.</p>\n")
        return "".join(parts)
    shown = pd.DataFrame({
        "retrain budget": margins["retrain_budget"],
        "pruning rate": [_rate(r) for r in margins["pruning_rate"]],
        "recipe (%)": [_percent(m, s) for m, s in
                       zip(margins["recipe_accuracy_mean"], margins["recipe_accuracy_std"])],
        "best baseline": [selection_label(m, s, t) for m, s, t in zip(
            margins["baseline_method"], margins["baseline_scorer"], margins["baseline_strategy"])],
        "baseline (%)": [_percent(m, s) for m, s in
                         zip(margins["baseline_accuracy_mean"], margins["baseline_accuracy_std"])],
        "margin (points)": [_points(m) + ("" if pd.isna(s) else f" ± {100 * s:.2f}")
                            for m, s in zip(margins["margin_mean"], margins["margin_std"])],
        "seeds": margins["n_seeds"],
    })
    parts.append("<p>The recipe against the best baseline (random or fitting, any scorer and "
                 "strategy, by mean test accuracy) at each rate; margin = recipe − baseline, "
                 "mean ± std over seeds of the per-seed difference.</p>\n")
    parts.append(_table_html(shown) + "\n")
    parts.extend(f"<p>{html.escape(line)}</p>\n" for line in margin_sentences(margins))
    return "".join(parts)


def strategy_choices_html(choices: pd.DataFrame) -> str:
    """A short HTML table of :func:`unseen.tables.strategy_choices_overview` (``strategy_choices_note.html``)."""
    head = "<h3>What the <code>validated</code> strategy chose</h3>\n"
    if choices.empty:
        return head + "<p>No <code>validated</code> selection in this run.</p>\n"
    return (head + "<p>Per score table (<code>oof</code> = UNSEEN, <code>fitting</code>) and "
            "pruning rate: the chosen strategy in how many seeds, and each candidate's accuracy "
            "on the held-out training samples (%), seeds in order.</p>\n"
            + _table_html(strategy_choices_overview(choices)) + "\n")


# --------------------------------------------------------------------------- #
# The report job
# --------------------------------------------------------------------------- #


def _write_table(table: pd.DataFrame, out: Path, name: str) -> Path:
    path = out / f"{name}.parquet"
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out / f"{name}.csv") as tmp:
        table.to_csv(tmp, index=False)
    return path


def _write_text(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path


def write_report(
    metrics: pd.DataFrame,
    score_tables: dict[tuple[int, str, str], pd.DataFrame],
    out_dir: str | Path,
    scorer: str,
    per_class_rate: float | None = None,
    class_names: Sequence[str] | None = None,
    regime: pd.DataFrame | None = None,
    choice_paths: Sequence[str | os.PathLike] = (),
    dataset: str | None = None,
) -> dict[str, Path]:
    """Write the run's tables (Parquet + CSV), figures (PNG) and notes (HTML) into ``out_dir``.

    Args:
        metrics: one row per retrained model (``results/summary.parquet``),
            including ``scoring_sample_epochs`` and ``scoring_wall_seconds``.
        score_tables: (seed, scorer, kind) -> table with sample_id, score
            (higher = keep first), where kind is "fitting" or "unseen"
            (out-of-fold aggregate).
        scorer: the scorer of the histogram and rank-stability figures and of
            the recipe in the overview.
        per_class_rate: pruning rate of the per-class figure; None = the highest.
        regime: the regime table (``results/scoring_models.parquet``, one row per
            scoring model); copied as ``scoring_models``, said in ``regime.html``
            (:func:`unseen.regime.regime_sentences`) and in the overview. None: an
            empty table.
        choice_paths: the `validated` strategy's choice files of the run
            (``strategy_choices`` table and ``strategy_choices_note.html``).
        dataset: the dataset's name for the overview.

    A figure that the run cannot support (one seed for rank stability, no
    fitting or no UNSEEN scores for the histograms, no full-data model as the
    unit of cost) is written as a placeholder that says why, so the report
    always has the same files.

    Returns:
        name -> path of every file written (names in REPORT_TABLES, REPORT_FIGURES
        and REPORT_NOTES).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    pruned = metrics[~metrics["method"].isin(UNSCORED_METHODS)]
    if regime is None:
        regime = SCORING_MODELS_SCHEMA.empty_table().to_pandas()
    tables = {
        "summary": summary_table(metrics),
        "diagnostics": diagnostics_table(score_tables),
        "scoring_models": regime,
        "strategy_choices": strategy_choices_table(choice_paths),
    }
    for name, table in tables.items():
        paths[name] = _write_table(table, out, name)

    paths["overview"] = _write_text(overview_html(metrics, regime, scorer, dataset),
                                    out / "overview.html")
    paths["regime"] = _write_text(
        "<h3>The regime of this run: how well the scoring models fit</h3>\n"
        + "".join(f"<p>{html.escape(line)}</p>\n" for line in regime_sentences(regime)),
        out / "regime.html")
    paths["strategy_choices_note"] = _write_text(strategy_choices_html(tables["strategy_choices"]),
                                                 out / "strategy_choices_note.html")

    figure = {name: out / f"{name}.png" for name in REPORT_FIGURES}
    if len(tables["summary"]):
        plot_accuracy_vs_rate(tables["summary"], difference_to_random_table(metrics),
                              figure["accuracy_vs_rate"])
    else:
        placeholder_plot("no retrained models", figure["accuracy_vs_rate"])

    full_seeds = set(metrics.loc[metrics["method"] == "full", "seed"])
    if len(pruned) and full_seeds == set(metrics["seed"]):
        plot_cost_quality(budget_ablation_table(metrics), figure["cost_quality"])
    else:
        placeholder_plot(
            "cost against quality needs pruned coresets and the full-data model of every seed "
            "(the unit of compute: methods must include full)",
            figure["cost_quality"],
        )

    seeds = sorted({seed for seed, s, _ in score_tables if s == scorer})
    kinds = {kind: [seed for seed in seeds if (seed, scorer, kind) in score_tables]
             for kind in ("fitting", "unseen")}
    common = sorted(set(kinds["fitting"]) & set(kinds["unseen"]))
    if common:
        seed = common[0]
        plot_score_histograms(
            score_tables[(seed, scorer, "fitting")]["score"].to_numpy(),
            score_tables[(seed, scorer, "unseen")]["score"].to_numpy(),
            scorer, figure["score_histograms"],
        )
    else:
        placeholder_plot(
            f"score histograms need both fitting and UNSEEN {scorer} scores "
            "(methods must include fitting and unseen or unseen_single)",
            figure["score_histograms"],
        )

    pairs = {
        label: aligned_ranks(score_tables[(kinds[kind][0], scorer, kind)],
                             score_tables[(kinds[kind][1], scorer, kind)])
        for kind, label in (("fitting", "fitting"), ("unseen", "UNSEEN"))
        if len(kinds[kind]) >= 2
    }
    if pairs:
        first = kinds["unseen"] if len(kinds["unseen"]) >= 2 else kinds["fitting"]
        plot_rank_stability(pairs, figure["rank_stability"], seeds=(first[0], first[1]))
    else:
        placeholder_plot(
            f"rank stability needs {scorer} scores from at least two seeds "
            f"(this run has seeds {seeds})",
            figure["rank_stability"],
        )

    rates = sorted(pruned["pruning_rate"].unique())
    rate = max(rates) if per_class_rate is None and rates else per_class_rate
    # One retrain budget per figure: the first the run has (full_steps unless only epochs ran).
    budgets = [b for b in RETRAIN_BUDGETS if b in set(pruned["retrain_budget"])]
    if budgets:
        metrics = metrics[(metrics["retrain_budget"] == budgets[0]) | (metrics["method"] == "full")]
    available = set(metrics[["method", "scorer", "strategy"]].itertuples(index=False, name=None))
    chosen = per_class_selections(sorted(available), scorer)
    if rate is not None and chosen:
        plot_per_class_accuracy(metrics, chosen, rate, figure["per_class_accuracy"], class_names)
    else:
        placeholder_plot("no pruned coresets to compare per class", figure["per_class_accuracy"])
    return {**paths, **figure}
