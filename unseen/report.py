"""Result tables, score diagnostics and figures for an UNSEEN pruning study.

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

Plots draw on bare matplotlib ``Figure`` objects (Agg canvas, no pyplot state),
are written atomically through :func:`unseen.io.atomic_path` and never open
windows.
"""

from __future__ import annotations

import contextlib
import itertools
import textwrap
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from unseen.budget import RETRAIN_BUDGETS
from unseen.io import atomic_path

SPREAD_FIELDS = (
    "n", "mean", "std", "q05", "q25", "median", "q75", "q95", "iqr", "concentration",
)
"""Keys of :func:`score_spread`, in order; also columns of :func:`diagnostics_table`."""

CONCENTRATION_BINS = 50

DIAGNOSTICS_COLUMNS = (
    "scorer", "kind", "n_seeds", *SPREAD_FIELDS,
    "rank_pearson_mean", "rank_pearson_min", "n_seed_pairs",
)

SELECTION_KEYS = ("retrain_budget", "scoring_budget", "method", "scorer", "strategy", "pruning_rate")

SUMMARY_COLUMNS = (
    *SELECTION_KEYS, "coreset_size", "n_seeds",
    "test_accuracy_mean", "test_accuracy_std",
    "worst_class_accuracy_mean", "worst_class_accuracy_std",
    "per_class_accuracy_std_mean",
    "train_steps_mean", "scoring_steps",
    "scoring_sample_epochs", "scoring_wall_seconds", "retrain_wall_seconds_mean",
)

# Methods that select without scores: their scoring compute is zero by definition.
UNSCORED_METHODS = ("full", "random")

_METHOD_LABELS = {
    "fitting": "fitting",
    "unseen": "UNSEEN",
    "unseen_single": "UNSEEN single-step",
}

_PLAIN_STRATEGIES = ("top", "none")

# Above this many points a scatter is visually saturated; subsampling keeps
# rendering time and PNG size bounded on ImageNet-sized score tables.
MAX_SCATTER_POINTS = 20_000
SCATTER_RNG_SEED = 0

DPI = 120


# --------------------------------------------------------------------------- #
# Rank stability and score spread
# --------------------------------------------------------------------------- #


