"""Per-sample importance scores.

Convention, everywhere in ``unseen``: **a higher score means "more important to
keep"**, i.e. harder, more uncertain, more informative. Selection keeps the
highest scores first unless the config says ``selection.keep: lowest``.

Three layers:

* Plain functions on probabilities or logits of one model at one epoch
  (``entropy``, ``least_confidence``, ``margin``, ``cross_entropy_loss``,
  ``el2n``). Shapes: ``probs`` float (N, C) rows summing to 1; ``logits`` float
  (N, C); ``labels`` int (N,) in [0, C). Each returns float64 (N,).
* Training-dynamics functions on per-epoch statistics (``forgetting``,
  ``area_under_margin``, ``tdds``, ``dynamic_uncertainty``, in
  :mod:`unseen.dynamics`): inputs are float (E, N) arrays over the E recorded
  epochs, oldest first.
* The registry :data:`SCORER_PLUGINS`, used by the workflow: every entry
  (:class:`unseen.plugins.ScorerPlugin`) holds a function
  ``(record: PredictionRecord, seed: int, **options) -> scores (N,)`` that reads
  what a scoring model saved about the samples it scored, its options (schema
  and default) and what it needs; :data:`SCORERS` maps each name to its function.

A :class:`PredictionRecord` holds either the full per-epoch logits (float16,
used for up to :data:`MAX_LOGIT_CLASSES` classes) or only the per-sample
statistics of :data:`STAT_NAMES` (for more classes, so that ImageNet-scale
records stay small); every record scorer reads :meth:`PredictionRecord.stat`,
so both formats give the same scores. See ``docs/scorers.md``.

Adding a scorer = one function plus one :data:`SCORER_PLUGINS` entry (plus a
test); the config schema's enum and options, the rules and the CLI follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from unseen.dynamics import (
    area_under_margin,
    dynamic_uncertainty,
    forgetting,
    mean_over_epochs,
    tdds,
)
from unseen.plugins import CHECKPOINT, RECORD, ScorerPlugin, registry
from unseen.seeds import derive_seed

#: Records with more classes than this store per-sample statistics, not logits.
MAX_LOGIT_CLASSES = 100

#: Per-sample, per-epoch statistics a record can hold instead of logits, with
#: their on-disk dtype. 8 float32 + 1 uint8 = 33 bytes per sample per epoch.
STAT_DTYPES: dict[str, Any] = {
    "target_logit": np.float32,  # z_y
    "max_other_logit": np.float32,  # max_{c != y} z_c
    "target_logprob": np.float32,  # log p_y
    "top1_prob": np.float32,  # largest p_c
    "top2_prob": np.float32,  # second-largest p_c
    "entropy": np.float32,  # -sum_c p_c log p_c
    "el2n": np.float32,  # ||p - onehot(y)||_2
    "tdds_change": np.float32,  # sum_c |p_c (log p_c - log p'_c)| vs previous recorded epoch
    "correct": np.uint8,  # argmax_c z_c == y
}
STAT_NAMES = tuple(STAT_DTYPES)
STAT_BYTES_PER_SAMPLE_EPOCH = sum(np.dtype(d).itemsize for d in STAT_DTYPES.values())

_CHUNK = 65536  # rows per block, so statistics of 1M x 1000 logits fit in memory


@dataclass(frozen=True)
class PredictionRecord:
    """What one scoring model saved about the samples it scored.

    Attributes:
        sample_ids: int64 (N,), ids of the scored samples.
        labels: int64 (N,), their true labels.
        epochs: int64 (E,), the 1-based epochs at which predictions were recorded,
            ascending; the last entry is the final epoch.
        logits: float (E, N, C) logits at each recorded epoch, or None when the
            record holds ``stats`` instead.
        stats: name -> (E, N) array for every name in :data:`STAT_NAMES`, or
            None when the record holds ``logits``.
        model: what gradient scorers (GraNd) need, a
            :class:`unseen.grand.ScoringModel`, or None when not loaded.
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    epochs: np.ndarray
    logits: np.ndarray | None = None
    stats: Mapping[str, np.ndarray] | None = None
    model: Any = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.logits is None) == (self.stats is None):
            raise ValueError("a PredictionRecord holds exactly one of logits or stats")

    def stat(self, name: str) -> np.ndarray:
        """float64 (E, N): statistic ``name`` (see :data:`STAT_NAMES`) at every recorded epoch."""
        if name not in STAT_DTYPES:
            raise KeyError(f"unknown statistic {name!r}; known: {list(STAT_NAMES)}")
        if self.stats is not None:
            return np.asarray(self.stats[name], dtype=np.float64)
        if "all" not in self._cache:
            self._cache["all"] = record_statistics(self.logits, self.labels)
        return np.asarray(self._cache["all"][name], dtype=np.float64)


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


