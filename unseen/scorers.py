"""Per-sample importance scores.

Convention, everywhere in ``unseen``: **a higher score means "more important to
keep"**, i.e. harder, more uncertain, more informative. Selection keeps the
highest scores first unless the config says ``selection.keep: lowest``.

Two layers:

* Plain functions on probabilities or logits of one model at one epoch
  (``entropy``, ``least_confidence``, ``margin``, ``cross_entropy_loss``,
  ``el2n``). Shapes: ``probs`` float (N, C) rows summing to 1; ``logits`` float
  (N, C); ``labels`` int (N,) in [0, C). Each returns float64 (N,).
* The registry :data:`SCORERS`, used by the workflow: every entry maps a name to a
  function ``(record: PredictionRecord, seed: int) -> scores (N,)`` that reads
  what a scoring model saved about the samples it scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from unseen.seeds import derive_seed


@dataclass(frozen=True)
class PredictionRecord:
    """Predictions one model made on the samples it scores.

    Attributes:
        sample_ids: int64 (N,), ids of the scored samples.
        labels: int64 (N,), their true labels.
        epochs: int64 (E,), the 1-based epochs at which logits were recorded,
            ascending; the last entry is the final epoch.
        logits: float (E, N, C), the model's logits at each recorded epoch.
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    epochs: np.ndarray
    logits: np.ndarray

    @property
    def final_logits(self) -> np.ndarray:
        """float64 (N, C): logits after the last training epoch."""
        return np.asarray(self.logits[-1], dtype=np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float (N, C) logits, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of float (N, C) logits, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy ``H(p) = -sum_c p_c log p_c`` in nats, range [0, log C].

    Higher = the model is less certain = keep first. Label-free.
    """
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """Least confidence ``1 - max_c p_c``, range [0, 1 - 1/C].

    Higher = lower top-class probability = keep first. Label-free.
    """
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Margin uncertainty ``1 - (p_(1) - p_(2))``, range [0, 1].

    ``p_(1)`` and ``p_(2)`` are the largest and second-largest predicted
    probabilities. A small gap between the top two classes means the sample lies
    near a decision boundary, so higher = keep first. Label-free.
    """
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


def cross_entropy_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy loss ``-log softmax(z)_y`` in nats, range [0, inf).

    Higher = the true class gets low probability = keep first.
    """
    labels = np.asarray(labels, dtype=np.int64)
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def el2n(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """EL2N (Paul et al., NeurIPS 2021): ``|| p - onehot(y) ||_2``, range [0, sqrt(2)].

    Higher = the prediction is far from the label = keep first.
    """
    p = np.asarray(probs, dtype=np.float64).copy()
    labels = np.asarray(labels, dtype=np.int64)
    p[np.arange(len(labels)), labels] -= 1.0
    return np.sqrt((p**2).sum(axis=1))


def random_scores(sample_ids: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) scores keyed on sample id: a control that ignores the model.

    The value of a sample depends only on ``seed`` and its id, not on which
    other samples are scored or their order.
    """
    ids = np.asarray(sample_ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(0)
    table = np.random.default_rng(derive_seed(seed, "random-scorer")).random(
        int(ids.max()) + 1
    )
    return table[ids]


ScorerFn = Callable[[PredictionRecord, int], np.ndarray]

SCORERS: dict[str, ScorerFn] = {
    "entropy": lambda r, seed: entropy(softmax(r.final_logits)),
    "least_confidence": lambda r, seed: least_confidence(softmax(r.final_logits)),
    "margin": lambda r, seed: margin(softmax(r.final_logits)),
    "loss": lambda r, seed: cross_entropy_loss(r.final_logits, r.labels),
    "el2n": lambda r, seed: el2n(softmax(r.final_logits), r.labels),
    "random": lambda r, seed: random_scores(r.sample_ids, seed),
}


def compute_scores(name: str, record: PredictionRecord, seed: int = 0) -> np.ndarray:
    """Score every sample of ``record`` with scorer ``name``; float64 (N,), higher = keep.

    Raises ``KeyError`` naming the known scorers for an unknown name and
    ``ValueError`` if a scorer produced a non-finite value.
    """
    if name not in SCORERS:
        raise KeyError(f"unknown scorer {name!r}; choose one of {sorted(SCORERS)}")
    scores = np.asarray(SCORERS[name](record, seed), dtype=np.float64)
    if scores.shape != record.sample_ids.shape:
        raise ValueError(f"scorer {name!r} returned shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scorer {name!r} produced non-finite scores")
    return scores
