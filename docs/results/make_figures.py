"""Redraw the figures of docs/results.md from a run's stored tables, with the report's code.

    python docs/results/make_figures.py docs/results/fashion_mnist_validated

reads the copies of a run's tables in that folder and rewrites, with
:mod:`unseen.plots` (the functions the ``report`` rule calls):

* ``accuracy_vs_rate.png`` from ``summary.parquet`` and ``metrics.parquet``
  (the run's ``results/summary.parquet``, one row per model: the differences
  to random are paired by seed). Without ``metrics.parquet`` only a one-seed
  summary will do (its means are then that seed's accuracies); a summary from
  before retrain budgets existed (no ``retrain_budget`` column) is labelled
  with its fixed-epoch retrain, ``epochs``.
* ``cost_quality.png`` from ``metrics.parquet`` (the full-data model's
  training is the unit of compute).
* ``ablation.png`` from ``ablation.parquet`` (``unseen budget-ablation``).

The score histograms, rank stability and per-class figures need the run's
score tables or are unchanged; they are left as they are. Prints what it
wrote and what it could not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from unseen.plots import plot_accuracy_vs_rate, plot_cost_quality
from unseen.tables import budget_ablation_table, difference_to_random_table


def one_seed_metrics(summary: pd.DataFrame) -> pd.DataFrame:
    """Model rows of a one-seed summary: each selection's mean is its seed's accuracy."""
    if (summary["n_seeds"] != 1).any():
        raise ValueError("a summary over several seeds cannot give each seed's accuracy")
    return summary.rename(columns={"test_accuracy_mean": "test_accuracy"}).assign(seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    summary = pd.read_parquet(folder / "summary.parquet")
    if "retrain_budget" not in summary:
        summary = summary.assign(retrain_budget="epochs", scoring_budget="epochs")
    metrics_path = folder / "metrics.parquet"
    metrics = pd.read_parquet(metrics_path) if metrics_path.exists() else None
    if metrics is None and (summary["n_seeds"] != 1).any():
        print(f"{folder}: accuracy_vs_rate.png not redrawn: no metrics.parquet and several seeds")
    else:
        rows = metrics if metrics is not None else one_seed_metrics(summary)
        plot_accuracy_vs_rate(summary, difference_to_random_table(rows),
                              folder / "accuracy_vs_rate.png")
        print(f"{folder}: wrote accuracy_vs_rate.png")
    if metrics is not None:
        plot_cost_quality(budget_ablation_table(metrics), folder / "cost_quality.png")
        print(f"{folder}: wrote cost_quality.png")
    else:
        print(f"{folder}: cost_quality.png not drawn: no metrics.parquet (the full-data model's "
              "samples processed are the unit of compute)")
    if (folder / "ablation.parquet").exists():
        plot_cost_quality(pd.read_parquet(folder / "ablation.parquet"), folder / "ablation.png")
        print(f"{folder}: wrote ablation.png")


if __name__ == "__main__":
    main()