def epoch_statistics(
    logits: np.ndarray,
    labels: np.ndarray,
    previous_logits: np.ndarray | None = None,
    storage_dtypes: bool = True,
) -> dict[str, np.ndarray]:
    """Per-sample statistics of one epoch's logits (what training-dynamics scorers need).

    Args:
        logits: float (N, C) logits at this epoch.
        labels: int (N,) true labels.
        previous_logits: float (N, C) logits of the same samples at the previous
            recorded epoch, or None for the first one (then ``tdds_change`` is 0).
        storage_dtypes: return each statistic in its on-disk
            :data:`STAT_DTYPES` dtype; False keeps float64 (scoring a logit record).

    Returns:
        name -> (N,) array for each of :data:`STAT_NAMES`. Computed in float64
        in blocks of rows.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    out = {
        name: np.zeros(n, dtype=dtype if storage_dtypes else np.float64)
        for name, dtype in STAT_DTYPES.items()
    }
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        prev = None if previous_logits is None else previous_logits[rows]
        for name, values in _block_statistics(logits[rows], labels[rows], prev).items():
            out[name][rows] = values
    return out


def _block_statistics(logits, labels, previous_logits) -> dict[str, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    logp = log_softmax(z)
    p = np.exp(logp)
    other = z.copy()
    other[rows, labels] = -np.inf
    top = np.sort(p, axis=1)
    if previous_logits is None:
        change = np.zeros(len(labels))
    else:
        change = np.abs(p * (logp - log_softmax(previous_logits))).sum(axis=1)
    return {
        "target_logit": z[rows, labels],
        "max_other_logit": other.max(axis=1) if z.shape[1] > 1 else np.zeros(len(labels)),
        "target_logprob": logp[rows, labels],
        "top1_prob": top[:, -1],
        "top2_prob": top[:, -2] if z.shape[1] > 1 else np.zeros(len(labels)),
        "entropy": entropy(p),
        "el2n": el2n(p, labels),
        "tdds_change": change,
        "correct": z.argmax(axis=1) == labels,
    }


def record_statistics(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`epoch_statistics` of every epoch of float (E, N, C) logits; name -> float64 (E, N)."""
    per_epoch = [
        epoch_statistics(logits[e], labels, logits[e - 1] if e > 0 else None, False)
        for e in range(len(logits))
    ]
    return {name: np.stack([s[name] for s in per_epoch]) for name in STAT_NAMES}


