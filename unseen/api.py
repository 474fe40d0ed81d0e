"""The workflow's steps for one dataset as Python functions: arrays in, pandas tables out.

No Snakemake and no files. Each function calls the same library code as the
workflow's jobs and derives its seeds the same way, so with the same settings
it gives the same folds, scores and coresets as a run of the workflow, and
returns tables with the columns of the matching Parquet files
(results/README.md)::

    from unseen import api
    data = api.load_dataset("digits")                  # or your own arrays
    scores = api.out_of_fold_scores(data.train_x, data.train_y, scorer="el2n", k=5)
    coreset = api.select(scores, pruning_rate=0.7, strategy="auto")  # default: "validated",
    #   which needs choose_strategy()'s choice: select(..., validated_strategy=choice["strategy"])
    metrics = api.retrain(data.train_x, data.train_y, data.test_x, data.test_y, coreset)

Images are uint8 arrays (N, C, H, W) (or (N, H, W) for one channel), channels
first, labels int (N,): the integers 0..C-1, every class present. Other inputs
are refused with the fix (a ValueError naming the argument), not misread.
Scores follow one convention everywhere: **higher = more important to keep**
(harder, more uncertain). Defaults (model, training
settings, budgets, strategy options) are those of the workflow config schema
(``unseen/config.schema.yaml``); ``model`` and ``train`` take the same
dictionaries as the config's ``scoring_model``/``final_model`` sections.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from unseen import naming, steps, validation
from unseen.config import default as _defaults
from unseen.coresets import first_stage, next_stage
from unseen.data import load_dataset
from unseen.folds import assign_folds, fold_training_mask
from unseen.images import ImageDataset
from unseen.preflight import fold_split_problem, too_few_classes
from unseen.scorers import compute_scores
from unseen.seeds import derive_seed
from unseen.selection import aggregate_scores

__all__ = ["load_dataset", "out_of_fold_scores", "choose_strategy", "select", "multi_step", "retrain"]


def _model_spec(model: str | dict[str, Any] | None, section: str) -> dict[str, Any]:
    """``{"arch", "options"}`` from an architecture name, a config-style dict or None (the default)."""
    if model is None:
        model = _defaults(section)
    elif isinstance(model, str):
        model = {"arch": model}
    return {"arch": model["arch"], "options": dict(model.get("options", {}))}


def _train(train: dict[str, Any] | None, section: str) -> dict[str, Any]:
    """A full ``train`` section: the schema's defaults with ``train``'s keys on top."""
    return {**_defaults(section, "train"), **(train or {})}


def _training_data(
    images, labels, test_images=None, test_labels=None, k: int | None = None
) -> ImageDataset:
    """An in-memory :class:`ImageDataset` from the caller's arrays, checked.

    The one home of the API's input checks; every entry point that takes
    images calls it. Images uint8 (N, C, H, W) or (N, H, W); labels int (N,),
    the integers 0..C-1 with every class present (the test labels: any of
    them), C >= 2; with ``k``, every class holds at least ``k`` samples. The
    class checks are the workflow's own (:func:`unseen.preflight.too_few_classes`,
    :func:`unseen.preflight.fold_split_problem`).
    """
    images = _checked_images(images, "images")
    labels = _checked_labels(labels, "labels", len(images))
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if test_images is None:
        test_x, test_y = images[:0], labels[:0]
    else:
        test_x = _checked_images(test_images, "test_images")
        test_y = _checked_labels(test_labels, "test_labels", len(test_x), num_classes)
    classes = tuple(str(c) for c in range(num_classes))
    problem = too_few_classes(classes, "labels", "pass samples of at least 2 classes")
    if k is not None and not problem:
        problem = fold_split_problem(np.bincount(labels, minlength=num_classes), classes, k,
                                     "argument", "k", "labels", "add samples to that class or drop it")
    if problem:
        raise ValueError(problem)
    return ImageDataset(images, labels, test_x, test_y, classes)


def _checked_images(x, name: str) -> np.ndarray:
    """``x`` as uint8 (N, C, H, W) (from (N, C, H, W) or (N, H, W)); refuses other types and
    channels-last arrays (N, H, W, 1 or 3), which would be read as H channels of W x C images."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 of shape (N, C, H, W) or (N, H, W), got {x.dtype} {x.shape}; "
            "scale floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} has shape {x.shape}, channels last (N, H, W, C), but the API takes channels"
            f" first (N, C, H, W) and would read it as {x.shape[1]} channels of {x.shape[2]} x"
            f" {x.shape[3]} images. Fix: pass {name}.transpose(0, 3, 1, 2)"
        )
    return x


