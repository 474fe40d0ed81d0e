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

import json
import logging
import os
import shutil
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from unseen import io
from unseen.data import train_label_counts
from unseen.budget import epochs_of, scoring_budget_label, scoring_train_settings
from unseen.naming import CoresetId
from unseen.selection import coreset_size
# class-aware strategies give every class a quota: a coreset smaller than the
# number of classes cannot hold one sample of each (their registry entries say so)
from unseen.strategies import CLASS_AWARE_STRATEGIES, DEFAULT_STRATEGY

log = logging.getLogger("unseen.preflight")



class PreflightError(RuntimeError):
    """The run cannot succeed as configured, or a finished output is damaged."""


def preflight(config: dict[str, Any], results: str | Path = "results", argv: list[str] = (),
              fingerprint: str | None = None) -> None:
    """Run every check on a validated ``config`` and the outputs under ``results``.

    ``argv``: the snakemake command line; in a dry run a damaged dataset cache is
    only reported, and damaged files it names (``--forcerun FILE``) are being rebuilt
    (:func:`rebuilt_paths`). ``fingerprint``: :func:`unseen.data.dataset_fingerprint`
    of the config's dataset if the caller has it (it stats every image of an
    ImageFolder, so it is computed once), else computed here.
    """
    from unseen.data import cached_fingerprint, dataset_fingerprint

    rebuilding = rebuilt_paths(list(argv))
    fingerprint = fingerprint or dataset_fingerprint(config["dataset"])
    cache = Path(results) / "data" / "dataset.npz"
    found = train_label_counts(config["dataset"], cache, fingerprint)
    n_total = None if found is None else int(found[0].sum())
    stored = cached_fingerprint(cache) if cache.is_file() else None
    # Outputs made from another dataset (a changed subset, root or source) are stale, not
    # damaged: prepare_data reruns and every job after it, so their ids are not held against
    # the new dataset's size.
    dataset_changed = bool(stored) and stored != fingerprint
    check_outputs(results, dry_run=invocation(list(argv)) == "dry-run", rebuilding=rebuilding,
                  n_total=None if dataset_changed else n_total)
    if found is not None:
        check_splits(config, *found)
        check_record_epochs(config, n_total)
    check_made_with(config, results, n_total, rebuilding, fingerprint)
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


#: Snakemake options that rebuild every output.
FORCE_ALL_OPTIONS = ("-F", "--forceall")


def rebuilt_paths(argv: list[str]) -> list[Path] | None:
    """The files a snakemake command line rebuilds, as far as its words tell; None: all.

    Every word may be a file of ``--forcerun FILE ...`` (``-R``), also written
    ``--forcerun=FILE``; ``-F``/``--forceall`` rebuilds every output (None).
    Rule names (``-R train_fold_model``) are not resolved to files here.
    """
    if any(word in FORCE_ALL_OPTIONS for word in argv):
        return None
    return [Path(word.split("=", 1)[1] if word.startswith("-") and "=" in word else word)
            for word in argv]


def is_rebuilt(path: Path, rebuilding: list[Path] | None) -> bool:
    """Whether the command line rebuilds ``path`` (``rebuilding``: :func:`rebuilt_paths`)."""
    return rebuilding is None or path.absolute() in {p.absolute() for p in rebuilding}


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


def damaged_outputs(results: str | Path, n_total: int | None = None) -> list[tuple[Path, str]]:
    """(path, problem) of every existing output under ``results`` that is not complete.

    ``n_total``: the training-set size, when known (sample ids must be below it).
    Temporaries of jobs that were killed (``.*.partial``) are not outputs and are skipped.
    """
    found = []
    for path in sorted(Path(results).rglob("*")):
        if path.name.endswith(".partial") or not path.is_file():
            continue
        problem = io.damage(path, io.schema_of(path), n_total)
        if problem:
            found.append((path, problem))
    return found


def check_outputs(results: str | Path, dry_run: bool = False, rebuilding: list[Path] | None = (),
                  n_total: int | None = None) -> None:
    """Stop on a damaged output, naming it and the command that repairs it.

    Snakemake does not rebuild a missing intermediate file whose products are
    up to date, so deleting a damaged file is no fix; ``--forcerun FILE``
    reruns its job and every job after it. Files in ``rebuilding`` (the
    command line's words, :func:`rebuilt_paths`; None: every file) are being
    forced and pass. The dataset cache
    (``results/data/dataset.npz``) is only a decoded copy of the source, so a
    damaged one is removed (in a dry run: reported); ``prepare_data`` rebuilds
    it when a job next needs it, and the jobs after it rerun, with the same results.
    """
    damaged = [(p, why) for p, why in damaged_outputs(results, n_total)
               if not is_rebuilt(p, rebuilding)]
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
# Outputs made under other settings


