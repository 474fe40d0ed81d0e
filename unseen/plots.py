"""Figures of an UNSEEN pruning study.

Accuracy against pruning rate, score histograms (fitting vs UNSEEN), rank
stability across seeds and per-class accuracy, drawn from the tables of
:mod:`unseen.report` (``metrics``: one row per retrained model; the summary of
:func:`unseen.report.summary_table`) and the score tables and rank pairs of
:mod:`unseen.diagnostics`.

Plots draw on bare matplotlib ``Figure`` objects (Agg canvas, no pyplot state),
are written atomically through :func:`unseen.io.atomic_path` and never open
windows.
"""

from __future__ import annotations

import contextlib
import textwrap
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from unseen.budget import RETRAIN_BUDGETS
from unseen.diagnostics import score_spread, spearman_rho
from unseen.io import atomic_path
from unseen.report import _PLAIN_STRATEGIES, _require_columns, per_class_matrix, selection_label

# Above this many points a scatter is visually saturated; subsampling keeps
# rendering time and PNG size bounded on ImageNet-sized score tables.
MAX_SCATTER_POINTS = 20_000
SCATTER_RNG_SEED = 0

DPI = 120


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def figure(path: str | Path, **subplot_kw) -> Iterator[tuple]:
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


def legend_below(fig, n_entries: int) -> None:
    """Figure legend under the axes, wrapped into rows so long label lists stay legible."""
    if n_entries == 0:
        return
    labels = [text for ax in fig.axes for text in ax.get_legend_handles_labels()[1]]
    columns = 2 if max(map(len, labels), default=0) > 40 else 3
    fig.legend(
        loc="outside lower center", ncol=min(n_entries, columns), fontsize="small", frameon=False
    )


def line_styles(n: int) -> list[dict]:
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
        summary: output of :func:`unseen.report.summary_table`.
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
    styles = dict(zip(labels, line_styles(len(labels))))
    budgets = [b for b in RETRAIN_BUDGETS if b in set(pruned["retrain_budget"])] or [None]

    with figure(path, figsize=(6.5 * len(budgets), 5.0), ncols=len(budgets),
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
        legend_below(fig, len(labels) + (not full.empty))


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
    the std and :func:`unseen.diagnostics.score_spread` concentration of its scores.
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

    with figure(path, nrows=2, sharex=True, figsize=(7.0, 5.5)) as (fig, axes):
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

    Each title gives Spearman's rho over all shared samples;
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
    with figure(path, ncols=n_panels, figsize=(4.2 * n_panels, 4.6), squeeze=False) as (
        fig, axes
    ):
        for ax, (kind, ranks) in zip(axes[0], pairs.items()):
            x = ranks["rank_a"].to_numpy(dtype=np.float64)
            y = ranks["rank_b"].to_numpy(dtype=np.float64)
            rho = spearman_rho(x, y)
            if x.size > MAX_SCATTER_POINTS:
                keep = rng.choice(x.size, MAX_SCATTER_POINTS, replace=False)
                x, y = x[keep], y[keep]
            ax.scatter(x, y, s=2, alpha=0.3, linewidths=0, rasterized=True)
            n = len(ranks)
            ax.plot([1, n], [1, n], color="black", linewidth=0.8, alpha=0.6)
            ax.set_xlim(0, n + 1)
            ax.set_ylim(0, n + 1)
            ax.set_aspect("equal")
            ax.set_title(f"{kind}: Spearman's rho = {rho:.3f}", fontsize="medium")
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
        metrics: one row per retrained model (see :mod:`unseen.report`).
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
    colours = [s["color"] for s in line_styles(len(series))]

    with figure(path, figsize=(fig_width, 5.0)) as (fig, ax):
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
        legend_below(fig, len(series))


def placeholder_plot(message: str, path: str | Path) -> None:
    """A PNG showing only ``message``, for a figure that cannot be drawn.

    Keeps the report's set of files fixed (e.g. rank stability with one seed).
    """
    wrapped = "\n".join(textwrap.wrap(message, width=60)) or "(no plot)"
    with figure(path, figsize=(6.0, 2.5)) as (fig, ax):
        ax.set_axis_off()
        ax.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize="large",
                wrap=True, transform=ax.transAxes)