_LABELS_FIX = "Fix: classes, {name} = np.unique({name}, return_inverse=True) (class j is classes[j])"


def _checked_labels(y, name: str, n: int, num_classes: int | None = None) -> np.ndarray:
    """int64 (n,) labels from ``y``; refuses what is not the integers 0..C-1.

    Training labels (``num_classes`` None) must hold every class 0..C-1, C being
    the number of distinct labels: 1..10 or {0, 1, 3} are refused, not taken as
    a model with a class no sample has. Test labels must lie in 0..num_classes-1.
    Floats are taken only when integral, strings never (they would be cast or
    truncated silently). The message names the first bad value and the fix.
    """
    y = np.asarray(y)
    fix = _LABELS_FIX.format(name=name)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be one label per image, shape ({n},), got shape {y.shape}"
                         " (one-hot labels: y.argmax(axis=1))")
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise ValueError(f"{name}[{bad[0]}] = {_item(y, bad[0])!r} is not an integer: labels"
                             f" must be the integers 0..C-1 (floats would be truncated). {fix}")
    elif y.dtype.kind not in "biu":
        first = f" ({name}[0] = {_item(y, 0)!r})" if len(y) else ""
        raise ValueError(f"{name} are {y.dtype}{first}, not integers: labels must be the integers"
                         f" 0..C-1. {fix}")
    y = y.astype(np.int64)
    if num_classes is None:
        present = np.unique(y)
        bad = np.flatnonzero((y < 0) | (y >= len(present)))
        if len(bad):
            missing = sorted(set(range(len(present))) - set(present.tolist()))
            raise ValueError(
                f"{name}[{bad[0]}] = {y[bad[0]]}: labels must be the integers 0..C-1 with every"
                f" class present, but these {len(present)} distinct labels run from {present[0]} to"
                f" {present[-1]} (class {missing[0]} has no sample). {fix}"
            )
    else:
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if len(bad):
            raise ValueError(
                f"{name}[{bad[0]}] = {y[bad[0]]} is not one of the training labels 0..{num_classes - 1}."
                " Map both with the same classes: classes, labels = np.unique(labels,"
                f" return_inverse=True); {name} = np.searchsorted(classes, {name})"
            )
    return y


def _item(array: np.ndarray, i: int) -> Any:
    """``array[i]`` as a plain Python value, for messages (``2.5``, not ``np.float64(2.5)``)."""
    return array[i : i + 1].tolist()[0]


def _coreset_ids(coreset, n_total: int) -> np.ndarray:
    """Sorted int64 sample ids of ``coreset`` (a table with ``sample_id``, or ids), checked.

    Refuses a boolean mask (it would be read as ids 0 and 1), ids that are not
    integers in 0..n_total-1, and duplicate ids (the sample would count twice).
    Integral floats (``np.loadtxt("coreset.txt")`` without ``dtype=int``) are taken.
    """
    table = isinstance(coreset, pd.DataFrame)
    name = "coreset['sample_id']" if table else "coreset"
    ids = np.asarray(coreset["sample_id"] if table else coreset)
    if ids.dtype.kind == "b":
        raise ValueError(f"{name} is a boolean mask of {len(ids)} entries; pass the sample ids it"
                         f" selects instead: np.flatnonzero(mask)")
    whole = ids.dtype.kind in "iu" or (ids.dtype.kind == "f" and np.all(ids == np.round(ids)))
    if ids.ndim != 1 or (len(ids) and not whole):
        raise ValueError(f"{name} must be integer sample ids (rows of images), shape (M,); got"
                         f" {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= n_total))
    if len(bad):
        raise ValueError(f"{name}[{bad[0]}] = {ids[bad[0]]} is not a sample id: ids are the rows"
                         f" 0..{n_total - 1} of images")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1]
        fix = "coreset.drop_duplicates('sample_id')" if table else "np.unique(ids)"
        raise ValueError(f"{name} holds {len(ids) - len(unique)} duplicate id(s) (e.g. {twice[0]},"
                         f" {int(counts[counts > 1][0])} times), so those samples would count more"
                         f" than once. Fix: pass {fix}")
    return unique


