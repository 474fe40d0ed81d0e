"""The ``validated`` strategy's choice: which selection strategy to use at a pruning rate.

Which strategy makes the best coreset depends on the pruning rate and the data:
keeping the hardest samples wins while most of the data is kept, coverage (CCS)
wins when few are kept, and where the switch lies differs between datasets
(docs/results.md). Instead of a fixed rule, ``validated`` decides per run, rate
and score table on data the test set never sees:

1. hold out a seeded, stratified ``fraction`` of the training set;
2. for each candidate strategy, select a coreset at the pruning rate from the
   rest (the *pool*, with the same scores), train a fresh final model on it
   under the run's retrain budget, and measure its accuracy on the held-out
   samples;
3. choose the candidate with the highest held-out accuracy (ties: the first
   candidate in the configured order).

All candidates train from the same initialisation seed, so they differ only in
their data. The held-out samples are also in the fold models' training sets
(their scores come from all K folds), so the choice sees the held-out samples
only through other samples' scores, never through the test set. No files here
(the workflow job is :func:`unseen.jobs.choose_strategy`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from unseen.budget import retrain_train_settings
from unseen.coresets import first_stage
from unseen import config, naming
from unseen.images import ImageDataset
from unseen.seeds import derive_seed
from unseen.selection import exact_decimal, round_half_up
from unseen.strategies import VALIDATION_CANDIDATES


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split holding out ``fraction`` of every class.

    Args:
        labels: int (N,) class labels; positions 0..N-1 are the samples.
        fraction: share of each class held out, in (0, 1); a class of n_c
            samples holds out ``round_half_up(fraction * n_c)``, at least 1 and
            at most n_c - 1 (a class of one sample stays in the pool).
        seed: the run seed; the split derives its own seed from it.

    Returns:
        (pool, held_out): int64 sorted positions, disjoint, together all N.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must lie in (0, 1), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(seed, naming.VALIDATION_SPLIT_SEED))
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = min(max(round_half_up(exact_decimal(fraction) * len(members)), 1), len(members) - 1)
        held.append(rng.permutation(members)[:take])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    pool = np.setdiff1d(np.arange(len(labels)), held_out)
    return pool.astype(np.int64), held_out.astype(np.int64)


def check_candidates(candidates: list[str]) -> None:
    """Raise ValueError unless ``candidates`` are distinct :data:`VALIDATION_CANDIDATES`."""
    if not candidates:
        raise ValueError("validated needs at least one candidate strategy")
    unknown = [c for c in candidates if c not in VALIDATION_CANDIDATES]
    if unknown or len(set(candidates)) != len(candidates):
        raise ValueError(
            f"validation candidates must be distinct names from {VALIDATION_CANDIDATES}, "
            f"got {candidates}"
        )


def choose_strategy(
    data: ImageDataset,
    scores: pd.DataFrame,
    pruning_rate: float,
    selection: dict[str, Any],
    model_spec: dict[str, Any],
    train_settings: dict[str, Any],
    retrain_budget: str,
    seed: int,
    device_name: str = "auto",
    threads: int | None = None,
    checkpoints=None,
) -> dict[str, Any]:
    """Choose the selection strategy for ``pruning_rate`` on a held-out split of the training set.

    Args:
        data: the dataset; ``scores.sample_id`` are row indices into ``data.train_x``.
        scores: the score table of all N training samples (sample_id, label,
            score; higher = more important to keep).
        pruning_rate: fraction of the data removed, in (0, 1).
        selection: the config's ``selection`` section; ``validation_candidates``
            and ``validation_fraction`` (defaults: the config schema's)
            set the candidates and the held-out share, the other keys the
            candidates' options.
        model_spec, train_settings: the final model (``final_model`` section).
        retrain_budget: how long each candidate trains (:func:`unseen.budget.retrain_train_settings`,
            with the pool as the full training set).
        seed: the run seed (split, selection and initialisation derive from it).
        checkpoints: ``checkpoints(candidate)`` -> the
            :class:`unseen.resume.TrainingCheckpoint` of that candidate's training
            (``keep_final``, so a rerun does not train a finished candidate again),
            or None.

    Returns:
        A dict (the ``strategy_choice`` JSON of results/README.md): ``strategy``
        (the choice), ``validation_accuracy`` ({candidate: accuracy in [0, 1]}),
        ``candidates``, ``pruning_rate``, ``pool_size``, ``held_out_size``,
        ``coreset_size`` (of each candidate, within the pool),
        ``retrain_budget``, and the cost of the candidates' training summed:
        ``train_samples_seen`` (sample-epochs), ``train_steps``,
        ``train_wall_seconds``.
    """
    from unseen.subset_training import train_on_subset
    from unseen.train import predict_logits

    candidates = list(selection.get("validation_candidates",
                                    config.default("selection", "validation_candidates")))
    check_candidates(candidates)
    if not np.array_equal(np.sort(scores["sample_id"].to_numpy()), np.arange(len(data.train_y))):
        raise ValueError("the score table must score every training sample once")
    pool, held_out = holdout_split(
        data.train_y,
        selection.get("validation_fraction", config.default("selection", "validation_fraction")), seed)
    pool_scores = scores[scores["sample_id"].isin(pool)].reset_index(drop=True)
    settings = retrain_train_settings(train_settings, len(pool), retrain_budget)
    accuracy: dict[str, float] = {}
    cost = {"train_samples_seen": 0, "train_steps": 0, "train_wall_seconds": 0.0}
    coreset_size = 0
    for name in candidates:
        chosen = first_stage(pool_scores, pruning_rate, [1.0], {**selection, "strategy": name}, seed)
        coreset_size = len(chosen)
        t0 = time.perf_counter()
        result, (mean, std), device, used = train_on_subset(
            data, np.sort(chosen["sample_id"].to_numpy()), None, model_spec, settings, [],
            derive_seed(seed, naming.RETRAIN_SEED), device_name, threads,
            name=f"validated strategy candidate {name!r} at rate {pruning_rate}",
            lr_key="final_model.train.lr",
            checkpoint=None if checkpoints is None else checkpoints(name),
        )
        logits = predict_logits(result.model, data.train_x[held_out], mean, std, device,
                                used.eval_batch_size, used.workers, flip=used.test_time_flip)
        accuracy[name] = float((logits.argmax(1) == data.train_y[held_out]).mean())
        cost["train_samples_seen"] += int(result.samples_seen)
        cost["train_steps"] += int(result.steps)
        cost["train_wall_seconds"] += time.perf_counter() - t0
    best = max(candidates, key=lambda name: (accuracy[name], -candidates.index(name)))
    return {
        "strategy": best,
        "validation_accuracy": accuracy,
        "candidates": candidates,
        "pruning_rate": float(pruning_rate),
        "pool_size": int(len(pool)),
        "held_out_size": int(len(held_out)),
        "coreset_size": int(coreset_size),
        "retrain_budget": retrain_budget,
        **cost,
    }
