"""Cost against quality: the scoring-budget x retrain-budget ablation (issue 10).

Each scoring budget is its own workflow run (``budget.scoring`` changes every
fold model); :func:`budget_ablation_table` joins their metrics tables and
expresses the scoring compute as a multiple of one full training, so a user can
read what a better coreset costs. ``unseen budget-ablation`` writes the table
and :func:`plot_budget_ablation`'s figure (docs/results.md shows the commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from unseen.budget import RETRAIN_BUDGETS
from unseen.io import atomic_path
from unseen.plots import figure, legend_below, line_styles
from unseen.report import selection_label

ABLATION_KEYS = ("retrain_budget", "scoring_budget", "method", "scorer", "strategy", "pruning_rate")

ABLATION_COLUMNS = (
    *ABLATION_KEYS, "n_seeds", "test_accuracy_mean", "test_accuracy_std",
    "scoring_compute_mean", "retrain_compute_mean",
)


def budget_ablation_table(metrics: pd.DataFrame, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Accuracy and compute per (retrain budget, scoring budget, selection, pruning rate).

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


def plot_budget_ablation(table: pd.DataFrame, path: str | Path) -> None:
    """Test accuracy (%) against scoring compute (multiples of one full training).

    One panel per retrain budget; one colour per pruning rate. Each scored
    selection is a line through its scoring budgets (marker per method);
    random, which costs no scoring, is a dashed horizontal line of its rate's
    colour. Error bars are ±1 std over seeds.
    """
    if table.empty:
        raise ValueError("ablation table is empty: nothing to plot")
    budgets = [b for b in RETRAIN_BUDGETS if b in set(table["retrain_budget"])]
    rates = sorted(table["pruning_rate"].unique())
    colours = {r: s["color"] for r, s in zip(rates, line_styles(len(rates)))}
    scored = table[table["method"] != "random"]
    selections = list(dict.fromkeys(
        scored[["method", "scorer", "strategy"]].itertuples(index=False, name=None)))
    markers = dict(zip(selections, ["o", "s", "^", "D", "v", "P", "X", "*"] * 4))
    with figure(path, figsize=(6.5 * len(budgets), 5.0), ncols=len(budgets),
                squeeze=False, sharey=True) as (fig, axes):
        for panel, (ax, budget) in enumerate(zip(axes[0], budgets)):
            part = table[table["retrain_budget"] == budget]
            for rate in rates:
                at_rate = part[np.isclose(part["pruning_rate"], rate)]
                random_rows = at_rate[at_rate["method"] == "random"]
                if not random_rows.empty:
                    ax.axhline(float(random_rows["test_accuracy_mean"].mean()) * 100.0,
                               color=colours[rate], linestyle="--", linewidth=1.0,
                               label=f"random, {rate:.0%} pruned" if panel == 0 else "_nolegend_")
                for selection in selections:
                    rows = at_rate[
                        (at_rate["method"] == selection[0]) & (at_rate["scorer"] == selection[1])
                        & (at_rate["strategy"] == selection[2])
                    ].sort_values("scoring_compute_mean")
                    if rows.empty:
                        continue
                    ax.errorbar(
                        rows["scoring_compute_mean"], rows["test_accuracy_mean"] * 100.0,
                        yerr=rows["test_accuracy_std"].fillna(0.0) * 100.0,
                        color=colours[rate], marker=markers[selection], capsize=3, linewidth=1.2,
                        label=(f"{selection_label(*selection)}, {rate:.0%} pruned"
                               if panel == 0 else "_nolegend_"),
                    )
            ax.set_xlabel("scoring compute (multiples of one full training)")
            ax.set_title(f"retrain budget: {budget}", fontsize="medium")
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("test accuracy (%), mean ± std over seeds")
        legend_below(fig, len(rates) * (len(selections) + 1))


def write_budget_ablation(
    metrics: pd.DataFrame, out_dir: str | Path, seeds: Sequence[int] | None = None
) -> dict[str, Path]:
    """Write ``ablation.parquet``, ``ablation.csv`` and ``ablation.png`` into ``out_dir``."""
    out = Path(out_dir)
    table = budget_ablation_table(metrics, seeds)
    paths = {"table": out / "ablation.parquet", "csv": out / "ablation.csv",
             "figure": out / "ablation.png"}
    with atomic_path(paths["table"]) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    plot_budget_ablation(table, paths["figure"])
    return paths
