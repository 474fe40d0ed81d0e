"""Result tables of an UNSEEN pruning study, and the report job that writes them.

Everything here works on the tables the workflow writes, loaded as pandas
DataFrames:

* ``metrics``: one row per retrained model (``method, scorer, strategy,
  pruning_rate, seed, coreset_size, n_train_total, test_accuracy,
  worst_class_accuracy, per_class_accuracy, epochs, wall_seconds,
  scoring_sample_epochs, scoring_wall_seconds, ...``; ``results/summary.parquet``).
* score tables: ``sample_id`` (int64) and ``score`` (float64), one per
  (seed, scorer, kind) with kind ``"fitting"`` or ``"unseen"``.

Scores follow the package convention: higher = more important to keep. Ranks
are 1..n with 1 = lowest score (least important).

The score diagnostics live in :mod:`unseen.diagnostics`, the figures in
:mod:`unseen.plots`; :func:`write_report` writes both with the summary table.
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from unseen.budget import RETRAIN_BUDGETS
from unseen.config import SCORED_METHODS, UNSCORED_METHODS
from unseen.diagnostics import aligned_ranks, diagnostics_table
from unseen.io import atomic_path
from unseen.naming import FULL, NONE, RANDOM
from unseen.plugins import strategies_where
from unseen.strategies import DEFAULT_STRATEGY

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
_PLAIN_STRATEGIES = (*strategies_where(plain=True), NONE)


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
    if strategy in _PLAIN_STRATEGIES:
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


def _require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
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
    _require_columns(
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
# The report job: every table and figure of one run
# --------------------------------------------------------------------------- #

REPORT_TABLES = ("summary", "diagnostics", "scoring_models")
REPORT_FIGURES = ("accuracy_vs_rate", "score_histograms", "rank_stability", "per_class_accuracy")
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
        pair = [(method, scorer, strategy) for strategy in strategies_where(class_aware=True)]
        if all(p in present for p in pair):
            chosen = [s for s in [(method, scorer, DEFAULT_STRATEGY), *pair] if s in present]
            break
    if not chosen:
        chosen = [(m, scorer, DEFAULT_STRATEGY) for m in SCORED_METHODS
                  if (m, scorer, DEFAULT_STRATEGY) in present]
    references = [s for s in [(RANDOM, NONE, NONE), (FULL, NONE, NONE)] if s in present]
    return references + chosen


def write_report(
    metrics: pd.DataFrame,
    score_tables: dict[tuple[int, str, str], pd.DataFrame],
    out_dir: str | Path,
    scorer: str,
    per_class_rate: float | None = None,
    class_names: Sequence[str] | None = None,
    regime: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write the run's tables (Parquet + CSV) and figures (PNG) into ``out_dir``.

    Args:
        metrics: one row per retrained model (``results/summary.parquet``),
            including ``scoring_sample_epochs`` and ``scoring_wall_seconds``.
        score_tables: (seed, scorer, kind) -> table with sample_id, score, where
            kind is "fitting" or "unseen" (out-of-fold aggregate).
        scorer: the scorer of the histogram and rank-stability figures.
        per_class_rate: pruning rate of the per-class figure; None = the highest.
        regime: the regime table (``results/scoring_models.parquet``, one row per
            scoring model); copied as ``scoring_models`` and said in ``regime.html``
            (:func:`unseen.regime.regime_sentences`). None: an empty table.

    A figure that the run cannot support (one seed for rank stability, no
    fitting or no UNSEEN scores for the histograms) is written as a placeholder
    that says why, so the report always has the same files.

    Returns:
        name -> path of every file written (names in REPORT_TABLES, REPORT_FIGURES,
        and ``regime``).
    """
    # Imported here: unseen.plots imports the labels and helpers of this module.
    from unseen.plots import (
        placeholder_plot,
        plot_accuracy_vs_rate,
        plot_per_class_accuracy,
        plot_rank_stability,
        plot_score_histograms,
    )

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    pruned = metrics[~metrics["method"].isin(UNSCORED_METHODS)]
    from unseen.io import SCORING_MODELS_SCHEMA
    from unseen.regime import regime_sentences

    if regime is None:
        regime = SCORING_MODELS_SCHEMA.empty_table().to_pandas()
    tables = {
        "summary": summary_table(metrics),
        "diagnostics": diagnostics_table(score_tables),
        "scoring_models": regime,
    }
    for name, table in tables.items():
        paths[name] = out / f"{name}.parquet"
        with atomic_path(paths[name]) as tmp:
            table.to_parquet(tmp, index=False)
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)

    paths["regime"] = out / "regime.html"
    with atomic_path(paths["regime"]) as tmp:
        Path(tmp).write_text(
            "<h3>The regime of this run: how well the scoring models fit</h3>\n"
            + "".join(f"<p>{html.escape(line)}</p>\n" for line in regime_sentences(regime))
        )

    figure = {name: out / f"{name}.png" for name in REPORT_FIGURES}
    if len(tables["summary"]):
        plot_accuracy_vs_rate(tables["summary"], figure["accuracy_vs_rate"])
    else:
        placeholder_plot("no retrained models", figure["accuracy_vs_rate"])

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