class StatisticsRecorder:
    """Collects :func:`epoch_statistics` epoch by epoch, keeping only the previous logits.

    The trainer calls it with each recorded epoch's float32 logits (R, C). The
    logits are rounded to float16 first, exactly as a logit record stores them,
    so a statistics record gives the same scores as a logit record would.
    Memory: one float16 (R, C) array for the previous epoch.
    """

    def __init__(self, labels: np.ndarray):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.previous: np.ndarray | None = None
        self.epochs: list[int] = []
        self.per_epoch: list[dict[str, np.ndarray]] = []

    def __call__(self, epoch: int, logits: np.ndarray) -> None:
        z = np.asarray(logits).astype(np.float16)
        self.per_epoch.append(epoch_statistics(z, self.labels, self.previous))
        self.previous = z
        self.epochs.append(int(epoch))

    def stacked(self) -> dict[str, np.ndarray]:
        """name -> (E, R) array for every statistic."""
        return {name: np.stack([s[name] for s in self.per_epoch]) for name in STAT_NAMES}

    def state_dict(self) -> dict[str, Any]:
        """What it has collected, as tensors (a training-state checkpoint holds it)."""
        import torch

        return {
            "previous": None if self.previous is None else torch.from_numpy(self.previous.copy()),
            "epochs": list(self.epochs),
            "per_epoch": [{name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in s.items()}
                          for s in self.per_epoch],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = None if state["previous"] is None else state["previous"].numpy()
        self.epochs = [int(e) for e in state["epochs"]]
        self.per_epoch = [{name: v.numpy() for name, v in s.items()} for s in state["per_epoch"]]


ScorerFn = Callable[..., np.ndarray]


def _final(record: PredictionRecord, name: str) -> np.ndarray:
    return record.stat(name)[-1]


def early_mean(record: PredictionRecord, name: str, until_epoch: int) -> np.ndarray:
    """float64 (N,): statistic ``name`` averaged over the recorded epochs <= ``until_epoch``.

    Paul et al. (NeurIPS 2021) score early in training, before the model has
    fitted its data; ValueError naming the recorded epochs when none is that early.
    """
    early = np.asarray(record.epochs) <= until_epoch
    if not early.any():
        raise ValueError(
            f"no epoch at or before until_epoch={until_epoch} was recorded (recorded: "
            f"{[int(e) for e in record.epochs]}): add early epochs to record_epochs, or raise "
            f"scorer_options.<scorer>.until_epoch"
        )
    return mean_over_epochs(record.stat(name)[early])


def _grand(record: PredictionRecord, seed: int, last_layer: bool, batch_size: int = 128):
    from unseen.grand import grand_scores

    if record.model is None:
        raise ValueError(
            "GraNd needs the scoring model: load the record with its checkpoint and data"
        )
    return grand_scores(record.model, record.labels, last_layer=last_layer, batch_size=batch_size)


_WINDOW = {"type": "integer", "minimum": 2, "default": 10,
           "description": "window length in recorded epochs (clipped to the record)"}

#: name -> :class:`unseen.plugins.ScorerPlugin`: every scorer, its options and what it needs.
SCORER_PLUGINS: dict[str, ScorerPlugin] = registry(
    ScorerPlugin("entropy", lambda r, seed: _final(r, "entropy"),
                 description="predictive entropy at the last epoch"),
    ScorerPlugin("least_confidence", lambda r, seed: 1.0 - _final(r, "top1_prob"),
                 description="1 - top-class probability at the last epoch"),
    ScorerPlugin("margin", lambda r, seed: 1.0 - (_final(r, "top1_prob") - _final(r, "top2_prob")),
                 description="1 - gap between the two top probabilities at the last epoch"),
    ScorerPlugin("loss", lambda r, seed: -_final(r, "target_logprob"),
                 description="cross-entropy at the last epoch"),
    ScorerPlugin("el2n", lambda r, seed: _final(r, "el2n"),
                 description="EL2N: ||p - onehot(y)|| at the last epoch"),
    ScorerPlugin("el2n_avg", lambda r, seed: mean_over_epochs(r.stat("el2n")),
                 description="EL2N averaged over the recorded epochs"),
    ScorerPlugin(
        "el2n_early", lambda r, seed, until_epoch: early_mean(r, "el2n", until_epoch),
        options={"until_epoch": {
            "type": "integer", "minimum": 1, "default": 10,
            "description": "last (1-based) epoch averaged; every recorded epoch up to it counts"}},
        description="EL2N averaged over the recorded epochs up to until_epoch (early in training)",
    ),
    ScorerPlugin("forgetting", lambda r, seed: forgetting(r.stat("correct") > 0),
                 description="forgetting events over the recorded epochs"),
    ScorerPlugin("aum", lambda r, seed: area_under_margin(r.stat("target_logit"),
                                                          r.stat("max_other_logit")),
                 description="area under the margin over the recorded epochs"),
    ScorerPlugin(
        "tdds", lambda r, seed, window, decay: tdds(r.stat("tdds_change"), window, decay),
        options={
            "window": _WINDOW,
            "decay": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.9,
                      "description": "weight of the newest window; older windows get"
                      " decay * (1 - decay)^age"},
        },
        description="temporal dual-depth scoring over the recorded epochs",
    ),
    ScorerPlugin(
        "dyn_unc",
        lambda r, seed, window: dynamic_uncertainty(np.exp(r.stat("target_logprob")), window),
        options={"window": _WINDOW},
        description="dynamic uncertainty over the recorded epochs",
    ),
    ScorerPlugin(
        "grand", lambda r, seed, batch_size: _grand(r, seed, False, batch_size),
        options={"batch_size": {"type": "integer", "minimum": 1, "default": 128,
                                "description": "samples per vmap batch"}},
        needs=frozenset({RECORD, CHECKPOINT}),
        description="GraNd: expected gradient norm (runs the model)",
    ),
    ScorerPlugin(
        "grand_last", lambda r, seed, batch_size: _grand(r, seed, True, batch_size),
        options={"batch_size": {"type": "integer", "minimum": 1, "default": 1024}},
        needs=frozenset({RECORD, CHECKPOINT}),
        description="GraNd of the last layer only (runs the model)",
    ),
    ScorerPlugin("random", lambda r, seed: random_scores(r.sample_ids, seed),
                 description="uniform random control that ignores the model"),
)