def check_made_with(config: dict[str, Any], results: str | Path, n_total: int | None = None,
                    rebuilding: list[Path] | None = (), fingerprint: str | None = None) -> None:
    """Stop when a finished output was made under settings other than the config's,
    and Snakemake will not rerun its job by itself.

    Compared, cheaply: the dataset cache's fingerprint (source files and
    ``dataset`` options such as ``subset``) with the config's dataset; each
    seed's fold table (its number of folds and samples) with ``folds.k`` and the
    training-set size ``n_total``; each scoring model's ``made_with`` record
    (model, ``train``, ``record_epochs``, ``record_format``, scoring budget)
    with the ``scoring_model`` section.

    Snakemake reruns a job whose params changed, from its own record of the job
    (.snakemake/metadata); then a mismatch is expected and passes. It does not
    when that record is gone (``.snakemake/`` removed, ``results/`` copied into
    a new experiment), nor when the file was replaced after the record was made
    (a job of an earlier, killed run that went on running and renamed its old
    output into place). Files in ``rebuilding`` (``--forcerun FILE``) pass.
    """
    from unseen.data import cached_fingerprint, dataset_fingerprint
    from unseen.predictions import canonical, made_with

    results = Path(results)
    stale: list[tuple[Path, str]] = []

    def compare(path: Path, found: str, wanted: str) -> None:
        if found != wanted and not is_rebuilt(path, rebuilding) and not snakemake_reruns(path, results):
            stale.append((path, f"made with {found}; the config says {wanted}"))

    cache = results / "data" / "dataset.npz"
    stored = cached_fingerprint(cache)
    if stored:
        compare(cache, f"dataset fingerprint {stored}",
                f"dataset fingerprint {fingerprint or dataset_fingerprint(config['dataset'])}")
    k = config["folds"]["k"]
    for seed in config["seeds"]:
        folds = results / f"seed{seed}" / "split" / "folds.parquet"
        if not folds.is_file() or io.damage(folds, io.FOLDS_SCHEMA):
            continue
        column = io.read_table(folds)["fold"]
        size = f", {len(column)} samples" if n_total is not None else ""
        compare(folds, f"folds.k = {column.nunique()}{size}",
                f"folds.k = {k}" + (f", {n_total} samples" if n_total is not None else ""))
    scoring = config["scoring_model"]
    for path in sorted(results.glob("seed*/**/predictions.npz")):
        try:
            recorded = io.read_npz_member(path, "made_with")
        except (io.DamagedFileError, FileNotFoundError):
            continue  # check_outputs names a damaged one
        if recorded is None:
            continue  # made before predictions files recorded their settings
        budget = "1" if path.parent.name == "fitting" else scoring_budget_label(
            config["budget"]["scoring"])
        wanted = canonical(made_with(scoring, scoring["train"], config["record_epochs"],
                                     config["record_format"], budget))
        compare(path, str(recorded), wanted)
    if stale:
        listing = "\n".join(f"  {path}: {why}" for path, why in stale)
        files = " ".join(str(path) for path, _ in stale)
        raise PreflightError(
            f"{len(stale)} finished output(s) were made under other settings than the config's,"
            " and Snakemake has no record that would make it rerun them (.snakemake/metadata"
            " removed, results/ copied from another experiment, or the file was replaced after"
            " its job finished: a job of an earlier, killed run still running?), so no job was"
            f" started:\n{listing}\nFix: end any job left over from an earlier run (ps -u"
            " $USER; scancel on SLURM), then rerun the same command with\n  --forcerun"
            f" {files}\n(the jobs that write them run again, and so do the jobs after them), or"
            " start afresh in an empty working directory."
        )


def snakemake_reruns(path: Path, results: Path) -> bool:
    """Whether Snakemake's own record of ``path`` lets it see a change of params.

    True when .snakemake/metadata (next to ``results``) holds a record of the
    file and the file was not modified after the record's job ended.
    """
    workdir = results.parent
    key = os.path.relpath(path, workdir)
    record_path = workdir / ".snakemake" / "metadata"
    b64 = urlsafe_b64encode(key.encode()).decode()
    chunks = [b64[i:i + 254] for i in range(0, len(b64), 254)]
    record_path = record_path.joinpath(*(["@" + c for c in chunks[:-1]] + chunks[-1:]))
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False
    end = record.get("endtime")
    return end is not None and path.stat().st_mtime <= float(end) + 0.01


# ---------------------------------------------------------------------------
# Impossible splits


def check_splits(config: dict[str, Any], counts, classes: tuple[str, ...]) -> None:
    """Stop when there are fewer than 2 classes, or a class is too small for the
    folds or a class-aware coreset.

    ``counts`` (int (C,)) and ``classes``: the training samples per class and the
    class names (:func:`unseen.data.train_label_counts`, which reads labels only).
    """
    name = config["dataset"].get("name", "digits")
    problem = too_few_classes(classes, f"dataset {name!r}", "give it at least 2 classes (an"
                              " ImageFolder: one folder of images per class under train/)") or \
        fold_split_problem(counts, classes, config["folds"]["k"], "config key", "folds.k",
                           f"dataset {name!r}", "add images to that class or remove its folder")
    if problem:
        raise PreflightError(problem)
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


