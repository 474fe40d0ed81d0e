"""Print how class-skewed a run's coresets are (the Markdown table in docs/results.md).

    python docs/results/coreset_composition.py RUN_DIR [--rates 0.5 0.7]

reads every ``RUN_DIR/results/seed*/coresets/<selection>/rate<r>/coreset.parquet``
and prints, per selection and rate, the share of the coreset taken by its
smallest and its largest class (in %, mean over seeds). With C balanced classes
a uniform coreset gives 100 / C for both; a coreset that keeps only hard
samples drops the easy classes, which is what a retrain cannot recover from.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

CORESET = re.compile(r"seed(\d+)/coresets/([^/]+)/rate([0-9.]+)/coreset\.parquet$")


def class_shares(run: Path) -> pd.DataFrame:
    """One row per (seed, selection, rate): smallest and largest class share in %."""
    rows = []
    for path in sorted((run / "results").glob("seed*/coresets/*/rate*/coreset.parquet")):
        seed, selection, rate = CORESET.search(path.as_posix()).groups()
        shares = 100 * pd.read_parquet(path, columns=["label"])["label"].value_counts(normalize=True)
        rows.append({"selection": selection, "pruning_rate": float(rate), "seed": int(seed),
                     "smallest_class_pct": shares.min(), "largest_class_pct": shares.max()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a workflow directory (holding results/)")
    parser.add_argument("--rates", type=float, nargs="*", help="only these pruning rates")
    args = parser.parse_args()
    table = class_shares(args.run)
    if args.rates:
        table = table[table["pruning_rate"].isin(args.rates)]
    summary = table.groupby(["selection", "pruning_rate"]).agg(
        smallest=("smallest_class_pct", "mean"), largest=("largest_class_pct", "mean"))
    cells = [f"{a:.1f} / {b:.1f}" for a, b in zip(summary["smallest"], summary["largest"])]
    wide = pd.Series(cells, index=summary.index).unstack("pruning_rate").fillna("")
    wide.columns = [f"{100 * r:.0f} %" for r in wide.columns]
    print("smallest / largest class share of the coreset, % (mean over seeds)\n")
    print(wide.to_markdown())

if __name__ == "__main__":
    main()
