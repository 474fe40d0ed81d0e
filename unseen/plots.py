"""Figures of an UNSEEN pruning study.

Accuracy against pruning rate (difference to random and absolute), test
accuracy against scoring compute, score histograms (fitting vs UNSEEN), rank
stability across seeds and per-class accuracy, drawn from the tables of
:mod:`unseen.tables` (``metrics``: one row per retrained model; the summary,
difference-to-random and cost-quality tables) and the score tables and rank
pairs of :mod:`unseen.diagnostics`. Scores: higher = keep first.

Figures only: this module imports :mod:`unseen.tables`, never
:mod:`unseen.report` (which imports it).

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
from unseen.tables import PLAIN_STRATEGIES, per_class_matrix, require_columns, selection_label

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
    # Constrained layout grows the figure downwards for the legend, never sideways: as many
    # columns as fit the figure's width (about 0.065 in per character of "small" text plus
    # the line sample and padding), at most 3.
    entry_inches = 0.065 * max(map(len, labels), default=0) + 0.7
    columns = int(max(1, min(3, fig.get_figwidth() // entry_inches)))
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


#: A selection this many points or more below random is drawn as collapsed: at the lower edge
#: of its panel with its value written next to it, so that the rest keeps a readable scale.
COLLAPSE_POINTS = 5.0


def _selection_order(rows: pd.DataFrame) -> list[str]:
    """Labels of ``rows`` (method, scorer, strategy): random first, then by method and
    scorer with the plain "top" selection ahead of its strategy variants."""
    order = rows.assign(
        _not_random=rows["method"] != "random",
        _variant=~rows["strategy"].isin(PLAIN_STRATEGIES),
    ).sort_values(["_not_random", "method", "scorer", "_variant", "strategy"], kind="stable")
    return list(dict.fromkeys(
        selection_label(m, s, t)
        for m, s, t in order[["method", "scorer", "strategy"]].itertuples(index=False)))


def _with_labels(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(label=[selection_label(m, s, t) for m, s, t in
                               table[["method", "scorer", "strategy"]].itertuples(index=False)])


def _dodge(labels: list[str], width: float) -> dict[str, float]:
    """A small x offset per label, spread evenly over ``width`` (x units), so that error bars
    of selections at the same x do not hide each other."""
    if len(labels) < 2:
        return dict.fromkeys(labels, 0.0)
    return {label: (i / (len(labels) - 1) - 0.5) * width for i, label in enumerate(labels)}


def _focus(ax, points: list[tuple[float, float, float, dict]], floor: float | None,
           values: bool = True) -> None:
    """Fit the y axis to the points at or above ``floor``; mark the others at its lower edge.

    ``points``: (x, y, error, style) in the axis units. When at most half of
    them lie below ``floor`` (collapsed coresets), the axis covers the rest and
    each collapsed point is a downward triangle at the lower edge, with its
    value next to it when ``values`` (its line and error bar leave the panel);
    otherwise the axis covers every point.
    """
    below = [p for p in points if floor is not None and p[1] < floor]
    if not below or len(below) > len(points) / 2:
        return
    kept = [(y - e, y + e) for _, y, e, _ in points if y >= floor]
    low = min(lo for lo, _ in kept)
    high = max(hi for _, hi in kept)
    pad = max(0.08 * (high - low), 0.1)
    low, high = low - 3 * pad, high + pad  # room for the marks at the bottom
    ax.set_ylim(low, high)
    below = [p for p in below if p[1] < low]  # a point inside the range is drawn as it is
    if not below:
        return
    if not values:
        ax.text(0.01, 0.01, f"▼ {COLLAPSE_POINTS:g} points or more below random (values below)",
                transform=ax.transAxes, fontsize="x-small", color="dimgrey", va="bottom")
    edge = low + 0.6 * pad
    x_span = max(abs(x) for x, _, _, _ in points) or 1.0
    previous, stack = None, 0
    for x, y, _, style in sorted(below, key=lambda p: p[0]):
        stack = stack + 1 if previous is not None and abs(x - previous) < 0.05 * x_span else 0
        previous = x
        ax.plot([x], [edge], marker="v", color=style["color"], markersize=7, linestyle="none",
                clip_on=False)
        if not values:
            continue
        ax.annotate(f"{y:.1f}", (x, edge), textcoords="offset points",
                    xytext=(5, -3 + 9 * stack), fontsize="x-small", color=style["color"])


def plot_accuracy_vs_rate(summary: pd.DataFrame, differences: pd.DataFrame,
                          path: str | Path) -> None:
    """Test accuracy against pruning rate: difference to random (top), absolute (bottom).

    Args:
        summary: :func:`unseen.tables.summary_table` (accuracies as fractions).
        differences: :func:`unseen.tables.difference_to_random_table` of the same run.
        path: PNG to write.

    One column of panels per retrain budget, one colour per selection in both
    rows. Top: each selection's test accuracy minus random's, in points
    (percentage points), mean over seeds with ±1 std error bars of the paired
    per-seed differences (none with one seed); 0 is random, the black line the
    full-data model. Selections :data:`COLLAPSE_POINTS` or more below random
    (e.g. top-only coresets at high rates) sit at the lower edge as triangles
    (their values are in the bottom row) when at most half of a panel's points
    do, so small differences stay visible. Points at one rate are spread slightly apart (over a quarter of the
    rate spacing, at most 4 points of rate) so that their error bars do not
    hide each other. Bottom: absolute test accuracy
    (%), mean ± std over seeds, every selection including the collapsed ones;
    the full-data model is a line with a ±std band.
    """
    if summary.empty:
        raise ValueError("summary is empty: nothing to plot")
    summary = _with_labels(summary).assign(
        rate_pct=summary["pruning_rate"] * 100.0,
        acc_pct=summary["test_accuracy_mean"] * 100.0,
        err_pct=summary["test_accuracy_std"].fillna(0.0) * 100.0,
    )
    differences = _with_labels(differences).assign(
        rate_pct=differences["pruning_rate"] * 100.0,
        diff_pts=differences["difference_mean"] * 100.0,
        err_pts=differences["difference_std"].fillna(0.0) * 100.0,
    )
    full = summary[summary["method"] == "full"]
    pruned = summary[summary["method"] != "full"]
    labels = _selection_order(pruned)
    styles = dict(zip(labels, line_styles(len(labels))))
    full_style = {"color": "black", "marker": "_", "linestyle": "-"}
    budgets = [b for b in RETRAIN_BUDGETS if b in set(pruned["retrain_budget"])] or [None]
    rates = sorted(summary["rate_pct"].unique())
    spacing = min(np.diff(rates)) if len(rates) > 1 else 10.0
    shift = _dodge(["full", *labels], min(0.25 * spacing, 4.0))
    summary["rate_pct"] += summary["label"].map(shift).fillna(0.0)
    differences["rate_pct"] += differences["label"].map(shift).fillna(0.0)

    with figure(path, figsize=(6.5 * len(budgets), 9.5), nrows=2, ncols=len(budgets),
                squeeze=False, sharex=True) as (fig, axes):
        for panel, budget in enumerate(budgets):
            top, bottom = axes[0][panel], axes[1][panel]
            legend = panel == 0
            # top: difference to random
            part = differences if budget is None else differences[differences["retrain_budget"] == budget]
            points = []
            top.axhline(0.0, color="grey", linewidth=1.0, linestyle="--")
            top.annotate("random", (1.0, 0.0), xycoords=("axes fraction", "data"),
                         xytext=(-4, 3), textcoords="offset points", ha="right",
                         fontsize="small", color="grey")
            for label in ["full", *labels]:
                rows = part[part["label"] == label].sort_values("rate_pct")
                if rows.empty or label == "random":
                    continue
                style = full_style if label == "full" else styles[label]
                top.errorbar(rows["rate_pct"], rows["diff_pts"], yerr=rows["err_pts"], capsize=3,
                             markersize=5, linewidth=1.4, label="_nolegend_", **style)
                if label != "full":  # the full-data line may leave a focused panel at the top
                    points += [(x, y, e, style) for x, y, e in
                               zip(rows["rate_pct"], rows["diff_pts"], rows["err_pts"])]
            if points:
                _focus(top, points, -COLLAPSE_POINTS, values=False)
            elif part.empty:
                top.text(0.5, 0.5, "no random coresets to compare with", ha="center",
                         va="center", transform=top.transAxes)
            top.set_title(
                "difference to random (points)" + (f", retrain budget: {budget}" if budget else ""),
                fontsize="medium")
            top.grid(True, alpha=0.3)
            # bottom: absolute accuracy
            if not full.empty:
                mean = float(full["acc_pct"].mean())
                err = float(full["err_pct"].mean())
                bottom.axhline(mean, color="black", linewidth=1.2,
                               label=f"full data ({mean:.2f}%)" if legend else "_nolegend_")
                if err > 0:
                    bottom.axhspan(mean - err, mean + err, color="black", alpha=0.12, linewidth=0)
            rows_of_budget = pruned if budget is None else pruned[pruned["retrain_budget"] == budget]
            for label in labels:
                rows = rows_of_budget[rows_of_budget["label"] == label].sort_values("rate_pct")
                if rows.empty:
                    continue
                bottom.errorbar(rows["rate_pct"], rows["acc_pct"], yerr=rows["err_pct"],
                                label=label if legend else "_nolegend_",
                                capsize=3, markersize=5, linewidth=1.4, **styles[label])
            bottom.set_title("test accuracy (%), every selection", fontsize="medium")
            bottom.set_xlabel("pruning rate (% of training set removed)")
            bottom.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("test accuracy − random (points), mean ± std over seeds")
        axes[1][0].set_ylabel("test accuracy (%), mean ± std over seeds")
        legend_below(fig, len(labels) + (not full.empty))


def plot_cost_quality(table: pd.DataFrame, path: str | Path) -> None:
    """Test accuracy (%) against scoring compute (multiples of one full training), per rate.

    Args:
        table: :func:`unseen.tables.budget_ablation_table`: one run (one scoring
            budget: one point per selection) or several runs joined (the budget
            ablation: a line per selection through its scoring budgets, each point
            labelled with its budget).
        path: PNG to write.

    One panel per pruning rate (columns) and retrain budget (rows), each with
    its own accuracy scale; one colour per selection in every panel. Random
    costs no scoring: its point sits at 0, with a dashed line at its accuracy
    across the panel. Error bars are ±1 std over seeds; points of the same cost
    are spread slightly apart (by at most 3 % of the x axis). Selections
    :data:`COLLAPSE_POINTS` or more below random sit at the lower edge with
    their value when at most half of a panel's points do.
    """
    if table.empty:
        raise ValueError("cost-quality table is empty: nothing to plot")
    table = _with_labels(table).assign(
        acc_pct=table["test_accuracy_mean"] * 100.0,
        err_pct=table["test_accuracy_std"].fillna(0.0) * 100.0,
    )
    budgets = [b for b in RETRAIN_BUDGETS if b in set(table["retrain_budget"])]
    rates = sorted(table["pruning_rate"].unique())
    labels = _selection_order(table)
    styles = dict(zip(labels, line_styles(len(labels))))
    random_style = {"color": "black", "marker": "s", "linestyle": "none"}
    x_max = float(table["scoring_compute_mean"].max())
    shift = _dodge([label for label in labels if label != "random"], 0.03 * max(x_max, 1.0))
    table["x"] = table["scoring_compute_mean"] + table["label"].map(shift).fillna(0.0)
    with figure(path, figsize=(max(3.6 * len(rates), 6.5), 3.6 * len(budgets) + 1.2),
                nrows=len(budgets), ncols=len(rates), squeeze=False, sharex=True) as (fig, axes):
        for row, budget in enumerate(budgets):
            for col, rate in enumerate(rates):
                ax = axes[row][col]
                legend = row == 0 and col == 0
                part = table[(table["retrain_budget"] == budget)
                             & np.isclose(table["pruning_rate"], rate)]
                points, floor = [], None
                for label in labels:
                    rows = part[part["label"] == label].sort_values("scoring_compute_mean")
                    if rows.empty:
                        continue
                    style = random_style if label == "random" else styles[label]
                    if label == "random":
                        level = float(rows["acc_pct"].mean())
                        floor = level - COLLAPSE_POINTS
                        ax.axhline(level, color="grey", linestyle="--", linewidth=1.0)
                    ax.errorbar(rows["x"], rows["acc_pct"],
                                yerr=rows["err_pct"], capsize=3, markersize=6, linewidth=1.2,
                                label=label if legend else "_nolegend_", **style)
                    points += [(x, y, e, style) for x, y, e in
                               zip(rows["x"], rows["acc_pct"], rows["err_pct"])]
                    if len(rows) > 1:
                        for x, y, name in zip(rows["x"], rows["acc_pct"],
                                              rows["scoring_budget"]):
                            ax.annotate(str(name), (x, y), textcoords="offset points",
                                        xytext=(4, 4), fontsize="x-small", color=style["color"])
                if points:
                    _focus(ax, points, floor)
                ax.set_xlim(-0.05 * max(x_max, 1.0), 1.08 * max(x_max, 1.0))
                ax.set_title(f"{rate:.0%} pruned" + (f", retrain budget: {budget}"
                                                     if len(budgets) > 1 else ""),
                             fontsize="medium")
                ax.grid(True, alpha=0.3)
                if row == len(budgets) - 1:
                    ax.set_xlabel("scoring compute (full trainings)")
            axes[row][0].set_ylabel("test accuracy (%), mean ± std over seeds")
        legend_below(fig, len(labels))


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
        require_columns(ranks, ["rank_a", "rank_b"], f"ranks for {kind!r}")
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
        metrics: one row per retrained model (see :mod:`unseen.tables`).
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
    require_columns(
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
