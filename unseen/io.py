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
import errno
import glob
import json
import os
import re
import tempfile
import time
import zipfile
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
#: One row per scoring model: how well it fits its training samples and the ones it scores
#: (unseen.regime; results/README.md).
SCORING_MODELS_SCHEMA = pa.schema(
    [
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("kind", pa.string()),
        ("n_train", pa.int64()),
        ("n_scored", pa.int64()),
        ("train_accuracy", pa.float64()),
        ("train_loss", pa.float64()),
        ("scored_accuracy", pa.float64()),
        ("scored_loss", pa.float64()),
        ("train_steps", pa.int64()),
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
    started = time.time()
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                err.errno,
                f"{err.strerror} while writing {target}: free space on that file system"
                f" (df -h {target.parent}; quota -s) and rerun the same snakemake command;"
                " finished outputs are kept and this one was not written",
            ) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    remove_stale_partials(target, older_than=started)


def partial_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of :func:`atomic_path` under ``folder`` (left by killed jobs), sorted."""
    return sorted(Path(folder).rglob(".*.partial"))


def remove_stale_partials(target: str | os.PathLike, older_than: float) -> None:
    """Remove temporaries of ``target`` last written before ``older_than`` (epoch seconds).

    A job killed mid-write (SIGKILL, the scheduler's memory or time limit)
    leaves its temporary file behind; the next successful write of the same
    output removes it. A temporary written after ``older_than`` belongs to a
    writer that is still running and is left alone.
    """
    target = Path(target)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        try:
            if stale.stat().st_mtime < older_than:
                stale.unlink()
        except FileNotFoundError:
            pass


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


def read_table(
    path: str | os.PathLike, schema: pa.Schema | None = None, n_total: int | None = None
) -> pd.DataFrame:
    """Read a Parquet table written by :func:`write_table` into pandas.

    With ``schema``, the rows are checked too (:func:`check_rows`): sample ids
    unique (and below ``n_total``, the training-set size, when given), and so on.

    Raises:
        DamagedFileError: the file is not readable Parquet (truncated, overwritten),
            lacks a column of ``schema`` or has rows no job writes (edited by hand);
            the message names the file and the fix.
    """
    with reading(path):
        table = pq.read_table(path)
    if schema is not None:
        check_columns(path, table.schema, schema)
    frame = table.to_pandas()
    if schema is not None:
        check_rows(path, frame, schema, n_total)
    return frame


#: Tables with one row per sample: each sample id at most once.
PER_SAMPLE_SCHEMAS = (FOLDS_SCHEMA, SHARD_SCHEMA, AGGREGATE_SCHEMA, CORESET_SCHEMA)


def check_rows(
    path: str | os.PathLike, frame: pd.DataFrame, schema: pa.Schema, n_total: int | None = None
) -> None:
    """Raise :class:`DamagedFileError` for rows that no job of the workflow writes.

    The one check of every reader of a per-sample table (:data:`PER_SAMPLE_SCHEMAS`)
    and of the parse-time check (:func:`damage`): each sample id at most once,
    ids in ``0..n_total-1`` (with ``n_total``, the training-set size); a fold
    table lists exactly the ids ``0..len-1`` (every training sample once); an
    out-of-fold aggregate has the same number of scores for every sample (K-1
    in paper mode, 1 in holdout mode).
    """
    if not any(schema.equals(s) for s in PER_SAMPLE_SCHEMAS):
        return
    ids = frame["sample_id"].to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1]
        raise DamagedFileError(path, f"sample id(s) {twice[:5].tolist()} appear more than once"
                                     f" ({len(twice)} in all; was it edited by hand?)")
    outside = ids[(ids < 0) | (ids >= (n_total if n_total is not None else np.inf))]
    if len(outside):
        where = "negative" if n_total is None else (
            f"outside 0..{n_total - 1} (the dataset has {n_total} training samples)")
        raise DamagedFileError(
            path, f"sample id(s) {np.sort(outside)[:5].tolist()} are {where}; was it edited by"
                  " hand?")
    if schema.equals(FOLDS_SCHEMA):
        expected = len(ids) if n_total is None else n_total
        missing = np.setdiff1d(np.arange(expected), ids)
        if len(missing) or len(ids) != expected:
            raise DamagedFileError(
                path, f"lists {len(ids)} samples but the dataset has"
                      f" {max(expected, int(ids.max()) + 1 if len(ids) else 0)};"
                      f" sample id(s) {missing[:5].tolist()} are missing (every training sample"
                      " must be in one fold; was it edited by hand?)")
    if schema.equals(AGGREGATE_SCHEMA) and frame["n_scores"].nunique() > 1:
        found = sorted(int(n) for n in frame["n_scores"].unique())
        raise DamagedFileError(
            path, f"samples have {found} out-of-fold scores, not one count for all (K-1 in"
                  " paper mode, 1 in holdout mode): a fold's files do not come from its own fold"
                  " model (a predictions.npz copied from another fold?)")


def check_columns(path: str | os.PathLike, found: pa.Schema, expected: pa.Schema) -> None:
    """Raise :class:`DamagedFileError` if ``found`` lacks a column of ``expected``."""
    missing = [name for name in expected.names if name not in found.names]
    if missing:
        raise DamagedFileError(
            path, f"lacks the column(s) {missing} (it has {found.names}; was it edited by hand?)"
        )


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file written by :func:`write_json`; DamagedFileError names it if it is not whole."""
    with reading(path):
        return json.loads(Path(path).read_text())


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
    """Load every array of an ``.npz`` file into memory.

    Raises:
        DamagedFileError: the file is not a complete ``.npz`` written by :func:`save_npz`.
    """
    with reading(path), open_npz(path) as data:
        return {key: data[key] for key in data.files}


def read_npz_member(path: str | os.PathLike, key: str) -> np.ndarray | None:
    """One array of an ``.npz`` file without reading the others; None if it has no ``key``."""
    with reading(path), open_npz(path) as data:
        return data[key] if key in data.files else None


def open_npz(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
    """``np.load`` of an ``.npz`` archive; ValueError for anything else (e.g. a bare ``.npy``)."""
    if not zipfile.is_zipfile(path):  # else numpy's error speaks of pickled data
        raise ValueError("not an .npz archive (no complete zip directory at its end)")
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    return data


# ---------------------------------------------------------------------------
# Damaged files. Outputs are renamed into place only when complete, so a damaged
# file under a final name comes from outside a job: a hand edit, a copy cut
# short, a file system that lost data. Snakemake cannot tell (the file exists
# and is newer than its inputs), so readers check, and the Snakefile checks
# every existing output before any job starts (unseen.preflight).


class DamagedFileError(RuntimeError):
    """A file under ``results/`` cannot be read; the message names it and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(
            f"{path} is damaged: {problem.rstrip('.')}. Rebuild it and what was made from it:"
            f" rerun the same snakemake command with --forcerun {path}  (the job that writes"
            " it runs again, and so do the jobs after it; every other finished output is kept)"
        )


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn a decoder's error while reading ``path`` into :class:`DamagedFileError`.

    A missing file stays FileNotFoundError and an unreadable one PermissionError,
    with the path and the fix in the message.
    """
    try:
        yield
    except DamagedFileError:
        raise
    except FileNotFoundError:
        raise
    except PermissionError as err:
        raise PermissionError(
            err.errno,
            f"{path} cannot be read by user {_user()} ({err.strerror}): ask its owner to"
            f" make it readable (chmod a+r {path}) or run in your own working directory",
        ) from err
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pa.ArrowException) as err:
        raise DamagedFileError(path, f"{type(err).__name__}: {err}") from err


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def check_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`DamagedFileError` unless ``path`` is a complete ``torch.save`` archive.

    torch saves a zip archive; its CRCs are checked without importing torch, so
    light jobs stay light.
    """
    check_zip(path)


def check_zip(path: str | os.PathLike) -> None:
    """Raise :class:`DamagedFileError` unless ``path`` is a zip archive whose CRCs all match."""
    with reading(path):
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} fails its CRC check")


PARQUET_MAGIC = b"PAR1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


def damage(
    path: str | os.PathLike, schema: pa.Schema | None = None, n_total: int | None = None
) -> str | None:
    """What is wrong with output ``path`` ("" or None: nothing found), cheaply.

    Reads only what proves a file complete: Parquet's footer (and, with
    ``schema``, its columns, and for a per-sample table the columns that
    :func:`check_rows` checks, with ``n_total`` the training-set size), a zip
    archive's central directory (``.npz``, ``.pt``), a whole JSON file, a PNG's
    first and last bytes. Other formats are not checked.
    """
    path = Path(path)
    suffix = path.suffix
    try:
        if suffix == ".parquet":
            found = pq.read_schema(path)
            if schema is not None:
                check_columns(path, found, schema)
                if any(schema.equals(s) for s in PER_SAMPLE_SCHEMAS):
                    columns = [c for c in ("sample_id", "n_scores") if c in schema.names]
                    frame = pq.read_table(path, columns=columns).to_pandas()
                    check_rows(path, frame, schema, n_total)
        elif suffix in (".npz", ".pt"):
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".png":
            with open(path, "rb") as handle:
                head = handle.read(8)
                handle.seek(max(0, path.stat().st_size - 8))
                tail = handle.read(8)
            if head != PNG_SIGNATURE or tail != PNG_END:
                return "not a complete PNG image"
    except DamagedFileError as err:
        return err.problem
    except (FileNotFoundError, PermissionError):
        return None  # not a damaged file: the readers name these themselves
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pa.ArrowException) as err:
        return f"{type(err).__name__}: {err}"
    return None


def schema_of(path: str | os.PathLike) -> pa.Schema | None:
    """The fixed schema of a Parquet table under ``results/`` by its place; None if it has none.

    The paths are those of the README's output tree.
    """
    parts = ("", "", "") + Path(path).parts
    name, folder, grandparent = parts[-1], parts[-2], parts[-3]
    if name == "folds.parquet":
        return FOLDS_SCHEMA
    if name == "class_difficulty.parquet":
        return CLASS_DIFFICULTY_SCHEMA
    if name == "scoring_models.parquet":
        return SCORING_MODELS_SCHEMA
    if name == "metrics.parquet" or (name == "summary.parquet" and folder != "report"):
        return METRICS_SCHEMA
    if name == "coreset.parquet" or re.fullmatch(r"stage\d+\.parquet", name):
        return CORESET_SCHEMA
    if name == "scores.parquet" or (grandparent, folder) == ("scores", "fitting") or (
        grandparent == "oof" and re.fullmatch(r"fold\d+", folder)
    ):
        return SHARD_SCHEMA
    if (grandparent, folder) == ("scores", "oof"):
        return AGGREGATE_SCHEMA
    return None
