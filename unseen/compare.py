"""Compare two runs' results file by file: folds, score tables, stage tables and coresets.

For checking that a change of code left a run's outputs as they were, or that
the same config and seed reproduce them (determinism)::

    unseen compare-runs results/ /tmp/other_checkout/results/

Timings and retrain metrics are not compared: wall times differ from run to run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from unseen import io

# What a run decides, relative to its results/ folder: the folds, every score
# table (fold shards, out-of-fold and fitting aggregates, stage scores), the
# stage tables and the coresets with their id lists.
COMPARED_PATTERNS = (
    "seed*/split/folds.parquet",
    "seed*/scores/**/*.parquet",
    "seed*/coresets/**/*.parquet",
    "seed*/coresets/**/coreset.txt",
)
# The statuses of a compared path, in report order.
IDENTICAL = "identical"    # same bytes
EQUAL = "equal_content"    # same table (columns, types, values), other bytes
DIFFERENT = "different"
ONLY_LEFT = "only_left"
ONLY_RIGHT = "only_right"
STATUSES = (IDENTICAL, EQUAL, DIFFERENT, ONLY_LEFT, ONLY_RIGHT)


def _outputs(results: Path, patterns: tuple[str, ...]) -> set[str]:
    return {
        str(path.relative_to(results))
        for pattern in patterns
        for path in results.glob(pattern)
        if path.is_file()
    }


def _status(left: Path, right: Path) -> str:
    if left.read_bytes() == right.read_bytes():
        return IDENTICAL
    if left.suffix == ".parquet" and io.read_table(left).equals(io.read_table(right)):
        return EQUAL
    return DIFFERENT


def compare_results(
    left: str | os.PathLike, right: str | os.PathLike,
    patterns: tuple[str, ...] = COMPARED_PATTERNS,
) -> pd.DataFrame:
    """One row per output path found under either results folder.

    Args:
        left, right: two runs' ``results/`` folders.
        patterns: glob patterns relative to them (default :data:`COMPARED_PATTERNS`).

    Returns:
        DataFrame with columns ``path`` (relative to the results folder, sorted)
        and ``status``: ``identical`` (same bytes), ``equal_content`` (a Parquet
        table with the same columns, types and values, other bytes), ``different``,
        ``only_left`` or ``only_right``.
    """
    left, right = Path(left), Path(right)
    for folder in (left, right):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such results folder")
    in_left, in_right = _outputs(left, patterns), _outputs(right, patterns)
    rows = []
    for path in sorted(in_left | in_right):
        if path not in in_right:
            status = ONLY_LEFT
        elif path not in in_left:
            status = ONLY_RIGHT
        else:
            status = _status(left / path, right / path)
        rows.append({"path": path, "status": status})
    return pd.DataFrame(rows, columns=["path", "status"])