def _score_rows(record, scorer, seed, scorer_options, model_name) -> pd.DataFrame:
    """One score shard (``SHARD_SCHEMA``): sample_id, label, model, score."""
    return pd.DataFrame(
        {
            "sample_id": record.sample_ids,
            "label": record.labels,
            "model": model_name,
            "score": compute_scores(scorer, record, seed, scorer_options),
        }
    )


def out_of_fold_scores(
    images: np.ndarray,
    labels: np.ndarray,
    scorer: str = "el2n",
    *,
    k: int | None = None,
    mode: str | None = None,
    model: str | dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    budget: float | str | None = None,
    record_epochs: Sequence[int] = (),
    record_format: str = "auto",
    scorer_options: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
) -> pd.DataFrame:
    """UNSEEN scores: each sample scored only by fold models that never trained on it.

    Args:
        images: uint8 (N, C, H, W) or (N, H, W) training images (channels first).
        labels: int (N,) class labels: the integers 0..C-1, every class with at
            least ``k`` samples.
        scorer: a name in :data:`unseen.scorers.SCORERS` (``el2n``, ``entropy``, ...).
        k: number of stratified folds K (default 5).
        mode: ``paper`` (default: fold model k trains on fold k and scores the
            other K-1 folds) or ``holdout`` (trains on all but fold k, scores it).
        model: architecture name or ``{"arch", "options"}`` of the fold models
            (default: the config's ``scoring_model``).
        train: training settings (keys of the config's ``train`` section; the
            rest take their defaults). They are the *fitting* model's settings:
            see ``budget``.
        budget: each fold model gets ``budget`` x the SGD steps of a model
            trained with ``train`` on all N samples (default 1.0), or
            ``"epochs"``: ``train["epochs"]`` passes over its own fold
            (:mod:`unseen.budget`).
        record_epochs: 1-based epochs recorded besides the last one
            (training-dynamics scorers such as ``forgetting`` use them).
        record_format: ``auto``, ``logits`` or ``stats`` (config ``record_format``).
        scorer_options: the scorer's keyword options (config ``scorer_options``).
        seed: run seed; folds, models and scorers derive theirs from it as the workflow does.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (None: torch's default).

    Returns:
        One row per training sample, the columns of ``scores/oof/{scorer}.parquet``:
        sample_id (int64, the row of ``images``), label, score (float64, mean
        over the models that never saw the sample; higher = keep first),
        score_std (population std of those scores), n_scores (K-1 in paper
        mode, 1 in holdout).
    """
    k = _defaults("folds", "k") if k is None else k
    mode = _defaults("folds", "mode") if mode is None else mode
    budget = _defaults("budget", "scoring") if budget is None else budget
    data = _training_data(images, labels, k=k)
    spec = _model_spec(model, "scoring_model")
    settings = _train(train, "scoring_model")
    folds = assign_folds(data.train_y, k, derive_seed(seed, naming.FOLDS_SEED))
    shards = []
    for fold in range(k):
        trained_on = fold_training_mask(folds, fold, mode)
        name = naming.fold_model_name(fold)
        trained = steps.train_scoring_model(
            data, data.sample_ids[trained_on], data.sample_ids[~trained_on], spec, settings,
            list(record_epochs), seed, name, device, threads, record_format, budget,
        )
        shards.append(_score_rows(trained.record(data), scorer, seed, scorer_options, name))
    return aggregate_scores(pd.concat(shards, ignore_index=True))