#: name -> fn(record, seed, **options) -> float64 (N,), higher = keep first; the
#: function takes every option of its entry (:func:`compute_scores` fills the defaults).
SCORERS: dict[str, ScorerFn] = {name: entry.fn for name, entry in SCORER_PLUGINS.items()}

#: Scorers that need the trained model (checkpoint plus images), not only predictions.
MODEL_SCORERS = frozenset(name for name, entry in SCORER_PLUGINS.items() if entry.needs_model)


def scorer_plugin(name: str) -> ScorerPlugin:
    """The registry entry of scorer ``name``; KeyError naming the known ones."""
    if name not in SCORER_PLUGINS:
        raise KeyError(f"unknown scorer {name!r}; choose one of {sorted(SCORER_PLUGINS)}")
    return SCORER_PLUGINS[name]


def scorers_needing(need: str) -> tuple[str, ...]:
    """Names of the scorers that need side input ``need`` (:data:`unseen.plugins.SCORER_NEEDS`), sorted."""
    return tuple(sorted(name for name, entry in SCORER_PLUGINS.items() if need in entry.needs))


def compute_scores(
    name: str, record: PredictionRecord, seed: int = 0, options: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> np.ndarray:
    """Score every sample of ``record`` with scorer ``name``; float64 (N,), higher = keep.

    ``options`` are the scorer's keyword options (e.g. ``{"window": 10}`` for
    tdds). Raises ``KeyError`` naming the known scorers for an unknown name and
    ``ValueError`` (:func:`check_finite_scores`) if a scorer produced a non-finite
    value; ``source`` (e.g. the predictions file) is named in that message.
    """
    if name not in SCORER_PLUGINS:
        raise KeyError(f"unknown scorer {name!r}; choose one of {sorted(SCORER_PLUGINS)}")
    entry = SCORER_PLUGINS[name]
    try:
        scores = entry.fn(record, seed, **{**entry.option_defaults(), **dict(options or {})})
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"scorer {name!r}: bad options {dict(options or {})}: {err}") from None
        raise
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != record.sample_ids.shape:
        raise ValueError(f"scorer {name!r} returned shape {scores.shape}")
    check_finite_scores(scores, record.sample_ids,
                        f"scorer {name!r}" + (f" on {source}" if source else ""),
                        "the model's outputs are not finite (its training diverged): lower the"
                        " scoring model's learning rate (scoring_model.train.lr), then rerun")
    return scores


def check_finite_scores(scores: np.ndarray, sample_ids: np.ndarray, source: str, fix: str) -> None:
    """Raise ValueError naming ``source``, the first bad sample ids and ``fix`` on NaN or inf."""
    bad = ~np.isfinite(np.asarray(scores, dtype=np.float64))
    if bad.any():
        raise ValueError(
            f"{source}: {int(bad.sum())} of {len(bad)} scores are NaN or infinite (sample ids"
            f" {np.asarray(sample_ids)[bad][:5].tolist()}...); selection needs finite scores."
            f" Fix: {fix}"
        )


def scores_from_predictions(
    name: str,
    labels: np.ndarray,
    *,
    logits: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    sample_ids: np.ndarray | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Scores from per-epoch predictions, without Snakemake or files.

    Args:
        name: a scorer in :data:`SCORERS` except the gradient ones (GraNd needs
            the model; use :func:`unseen.grand.grand_scores`).
        labels: int (N,) true labels in [0, C).
        logits: float (E, N, C) or (N, C) logits, oldest epoch first; or
        probs: float (E, N, C) or (N, C) probabilities (rows sum to 1). Give
            exactly one. A 2-D array is one epoch (the final one).
        sample_ids: int (N,), default ``arange(N)``; only ``random`` uses them.
        seed, options: as in :func:`compute_scores`.

    Returns:
        float64 (N,), higher = keep first.

    Probabilities are turned into logits as ``log(max(p, 1e-12))``; softmax of
    those gives back ``p`` (up to the clip), so every scorer sees the same
    distribution. AUM then measures margins in log-probability units.
    """
    if (logits is None) == (probs is None):
        raise ValueError("give exactly one of logits or probs")
    if name in MODEL_SCORERS:
        raise ValueError(f"{name!r} needs the model; use unseen.grand.grand_scores")
    if probs is not None:
        logits = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-12))
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3:
        raise ValueError(f"predictions must be (E, N, C) or (N, C), got shape {z.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.arange(len(labels)) if sample_ids is None else np.asarray(sample_ids, np.int64)
    record = PredictionRecord(
        sample_ids=ids, labels=labels, epochs=np.arange(1, len(z) + 1), logits=z
    )
    return compute_scores(name, record, seed, options)