def too_few_classes(classes: Sequence[str], source: str, fix: str) -> str | None:
    """Why a dataset of these ``classes`` cannot be pruned (it has fewer than 2), or None.

    With one class every prediction is right: every score is 0, every accuracy
    1.0, and the coreset is the first ids. The workflow's parse
    (:func:`check_splits`) and :mod:`unseen.api` both call it.

    Args:
        classes: the class names.
        source: where the labels come from ("dataset 'imagefolder'").
        fix: what to do about it.
    """
    if len(classes) >= 2:
        return None
    held = f" ({', '.join(repr(c) for c in classes)})" if classes else ""
    return (
        f"{source} has {len(classes)} class{held}, but a classifier needs at least 2: with one,"
        f" every score would be 0 and every accuracy 1.0, so no coreset would mean anything."
        f" Fix: {fix}."
    )


def fold_split_problem(
    counts: np.ndarray, classes: Sequence[str], k: int, kind: str, key: str, source: str, grow: str,
) -> str | None:
    """Why ``k`` stratified folds cannot split these classes, or None when they can.

    Every class needs at least ``k`` samples, else some fold holds none of it
    and the fold models never see it. The one home of this check: the
    workflow's parse (:func:`check_splits`) and :mod:`unseen.api` both call it.

    Args:
        counts: int (C,) training samples per class.
        classes: the C class names.
        k: the number of folds.
        kind, key: what sets ``k``, as the message names it ("config key", "folds.k").
        source: where the labels come from ("dataset 'digits'").
        grow: the fix for a class of one sample ("add images to that class or ...").
    """
    small = sorted(((classes[c], int(n)) for c, n in enumerate(counts) if n < k), key=lambda x: x[1])
    if not small:
        return None
    shown = ", ".join(f"class {c!r} has {n}" for c, n in small[:5])
    smallest = min(n for _, n in small)
    return (
        f"{kind} {key!r}: {k} folds need at least {k} training samples in every class,"
        f" but in {source} {shown}" + (" and more" if len(small) > 5 else "")
        + ". Some folds would hold no sample of such a class, so its fold models never see it."
        + (f" Fix: set {key} to at most {smallest}." if smallest >= 2 else
           f" Fix: {grow} (a class needs at least 2 samples to be split).")
    )


def scoring_model_lengths(config: dict[str, Any], n_total: int) -> list[tuple[str, int, int]]:
    """(model, training samples, epochs) of the scoring models of a validated ``config``.

    One entry per kind the run trains (fitting model, fold models, stage models),
    for the model of that kind with the most training samples, so the fewest
    epochs under a step budget. ``n_total``: the training-set size N.
    """
    from unseen.config import coreset_names, parse_coreset_name
    from unseen.selection import stage_sizes

    train = config["scoring_model"]["train"]
    scoring = scoring_train_settings(train, n_total, config["budget"]["scoring"])
    methods = {parse_coreset_name(name)[0] for name in coreset_names(config)}
    k = config["folds"]["k"]
    lengths = []
    if "fitting" in methods:
        lengths.append(("fitting model", n_total, epochs_of(n_total, train)))
    if methods & {"unseen", "unseen_single"}:
        # stratified folds differ in size by at most one: the largest has ceil(N / K)
        largest = -(-n_total // k) if config["folds"]["mode"] == "paper" else n_total - n_total // k
        lengths.append((f"fold models ({config['folds']['mode']} mode, K = {k})", largest,
                        epochs_of(largest, scoring)))
    if "unseen" in methods and len(config["stages"]) > 1:
        largest = max(stage_sizes(coreset_size(n_total, rate), config["stages"])[-2]
                      for rate in config["pruning_rates"])
        lengths.append(("stage models", largest, epochs_of(largest, scoring)))
    return lengths


def check_record_epochs(config: dict[str, Any], n_total: int) -> None:
    """Stop when ``record_epochs`` asks for an epoch after the end of a scoring model's training.

    Such an epoch is never recorded: training-dynamics scorers would see fewer
    epochs than configured (with none left but the last, TDDS scores every
    sample 0 and the coreset is ids 0..n-1). Each scoring model's length is
    :func:`scoring_model_lengths` of the training-set size ``n_total``.
    """
    wanted = config["record_epochs"]
    if not wanted:
        return
    lengths = scoring_model_lengths(config, n_total)
    if not lengths:
        return
    model, n_train, epochs = min(lengths, key=lambda item: item[2])
    late = sorted(e for e in wanted if e > epochs)
    if late:
        raise PreflightError(
            f"config key 'record_epochs': epoch(s) {late} come after the end of training: the"
            f" {model} train(s) on {n_train} samples for {epochs} epochs (scoring_model.train and"
            f" budget.scoring: {config['budget']['scoring']}), so nothing would be recorded there"
            " and training-dynamics scorers would see fewer epochs than configured. Fix: use"
            f" record_epochs between 1 and {epochs}, or train the scoring models longer"
            " (scoring_model.train.epochs)."
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