def _selection(strategy: str | None, keep: str, options: dict[str, Any]) -> dict[str, Any]:
    selection = _defaults("selection")
    selection.update(options, keep=keep)
    selection["strategy"] = strategy or selection["strategy"][0]
    return selection


def select(
    scores: pd.DataFrame,
    pruning_rate: float,
    strategy: str | None = None,
    *,
    keep: str = "highest",
    class_error: np.ndarray | None = None,
    seed: int = 0,
    **strategy_options: Any,
) -> pd.DataFrame:
    """A coreset from a score table in one step (single-step UNSEEN, or the fitting baseline).

    Args:
        scores: columns sample_id, label, score (e.g. :func:`out_of_fold_scores`).
        pruning_rate: fraction of the samples removed, in (0, 1); the coreset
            keeps ``round(N * (1 - pruning_rate))``.
        strategy: ``validated`` (default; pass ``validated_strategy``, the
            ``strategy`` of :func:`choose_strategy`), ``auto`` (``top`` below
            ``auto_ccs_rate``, ``ccs`` from it on), ``top``, ``class_balanced``,
            ``ccs`` or ``hard_class_priority``.
        keep: ``highest`` (keep the highest scores first) or ``lowest``.
        class_error: float (C,) per-class error rate in [0, 1]; needed by
            ``hard_class_priority``.
        seed: run seed (CCS's sampling derives its seed from it as the workflow does).
        **strategy_options: ``ccs_beta``, ``ccs_bins``, ``priority_lambda``, ``auto_ccs_rate``,
            ``validated_strategy``.

    Returns:
        The kept samples, best first, with the columns of ``coreset.parquet``:
        sample_id, label, stage (1), score.
    """
    selection = _selection(strategy, keep, strategy_options)
    return first_stage(scores, pruning_rate, [1.0], selection, seed, class_error)


def choose_strategy(
    images: np.ndarray,
    labels: np.ndarray,
    scores: pd.DataFrame,
    pruning_rate: float,
    *,
    candidates: Sequence[str] | None = None,
    fraction: float | None = None,
    model: str | dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    budget: str | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    **strategy_options: Any,
) -> dict[str, Any]:
    """Which strategy to use at ``pruning_rate``, decided on a slice held out of the training set.

    One final model per candidate trains on its coreset of the rest of the
    training set; the most accurate on the held-out slice wins
    (:func:`unseen.validation.choose_strategy`). No test data is involved.

    Args:
        images, labels: the training set (row i is sample_id i).
        scores: columns sample_id, label, score for every training sample.
        candidates: strategies to compare (default ``selection.validation_candidates``: top, ccs).
        fraction: share of every class held out (default ``selection.validation_fraction``: 0.1).
        model, train, budget: the candidates' model, its full-data settings
            and the retrain budget, as in :func:`retrain`.
        **strategy_options: the candidates' options (``ccs_beta``, ``ccs_bins``, ...).

    Returns:
        The choice: ``strategy`` (pass it to :func:`select` as
        ``validated_strategy`` with strategy ``validated``, or use it directly),
        ``validation_accuracy`` per candidate (fractions in [0, 1]) and the
        keys documented for ``strategy_choice`` in results/README.md.
    """
    selection = _selection("validated", "highest", strategy_options)
    if candidates is not None:
        selection["validation_candidates"] = list(candidates)
    if fraction is not None:
        selection["validation_fraction"] = fraction
    budget = _defaults("budget", "retrain")[0] if budget is None else budget
    return validation.choose_strategy(
        _training_data(images, labels), scores, pruning_rate, selection,
        _model_spec(model, "final_model"), _train(train, "final_model"), budget, seed,
        device, threads,
    )