def _check_score_table(scores: pd.DataFrame, name: str) -> None:
    missing = [c for c in ("sample_id", "score") if c not in scores.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")
    if scores["sample_id"].duplicated().any():
        dup = scores.loc[scores["sample_id"].duplicated(), "sample_id"].iloc[:5].tolist()
        raise ValueError(f"{name} has duplicate sample ids, e.g. {dup}")


def aligned_ranks(scores_a: pd.DataFrame, scores_b: pd.DataFrame) -> pd.DataFrame:
    """Rank two score tables on the samples they share.

    Args:
        scores_a, scores_b: tables with unique ``sample_id`` and a float ``score``
            (higher = more important to keep).

    Returns:
        DataFrame with columns ``sample_id, rank_a, rank_b`` for the n ids present
        in both tables with a non-NaN score on both sides, sorted by sample_id.
        Ranks run 1..n (1 = lowest score), ties share their average rank. Ranks
        are computed on the shared ids only, so ids present on one side do not
        shift the other side's ranks.

    Raises:
        ValueError: a table has duplicate ids or lacks a column, or fewer than 2
            ids are shared.
    """
    _check_score_table(scores_a, "scores_a")
    _check_score_table(scores_b, "scores_b")
    joined = pd.merge(
        scores_a[["sample_id", "score"]],
        scores_b[["sample_id", "score"]],
        on="sample_id",
        how="inner",
        suffixes=("_a", "_b"),
    )
    # A NaN score has no place in a ranking; dropping it on both sides keeps
    # the two rank vectors over the same samples.
    joined = joined.dropna(subset=["score_a", "score_b"]).sort_values("sample_id")
    if len(joined) < 2:
        raise ValueError(
            f"score tables share {len(joined)} sample ids with finite scores; "
            "rank stability needs at least 2"
        )
    return pd.DataFrame(
        {
            "sample_id": joined["sample_id"].to_numpy(),
            "rank_a": rankdata(joined["score_a"].to_numpy(), method="average"),
            "rank_b": rankdata(joined["score_b"].to_numpy(), method="average"),
        }
    )


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors; NaN when either is constant."""
    dx = x - x.mean()
    dy = y - y.mean()
    denom = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    if denom == 0.0:
        return float("nan")
    return float(np.dot(dx, dy) / denom)


def rank_stability(scores_a: pd.DataFrame, scores_b: pd.DataFrame) -> float:
    """Spearman's rho between two score tables (e.g. the same scorer under two seeds).

    The Pearson correlation of the average ranks from :func:`aligned_ranks`, in
    [-1, 1]: 1 = both tables order the shared samples identically. NaN when either
    table gives all shared samples the same score (no ordering to compare).
    """
    ranks = aligned_ranks(scores_a, scores_b)
    return _pearson(ranks["rank_a"].to_numpy(), ranks["rank_b"].to_numpy())


def score_spread(scores: np.ndarray) -> dict:
    """Summary of how widely a score distribution spreads.

    Args:
        scores: float array of any shape (flattened); NaNs are ignored.

    Returns:
        dict with keys :data:`SPREAD_FIELDS`: ``n`` (number of non-NaN scores),
        ``mean``, ``std`` (population, ddof=0), quantiles ``q05, q25, median, q75,
        q95`` (linear interpolation), ``iqr`` = q75 - q25, and ``concentration``:
        the largest fraction of the n scores that falls into one of
        :data:`CONCENTRATION_BINS` equal-width bins spanning the 1st to 99th
        percentile. About 0.98/50 for a uniform sample, near 1 when almost all
        scores crowd together. All values are NaN (n = 0) for an empty input.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    n = int(values.size)
    if n == 0:
        return {"n": 0, **{k: float("nan") for k in SPREAD_FIELDS[1:]}}
    q01, q05, q25, q50, q75, q95, q99 = np.quantile(
        values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    )
    return {
        "n": n,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "q05": float(q05),
        "q25": float(q25),
        "median": float(q50),
        "q75": float(q75),
        "q95": float(q95),
        "iqr": float(q75 - q25),
        "concentration": _concentration(values, float(q01), float(q99)),
    }


def _concentration(values: np.ndarray, low: float, high: float) -> float:
    """Largest fraction of ``values`` in one of the equal-width bins over [low, high]."""
    if high <= low:
        # Zero-width range: at least 98% of the scores are one value; the
        # "bin" is that value itself.
        return float(np.mean(values == low))
    counts, _ = np.histogram(values, bins=CONCENTRATION_BINS, range=(low, high))
    return float(counts.max() / values.size)


def diagnostics_table(
    score_tables: dict[tuple[int, str, str], pd.DataFrame],
) -> pd.DataFrame:
    """Score spread and seed-to-seed rank stability per (scorer, kind).

    Args:
        score_tables: ``{(seed, scorer, kind): table}`` with ``sample_id`` and
            ``score`` columns; kind is e.g. "fitting" or "unseen".

    Returns:
        One row per (scorer, kind), sorted by scorer then kind, with columns
        :data:`DIAGNOSTICS_COLUMNS`:
        ``scorer, kind, n_seeds``; the :func:`score_spread` fields ``n, mean, std,
        q05, q25, median, q75, q95, iqr, concentration``, each averaged over the
        seeds (no prefix); ``rank_pearson_mean`` / ``rank_pearson_min``: mean /
        minimum of :func:`rank_stability` over all unordered pairs of distinct
        seeds (NaN with fewer than 2 seeds; a NaN pair, i.e. constant scores,
        propagates); ``n_seed_pairs`` = n_seeds * (n_seeds - 1) / 2.
    """
    groups: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    for (seed, scorer, kind), table in score_tables.items():
        groups.setdefault((scorer, kind), {})[seed] = table

    rows = []
    for (scorer, kind), by_seed in sorted(groups.items()):
        spreads = pd.DataFrame(
            [score_spread(t["score"].to_numpy()) for t in by_seed.values()]
        )
        pairs = [
            rank_stability(by_seed[a], by_seed[b])
            for a, b in itertools.combinations(sorted(by_seed), 2)
        ]
        rows.append(
            {
                "scorer": scorer,
                "kind": kind,
                "n_seeds": len(by_seed),
                **spreads[list(SPREAD_FIELDS)].mean().to_dict(),
                "rank_pearson_mean": float(np.mean(pairs)) if pairs else float("nan"),
                "rank_pearson_min": float(np.min(pairs)) if pairs else float("nan"),
                "n_seed_pairs": len(pairs),
            }
        )
    return pd.DataFrame(rows, columns=list(DIAGNOSTICS_COLUMNS))


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
# Plots
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def _figure(path: str | Path, **subplot_kw) -> Iterator[tuple]:
    """Yield ``(fig, axes)``; on success save ``path`` as PNG atomically.

    Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas), not pyplot, so
    importing this module never changes the backend of an interactive session.
    Constrained layout makes room for legends placed outside the axes.
    """
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", figsize=subplot_kw.pop("figsize", None))
    axes = fig.subplots(**subplot_kw)
    yield fig, axes
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _legend_below(fig, n_entries: int) -> None:
    """Figure legend under the axes, wrapped into rows so long label lists stay legible."""
    if n_entries == 0:
        return
    labels = [text for ax in fig.axes for text in ax.get_legend_handles_labels()[1]]
    columns = 2 if max(map(len, labels), default=0) > 40 else 3
    fig.legend(
        loc="outside lower center", ncol=min(n_entries, columns), fontsize="small", frameon=False
    )


def _line_styles(n: int) -> list[dict]:
    """n distinguishable (colour, marker, linestyle) combinations."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    dashes = ["-", "--", ":", "-."]
    return [
        {
            "color": colours[i % len(colours)],
            "marker": markers[i % len(markers)],
            "linestyle": dashes[(i // len(colours)) % len(dashes)],
        }
        for i in range(n)
    ]


def plot_accuracy_vs_rate(summary: pd.DataFrame, path: str | Path) -> None:
    """Test accuracy (%) against pruning rate (%), one line per selection label.

    Args:
        summary: output of :func:`summary_table`.
        path: PNG to write.

    One panel per retrain budget (full_steps, epochs), each with the same
    colour per selection. Points are the mean over seeds with ±1 std error
    bars (none with one seed). The full-data baseline is a horizontal line
    with a shaded ±std band in every panel.
    """
    if summary.empty:
        raise ValueError("summary is empty: nothing to plot")
    summary = summary.assign(
        label=[selection_label(m, s, t) for m, s, t in
               summary[["method", "scorer", "strategy"]].itertuples(index=False)],
        rate_pct=summary["pruning_rate"] * 100.0,
        acc_pct=summary["test_accuracy_mean"] * 100.0,
        err_pct=summary["test_accuracy_std"].fillna(0.0) * 100.0,
    )
    full = summary[summary["method"] == "full"]
    pruned = summary[summary["method"] != "full"]
    # Legend order: random first, then by method and scorer with the plain
    # "top" selection ahead of its strategy variants.
    order = pruned.assign(
        _not_random=pruned["method"] != "random",
        _variant=~pruned["strategy"].isin(_PLAIN_STRATEGIES),
    ).sort_values(["_not_random", "method", "scorer", "_variant", "strategy"])
    labels = list(dict.fromkeys(order["label"]))
    styles = dict(zip(labels, _line_styles(len(labels))))
    budgets = [b for b in RETRAIN_BUDGETS if b in set(pruned["retrain_budget"])] or [None]

    with _figure(path, figsize=(6.5 * len(budgets), 5.0), ncols=len(budgets),
                 squeeze=False, sharey=True) as (fig, axes):
        for panel, (ax, budget) in enumerate(zip(axes[0], budgets)):
            if not full.empty:
                mean = float(full["acc_pct"].mean())
                err = float(full["err_pct"].mean())
                ax.axhline(mean, color="black", linewidth=1.2,
                           label=f"full data ({mean:.2f}%)" if panel == 0 else "_nolegend_")
                if err > 0:
                    ax.axhspan(mean - err, mean + err, color="black", alpha=0.12, linewidth=0)
            rows_of_budget = pruned if budget is None else pruned[pruned["retrain_budget"] == budget]
            for label in labels:
                rows = rows_of_budget[rows_of_budget["label"] == label].sort_values("rate_pct")
                if rows.empty:
                    continue
                ax.errorbar(
                    rows["rate_pct"], rows["acc_pct"], yerr=rows["err_pct"],
                    label=label if panel == 0 else "_nolegend_",
                    capsize=3, markersize=5, linewidth=1.4, **styles[label],
                )
            ax.set_xlabel("pruning rate (% of training set removed)")
            if budget is not None:
                ax.set_title(f"retrain budget: {budget}", fontsize="medium")
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("test accuracy (%), mean ± std over seeds")
        _legend_below(fig, len(labels) + (not full.empty))


def plot_score_histograms(
    fitting_scores: np.ndarray, unseen_scores: np.ndarray, scorer: str, path: str | Path
) -> None:
    """Distribution of one scorer's scores, fitting vs UNSEEN (paper Figure 1a).

    Args:
        fitting_scores, unseen_scores: float arrays (n,) of scores, higher = keep;
            NaNs ignored.
        scorer: scorer name for the title.
        path: PNG to write.

    Two stacked panels sharing the x axis and the bin edges, each annotated with
    the std and :func:`score_spread` concentration of its scores.
    """
    panels = [
        ("fitting", np.asarray(fitting_scores, dtype=np.float64).ravel(), "tab:orange"),
        ("UNSEEN", np.asarray(unseen_scores, dtype=np.float64).ravel(), "tab:blue"),
    ]
    finite = np.concatenate([v[np.isfinite(v)] for _, v, _ in panels])
    if finite.size == 0:
        raise ValueError("no finite scores to plot")
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, 61)

    with _figure(path, nrows=2, sharex=True, figsize=(7.0, 5.5)) as (fig, axes):
        for ax, (name, values, colour) in zip(axes, panels):
            values = values[np.isfinite(values)]
            spread = score_spread(values)
            ax.hist(values, bins=edges, color=colour, alpha=0.75)
            ax.set_ylabel("samples")
            ax.set_title(f"{name} {scorer}", loc="left", fontsize="medium")
            # Statistics go in the title row: a box inside the axes would hide bars.
            ax.set_title(
                f"n = {spread['n']}   std = {spread['std']:.4g}   "
                f"concentration = {spread['concentration']:.3f}",
                loc="right", fontsize="small",
            )
            ax.grid(True, alpha=0.3)
        axes[-1].set_xlabel(f"{scorer} score (higher = keep)")


def plot_rank_stability(
    pairs: dict[str, pd.DataFrame], path: str | Path, seeds: tuple[int, int]
) -> None:
    """Rank under seed A against rank under seed B, one panel per kind (paper Figure 1b).

    Args:
        pairs: ``{kind label: aligned_ranks(scores_seed_a, scores_seed_b)}``, e.g.
            ``{"fitting": ..., "UNSEEN": ...}``; panels follow the dict order.
        path: PNG to write.
        seeds: (seed A, seed B), for the axis labels.

    Each title gives the Pearson correlation of the ranks over all shared samples;
    the scatter shows at most :data:`MAX_SCATTER_POINTS` of them, drawn with a
    fixed seed so the figure is reproducible.
    """
    if not pairs:
        raise ValueError("no rank pairs to plot")
    for kind, ranks in pairs.items():
        _require_columns(ranks, ["rank_a", "rank_b"], f"ranks for {kind!r}")
    seed_a, seed_b = seeds
    rng = np.random.default_rng(SCATTER_RNG_SEED)
    n_panels = len(pairs)
    with _figure(path, ncols=n_panels, figsize=(4.2 * n_panels, 4.6), squeeze=False) as (
        fig, axes
    ):
        for ax, (kind, ranks) in zip(axes[0], pairs.items()):
            x = ranks["rank_a"].to_numpy(dtype=np.float64)
            y = ranks["rank_b"].to_numpy(dtype=np.float64)
            rho = _pearson(x, y)
            if x.size > MAX_SCATTER_POINTS:
                keep = rng.choice(x.size, MAX_SCATTER_POINTS, replace=False)
                x, y = x[keep], y[keep]
            ax.scatter(x, y, s=2, alpha=0.3, linewidths=0, rasterized=True)
            n = len(ranks)
            ax.plot([1, n], [1, n], color="black", linewidth=0.8, alpha=0.6)
            ax.set_xlim(0, n + 1)
            ax.set_ylim(0, n + 1)
            ax.set_aspect("equal")
            ax.set_title(f"{kind}: rank Pearson r = {rho:.3f}", fontsize="medium")
            ax.set_xlabel(f"rank, seed {seed_a} (1 = lowest score)")
            ax.set_ylabel(f"rank, seed {seed_b}")


def plot_per_class_accuracy(
    metrics: pd.DataFrame,
    selections: list[tuple[str, str, str]],
    pruning_rate: float,
    path: str | Path,
    class_names: Sequence[str] | None = None,
) -> None:
    """Grouped bars of per-class test accuracy (%) at one pruning rate.

    Args:
        metrics: one row per retrained model (see module docstring).
        selections: (method, scorer, strategy) triples, one bar group member each.
            A "full" selection matches its rows at any rate (they are at rate 0),
            so the baseline can sit next to pruned selections.
        pruning_rate: fraction removed, in [0, 1).
        path: PNG to write.
        class_names: label per class; defaults to the class index.

    Bars are the mean over seeds, error bars the std over seeds (ddof=1, none
    with one seed); NaN classes (no test samples) are left empty. The legend
    gives each selection's worst-class accuracy (mean over seeds).

    Raises:
        ValueError: a selection has no rows at ``pruning_rate``.
    """
    if not selections:
        raise ValueError("no selections to plot")
    _require_columns(
        metrics,
        ["method", "scorer", "strategy", "pruning_rate", "per_class_accuracy",
         "worst_class_accuracy"],
        "metrics",
    )
    at_rate = np.isclose(metrics["pruning_rate"].astype(float), pruning_rate)
    series = []
    for method, scorer, strategy in selections:
        chosen = (
            (metrics["method"] == method)
            & (metrics["scorer"] == scorer)
            & (metrics["strategy"] == strategy)
            & (at_rate | (method == "full"))
        )
        if not chosen.any():
            raise ValueError(
                f"no models for {(method, scorer, strategy)} at pruning rate {pruning_rate}"
            )
        rows = metrics[chosen]
        acc = per_class_matrix(rows["per_class_accuracy"]) * 100.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(acc, axis=0)
            std = np.nanstd(acc, axis=0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
        worst = float(rows["worst_class_accuracy"].mean()) * 100.0
        label = f"{selection_label(method, scorer, strategy)} (worst class {worst:.1f}%)"
        series.append((label, mean, np.nan_to_num(std)))

    n_classes = max(m.size for _, m, _ in series)
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) < n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} classes")
    width = 0.8 / len(series)
    centres = np.arange(n_classes)
    fig_width = float(np.clip(1.0 + 0.18 * n_classes * len(series), 7.0, 24.0))
    colours = [s["color"] for s in _line_styles(len(series))]

    with _figure(path, figsize=(fig_width, 5.0)) as (fig, ax):
        for i, (label, mean, std) in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar(
                centres[: mean.size] + offset, mean, width=width, yerr=std, label=label,
                color=colours[i], capsize=2 if n_classes <= 20 else 0,
                error_kw={"linewidth": 0.8},
            )
        ax.set_xticks(centres, names[:n_classes], rotation=0 if n_classes <= 12 else 90,
                      fontsize="small")
        ax.set_xlim(-0.6, n_classes - 0.4)
        ax.set_ylim(0, 105)
        ax.set_xlabel("class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"per-class accuracy at pruning rate {pruning_rate:.0%}",
                     fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
        _legend_below(fig, len(series))


def placeholder_plot(message: str, path: str | Path) -> None:
    """A PNG showing only ``message``, for a figure that cannot be drawn.

    Keeps the report's set of files fixed (e.g. rank stability with one seed).
    """
    wrapped = "\n".join(textwrap.wrap(message, width=60)) or "(no plot)"
    with _figure(path, figsize=(6.0, 2.5)) as (fig, ax):
        ax.set_axis_off()
        ax.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize="large",
                wrap=True, transform=ax.transAxes)


# --------------------------------------------------------------------------- #
# The report job: every table and figure of one run
# --------------------------------------------------------------------------- #

REPORT_TABLES = ("summary", "diagnostics")
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
        pair = [(method, scorer, "class_balanced"), (method, scorer, "hard_class_priority")]
        if all(p in present for p in pair):
            chosen = [s for s in [(method, scorer, "top"), *pair] if s in present]
            break
    if not chosen:
        chosen = [(m, scorer, "top") for m in ("fitting", "unseen_single", "unseen")
                  if (m, scorer, "top") in present]
    references = [s for s in [("random", "none", "none"), ("full", "none", "none")] if s in present]
    return references + chosen


def write_report(
    metrics: pd.DataFrame,
    score_tables: dict[tuple[int, str, str], pd.DataFrame],
    out_dir: str | Path,
    scorer: str,
    per_class_rate: float | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write the run's tables (Parquet + CSV) and figures (PNG) into ``out_dir``.

    Args:
        metrics: one row per retrained model (``results/summary.parquet``),
            including ``scoring_sample_epochs`` and ``scoring_wall_seconds``.
        score_tables: (seed, scorer, kind) -> table with sample_id, score, where
            kind is "fitting" or "unseen" (out-of-fold aggregate).
        scorer: the scorer of the histogram and rank-stability figures.
        per_class_rate: pruning rate of the per-class figure; None = the highest.

    A figure that the run cannot support (one seed for rank stability, no
    fitting or no UNSEEN scores for the histograms) is written as a placeholder
    that says why, so the report always has the same files.

    Returns:
        name -> path of every file written (names in REPORT_TABLES, REPORT_FIGURES).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    pruned = metrics[~metrics["method"].isin(UNSCORED_METHODS)]
    tables = {
        "summary": summary_table(metrics),
        "diagnostics": diagnostics_table(score_tables),
    }
    for name, table in tables.items():
        paths[name] = out / f"{name}.parquet"
        with atomic_path(paths[name]) as tmp:
            table.to_parquet(tmp, index=False)
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)

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
