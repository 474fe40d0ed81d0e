"""Checks the Snakefile runs when it is parsed, before any job starts.

Each check is cheap (labels and file footers, never pixels or model weights)
and raises :class:`PreflightError` with a message that names the file, key or
class at fault and the fix. :func:`preflight` runs them all; the rules call it
once, in the main Snakemake process (not again inside each cluster job).

Why here and not in the jobs: a job that fails is cleaned up by Snakemake,
which deletes that job's outputs, and a damaged file that is newer than the
outputs built from it makes Snakemake rerun (and so first delete) every one of
them, the report included. Stopping before the first job keeps every finished
output.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from unseen import io
from unseen.data import train_label_counts
from unseen.naming import CoresetId
from unseen.plugins import strategies_where
from unseen.selection import coreset_size
from unseen.strategies import DEFAULT_STRATEGY

log = logging.getLogger("unseen.preflight")

#: Strategies that give every class a quota: a coreset smaller than the number
#: of classes cannot hold one sample of each (their registry entries say so).
CLASS_AWARE_STRATEGIES = strategies_where(class_aware=True)


class PreflightError(RuntimeError):
    """The run cannot succeed as configured, or a finished output is damaged."""


def preflight(config: dict[str, Any], results: str | Path = "results", argv: list[str] = ()) -> None:
    """Run every check on a validated ``config`` and the outputs under ``results``.

    ``argv``: the snakemake command line; in a dry run a damaged dataset cache is
    only reported, and damaged files it names (``--forcerun FILE``) are being rebuilt.
    """
    check_outputs(results, dry_run=invocation(list(argv)) == "dry-run",
                  rebuilding=[Path(a) for a in argv])
    check_splits(config, Path(results) / "data" / "dataset.npz")
    check_device(config["device"])


#: Snakemake options that build nothing: checking outputs would only get in the way
#: (``--unlock`` after a crash must work even with a damaged file around).
NON_RUN_OPTIONS = (
    "--unlock", "--lint", "--report", "--list-rules", "--list", "-l", "--list-target-rules",
    "--lt", "--summary", "-S", "--detailed-summary", "-D", "--cleanup-metadata", "--cm",
    "--delete-all-output", "--delete-temp-output", "--touch", "-t", "--dag", "--rulegraph",
    "--filegraph", "--d3dag", "--containerize", "--archive", "--generate-unit-tests",
)
DRY_RUN_OPTIONS = ("-n", "--dry-run", "--dryrun", "--just-print")


def invocation(argv: list[str]) -> str:
    """"run", "dry-run" or "other" (see :data:`NON_RUN_OPTIONS`) for a snakemake command line.

    At parse time Snakemake has not yet told the workflow how it was called.
    """
    options = [a.split("=")[0] for a in argv[1:] if a.startswith("-")]
    if any(a in NON_RUN_OPTIONS for a in options):
        return "other"
    short_clusters = [a for a in options if not a.startswith("--") and len(a) > 2]
    if any(a in DRY_RUN_OPTIONS for a in options) or any("n" in a for a in short_clusters):
        return "dry-run"
    return "run"


# ---------------------------------------------------------------------------
# Damaged outputs


def damaged_outputs(results: str | Path) -> list[tuple[Path, str]]:
    """(path, problem) of every existing output under ``results`` that is not complete.

    Temporaries of jobs that were killed (``.*.partial``) are not outputs and are skipped.
    """
    found = []
    for path in sorted(Path(results).rglob("*")):
        if path.name.endswith(".partial") or not path.is_file():
            continue
        problem = io.damage(path, io.schema_of(path))
        if problem:
            found.append((path, problem))
    return found


def check_outputs(results: str | Path, dry_run: bool = False, rebuilding: list[Path] = ()) -> None:
    """Stop on a damaged output, naming it and the command that repairs it.

    Snakemake does not rebuild a missing intermediate file whose products are
    up to date, so deleting a damaged file is no fix; ``--forcerun FILE``
    reruns its job and every job after it. Files in ``rebuilding`` (the
    command line's words) are being forced and pass. The dataset cache
    (``results/data/dataset.npz``) is only a decoded copy of the source, so a
    damaged one is removed (in a dry run: reported); ``prepare_data`` rebuilds
    it when a job next needs it, and the jobs after it rerun, with the same results.
    """
    forced = {path.absolute() for path in rebuilding}
    damaged = [(p, why) for p, why in damaged_outputs(results) if p.absolute() not in forced]
    cache = Path(results) / "data" / "dataset.npz"
    for path, problem in [d for d in damaged if d[0] == cache]:
        damaged.remove((path, problem))
        if dry_run:
            log.warning("%s is damaged (%s); a real run removes and rebuilds it", path, problem)
        else:
            log.warning("%s is damaged (%s); removing it: prepare_data rebuilds it", path, problem)
            path.unlink()
    if damaged:
        listing = "\n".join(f"  {path}: {problem}" for path, problem in damaged)
        files = " ".join(str(path) for path, _ in damaged)
        raise PreflightError(
            f"{len(damaged)} finished output(s) are damaged (cut short or edited by hand), so no"
            f" job was started:\n{listing}\nRebuild them by rerunning the same command with"
            f"\n  --forcerun {files}\n(paths relative to the working directory {Path.cwd()}: the"
            " jobs that write them run again, and so do the jobs after them; every other finished"
            " output is kept)"
        )
    leftovers = io.partial_files(results)
    if leftovers:
        log.warning(
            "%d temporary file(s) of killed jobs under %s (e.g. %s); each is removed when its"
            " job next succeeds, or now: find %s -name '.*.partial' -delete",
            len(leftovers), results, leftovers[0], results,
        )


# ---------------------------------------------------------------------------
# Impossible splits


def check_splits(config: dict[str, Any], cache: str | Path | None = None) -> None:
    """Stop when a class is too small for the folds or a class-aware coreset.

    Reads the training labels only (:func:`unseen.data.train_label_counts`);
    silently passes where they cannot be had cheaply.
    """
    found = train_label_counts(config["dataset"], cache)
    if found is None:
        return
    counts, classes = found
    name = config["dataset"].get("name", "digits")
    k = config["folds"]["k"]
    small = sorted(((classes[c], int(n)) for c, n in enumerate(counts) if n < k), key=lambda x: x[1])
    if small:
        shown = ", ".join(f"class {c!r} has {n}" for c, n in small[:5])
        smallest = min(n for _, n in small)
        raise PreflightError(
            f"config key 'folds.k': {k} folds need at least {k} training samples in every class,"
            f" but in dataset {name!r} {shown}" + (" and more" if len(small) > 5 else "")
            + ". Some folds would hold no sample of such a class, so its fold models never see it."
            + (f" Fix: set folds.k to at most {smallest}." if smallest >= 2 else
               " Fix: add images to that class or remove its folder (a class needs at least"
               " 2 samples to be split).")
        )
    strategies = set(config["selection"]["strategy"])
    strategies |= {CoresetId.parse(name).strategy for name in config.get("extra_selections", [])}
    class_aware = sorted(strategies & set(CLASS_AWARE_STRATEGIES))
    n_total, n_classes = int(counts.sum()), len(classes)
    for i, rate in enumerate(config["pruning_rates"]):
        kept = coreset_size(n_total, rate)
        if class_aware and kept < n_classes:
            raise PreflightError(
                f"config key 'pruning_rates[{i}]': {rate} keeps {kept} of {n_total} samples, fewer"
                f" than the {n_classes} classes, so strategy {class_aware[0]!r} cannot keep a"
                f" sample of every class ({n_classes - kept} classes would have none). Fix: use a rate of"
                f" at most {max_rate_keeping(n_total, n_classes)}, or the strategy {DEFAULT_STRATEGY!r}."
            )
        if kept >= n_total:
            raise PreflightError(
                f"config key 'pruning_rates[{i}]': {rate} removes no sample of the {n_total}"
                f" training samples (the coreset would be the full set). Fix: use a rate of at"
                f" least {min_rate_removing_one(n_total)}."
            )


def max_rate_keeping(n_total: int, n_keep: int) -> float:
    """Largest rate with 4 decimals whose coreset keeps at least ``n_keep`` of ``n_total``."""
    for ten_thousandths in range(9999, 0, -1):
        rate = ten_thousandths / 10000
        if coreset_size(n_total, rate) >= n_keep:
            return rate
    return 0.0001


def min_rate_removing_one(n_total: int) -> float:
    """Smallest rate with 4 decimals whose coreset is smaller than ``n_total``."""
    for ten_thousandths in range(1, 10000):
        rate = ten_thousandths / 10000
        if coreset_size(n_total, rate) < n_total:
            return rate
    return 0.9999


# ---------------------------------------------------------------------------
# Device


def check_device(device: str) -> None:
    """``device: cuda`` without CUDA: stop here, or warn on a SLURM submit host.

    On a SLURM login node (``sbatch`` on PATH) the jobs run on GPU nodes, and
    login nodes often have no GPU by design; elsewhere every job would fail.
    """
    if not device.startswith("cuda"):
        return
    import torch

    if torch.cuda.is_available():
        return
    if shutil.which("sbatch"):
        log.warning(
            "device %r: this machine has no CUDA (a SLURM login node?); the jobs need GPU"
            " nodes: keep gpu requests in the profile, or set device: auto", device,
        )
        return
    raise PreflightError(
        f"config key 'device': {device!r} but this machine has no CUDA device (torch"
        f" {torch.__version__}, torch.cuda.is_available() is False), so every training job"
        " would fail. Fix: set device: auto (CUDA when there is one, else CPU) or device: cpu,"
        " or run where a GPU is visible (nvidia-smi)."
    )


# ---------------------------------------------------------------------------
# Config file syntax


def check_config_syntax(path: str | Path) -> None:
    """Raise :class:`PreflightError` naming the file, line and column of a YAML error.

    Snakemake's own message ("Config file is not valid JSON or YAML") names neither.
    A missing file is left to Snakemake.
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        context = getattr(err, "context", None)
        start = getattr(err, "context_mark", None)
        if context and start:
            context += f" that starts at line {start.line + 1}"
        raise PreflightError(
            f"{where}: invalid YAML: {getattr(err, 'problem', None) or err}"
            f" ({context or 'check the brackets, quotes and indentation'})."
            " Fix the file there (indent with spaces, not tabs) and rerun."
        ) from None
