"""Cost against quality: the scoring-budget x retrain-budget ablation (issue 10).

Each scoring budget is its own workflow run (``budget.scoring`` changes every
fold model); :func:`unseen.tables.budget_ablation_table` joins their metrics
tables and expresses the scoring compute as a multiple of one full training, so
a user can read what a better coreset costs, and
:func:`unseen.plots.plot_cost_quality` draws it (the report's cost-quality
figure, with one point per selection where a run has one scoring budget).
``unseen budget-ablation`` writes both (docs/results.md shows the commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from unseen.io import atomic_path
from unseen.plots import plot_cost_quality
from unseen.tables import budget_ablation_table


def write_budget_ablation(
    metrics: pd.DataFrame, out_dir: str | Path, seeds: Sequence[int] | None = None
) -> dict[str, Path]:
    """Write ``ablation.parquet``, ``ablation.csv`` and ``ablation.png`` into ``out_dir``.

    ``metrics``: the runs' ``results/summary.parquet`` rows joined; ``seeds``:
    keep only these (None: all). See :func:`unseen.tables.budget_ablation_table`.
    """
    out = Path(out_dir)
    table = budget_ablation_table(metrics, seeds)
    paths = {"table": out / "ablation.parquet", "csv": out / "ablation.csv",
             "figure": out / "ablation.png"}
    with atomic_path(paths["table"]) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    plot_cost_quality(table, paths["figure"])
    return paths