def multi_step(
    images: np.ndarray,
    labels: np.ndarray,
    scores: pd.DataFrame,
    pruning_rate: float,
    scorer: str = "el2n",
    strategy: str | None = None,
    *,
    stages: Sequence[float] | None = None,
    keep: str = "highest",
    class_error: np.ndarray | None = None,
    model: str | dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    budget: float | str | None = None,
    record_epochs: Sequence[int] = (),
    record_format: str = "auto",
    scorer_options: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    **strategy_options: Any,
) -> pd.DataFrame:
    """Multi-step UNSEEN: stage 1 from ``scores``, then refill stage by stage.

    Stage 1 takes ``stages[0]`` of the target size by ``scores`` (the
    out-of-fold scores); each later stage t trains a model on S_{t-1}, scores
    the samples not yet selected with ``scorer`` and adds the best of them until
    S_t holds ``stages[t]`` of the target. Class quotas count the samples
    already selected.

    Args:
        images, labels: the training set, as for :func:`out_of_fold_scores`
            (row i is sample_id i).
        scores: the out-of-fold score table of the same samples.
        pruning_rate, strategy, keep, class_error, strategy_options: as for :func:`select`.
        scorer: the stage models' scorer (the one behind ``scores``).
        stages: cumulative fractions of the target size, increasing to 1.0
            (default ``[0.5, 0.75, 1.0]``).
        model, train, budget, record_epochs, record_format, scorer_options,
            seed, device, threads: the stage models' settings, as for
            :func:`out_of_fold_scores` (``budget`` relative to the fitting model).

    Returns:
        The coreset, columns sample_id, label, stage (the 1-based stage that
        added the sample), score (its score when selected), stage by stage.
    """
    stages = list(_defaults("stages") if stages is None else stages)
    budget = _defaults("budget", "scoring") if budget is None else budget
    selection = _selection(strategy, keep, strategy_options)
    data = _training_data(images, labels)
    n_total = len(data.train_y)
    spec = _model_spec(model, "scoring_model")
    settings = _train(train, "scoring_model")
    coreset = first_stage(scores, pruning_rate, list(stages), selection, seed, class_error)
    for stage in range(2, len(stages) + 1):
        selected = np.sort(coreset["sample_id"].to_numpy())
        rest = np.setdiff1d(data.sample_ids, selected)
        # the workflow's stage-model name, so the model seed matches a workflow run
        name = naming.stage_model_name(
            stage - 1, naming.CoresetId(naming.UNSEEN, scorer, selection["strategy"]), pruning_rate
        )
        trained = steps.train_scoring_model(
            data, selected, rest, spec, settings, list(record_epochs), seed, name, device,
            threads, record_format, budget,
        )
        candidates = _score_rows(trained.record(data), scorer, seed, scorer_options, name)
        coreset = next_stage(coreset, candidates, n_total, pruning_rate, list(stages), stage,
                             selection, seed, class_error)
    return coreset


def retrain(
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    coreset: pd.DataFrame | np.ndarray | None = None,
    *,
    model: str | dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    budget: str | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train a fresh model on the coreset (all samples if None) and evaluate it on the test set.

    Args:
        images, labels: the training set (row i is sample_id i).
        test_images, test_labels: uint8 (M, C, H, W) or (M, H, W) and int (M,).
        coreset: a coreset table (its ``sample_id`` column) or an int array of
            sample ids, each at most once (a boolean mask: pass ``np.flatnonzero(mask)``).
        model: the retrained model (default: the config's ``final_model``).
        train: its training settings: those of the full-data model (see ``budget``).
        budget: ``full_steps`` (default: as many SGD steps as a model trained
            with ``train`` on all N samples) or ``epochs`` (``train["epochs"]``
            passes over the coreset). The full-data model (``coreset`` None)
            trains with ``train`` as given.
        seed: run seed; the model's seed derives from it as in the workflow.

    Returns:
        The metrics columns of ``metrics.parquet`` that a retrain measures:
        coreset_size, n_train_total, test_accuracy and worst_class_accuracy
        (fractions in [0, 1]), per_class_accuracy (list of C), classes, epochs,
        train_samples_seen (sample-epochs), wall_seconds, retrain_budget,
        train_steps, train_samples_per_s, model, device.
    """
    budget = _defaults("budget", "retrain")[0] if budget is None else budget
    data = _training_data(images, labels, test_images, test_labels)
    ids = None if coreset is None else _coreset_ids(coreset, len(data.train_y))
    return steps.retrain(data, ids, _model_spec(model, "final_model"), _train(train, "final_model"),
                         budget, seed, device, threads)
