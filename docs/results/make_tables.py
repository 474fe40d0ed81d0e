"""Print the Markdown tables of docs/results.md from a report's summary and diagnostics.

    python docs/results/make_tables.py docs/results/fashion_mnist

reads ``summary.parquet`` and ``diagnostics.parquet`` there (copies of a run's
``results/report/``) and prints test accuracy, worst-class accuracy, std of
per-class accuracy (all in %, mean ± std over seeds) and scoring cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

METHOD_NAMES = {"fitting": "fitting", "unseen": "UNSEEN multi-step",
                "unseen_single": "UNSEEN single-step"}


def label(row) -> str:
    if row.method in ("full", "random"):
        return row.method
    name = f"{METHOD_NAMES[row.method]} {row.scorer}"
    return name if row.strategy == "top" else f"{name} ({row.strategy})"


def cell(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}" if pd.isna(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def pivot(summary: pd.DataFrame, column: str) -> str:
    summary = summary.assign(
        selection=summary.apply(label, axis=1),
        value=[cell(m, s) for m, s in zip(summary[f"{column}_mean"], summary.get(f"{column}_std", pd.Series(float("nan"), index=summary.index)))],
        rate=[("full data" if r == 0 else f"{100 * r:.0f} %") for r in summary["pruning_rate"]],
    )
    table = summary.pivot(index="selection", columns="rate", values="value")
    order = list(dict.fromkeys(summary["selection"]))
    columns = ["full data"] + [c for c in table.columns if c != "full data"]
    return table.loc[order, columns].fillna("").to_markdown()


def main(folder: str) -> None:
    summary = pd.read_parquet(Path(folder) / "summary.parquet")
    summary = summary.sort_values(["pruning_rate"], kind="stable")
    print(f"Test accuracy (%), mean ± std over seeds (seeds per cell: {sorted(int(n) for n in summary['n_seeds'].unique())})\n")
    print(pivot(summary, "test_accuracy") + "\n")
    print("Worst-class test accuracy (%)\n")
    print(pivot(summary, "worst_class_accuracy") + "\n")
    print("Std of per-class accuracy (%, lower = classes closer together)\n")
    print(pivot(summary, "per_class_accuracy_std") + "\n")
    cost = summary[summary["scoring_sample_epochs"] > 0].assign(selection=lambda d: d.apply(label, axis=1))
    cost = cost.groupby("selection", sort=False)[["scoring_sample_epochs", "scoring_wall_seconds"]].mean()
    print("Scoring cost per coreset (mean over rates and seeds)\n")
    print(cost.round(1).to_markdown() + "\n")
    diagnostics = pd.read_parquet(Path(folder) / "diagnostics.parquet")
    print("Score diagnostics\n")
    print(diagnostics[["scorer", "kind", "n_seeds", "std", "iqr", "concentration",
                       "rank_pearson_mean", "rank_pearson_min", "n_seed_pairs"]].round(3).to_markdown(index=False))


if __name__ == "__main__":
    main(sys.argv[1])
