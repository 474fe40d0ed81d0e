"""Atomic file output and the Parquet tables the workflow exchanges.

Every writer goes through :func:`atomic_path`: the data is written to a hidden
temporary file next to the target and renamed into place only after it was
closed successfully. A killed or duplicated job therefore never leaves a file
under the final name that looks complete but is truncated.

The column layout of every table is fixed here (``*_SCHEMA``) and documented in
results/README.md (a test keeps the two in step).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FOLDS_SCHEMA = pa.schema(
    [("sample_id", pa.int64()), ("label", pa.int64()), ("fold", pa.int64())]
)
SHARD_SCHEMA = pa.schema(
    [
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("model", pa.string()),
        ("score", pa.float64()),
    ]
)
AGGREGATE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("score", pa.float64()),
        ("score_std", pa.float64()),
        ("n_scores", pa.int64()),
    ]
)
CLASS_DIFFICULTY_SCHEMA = pa.schema(
    [
        ("label", pa.int64()),
        ("n_predictions", pa.int64()),
        ("n_errors", pa.int64()),
        ("error_rate", pa.float64()),
    ]
)
CORESET_SCHEMA = pa.schema(
    [
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("stage", pa.int64()),
        ("score", pa.float64()),
    ]
)
METRICS_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("scorer", pa.string()),
        ("strategy", pa.string()),
        ("pruning_rate", pa.float64()),
        ("seed", pa.int64()),
        ("coreset_size", pa.int64()),
        ("n_train_total", pa.int64()),
        ("test_accuracy", pa.float64()),
        ("worst_class_accuracy", pa.float64()),
        ("per_class_accuracy", pa.list_(pa.float64())),
        ("epochs", pa.int64()),
        ("train_samples_seen", pa.int64()),
        ("wall_seconds", pa.float64()),
        ("retrain_budget", pa.string()),
        ("train_steps", pa.int64()),
        ("scoring_budget", pa.string()),
        ("scoring_steps", pa.int64()),
        ("scoring_sample_epochs", pa.int64()),
        ("scoring_wall_seconds", pa.float64()),
        ("train_samples_per_s", pa.float64()),
        ("model", pa.string()),
        ("device", pa.string()),
    ]
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".partial", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); results are shared like any new file.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table(df: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema) -> None:
    """Write ``df`` as Parquet with exactly the columns and dtypes of ``schema``.

    Raises ``ValueError`` when a column is missing, so a table never silently
    changes layout.
    """
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"table for {path} lacks columns {missing}")
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet table written by :func:`write_table` into pandas."""
    return pq.read_table(path).to_pandas()


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_id_list(sample_ids: np.ndarray, path: str | os.PathLike) -> None:
    """Write one sample id per line (sorted ascending), atomically."""
    ids = np.sort(np.asarray(sample_ids, dtype=np.int64))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))


def read_id_list(path: str | os.PathLike) -> np.ndarray:
    """Read a file written by :func:`write_id_list`; shape (n,), int64."""
    text = Path(path).read_text().split()
    return np.array([int(t) for t in text], dtype=np.int64)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz`` file, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into memory."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
