"""Selection strategies: how a coreset of exactly ``n`` samples is drawn from scores.

Each strategy takes the candidate pool (sample ids, scores with higher = keep
first, labels), a budget ``n`` and a :class:`SelectionContext`, and returns the
positions of ``n`` distinct candidates, best first; :data:`STRATEGY_PLUGINS`
holds one entry per config name (``selection.strategy``): the function and what
it needs (:class:`unseen.plugins.StrategyPlugin`), :data:`STRATEGIES` maps the
names to the functions and :func:`select_coreset` is the entry point. Sizes, top-k order and score aggregation are in
:mod:`unseen.selection`; formulas and references in docs/scorers.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from unseen.plugins import CLASS_DIFFICULTY, STRATEGY_CHOICE, StrategyPlugin, registry
from unseen.seeds import derive_seed
from unseen.selection import KEEP_CHOICES, random_subset, rank_for_selection, select_top


def apportion(weights: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    """Split ``total`` items over groups in proportion to ``weights``, capped by ``caps``.

    Largest-remainder rounding (ties to the lower group index); whatever a
    capped group cannot take is re-split over the others in proportion to
    their weights, and groups of weight 0 get shares only when no weighted
    group has room left.

    Args:
        weights: float (G,) >= 0.
        total: int, at most ``caps.sum()``.
        caps: int (G,) >= 0, most items a group can take.

    Returns:
        int64 (G,) with sum ``total`` and ``0 <= counts <= caps``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    if total < 0 or total > caps.sum():
        raise ValueError(f"cannot place {total} items in groups of capacity {caps.sum()}")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite and non-negative")
    counts = np.zeros(len(caps), dtype=np.int64)
    while (remaining := total - int(counts.sum())) > 0:
        spare = caps - counts
        w = np.where(spare > 0, weights, 0.0)
        if w.sum() <= 0:
            w = (spare > 0).astype(np.float64)
        ideal = remaining * w / w.sum()
        floors = np.floor(ideal).astype(np.int64)
        capped = floors >= spare
        counts += np.minimum(floors, spare)
        if np.any(capped & (w > 0)):
            continue  # re-split what the full groups could not take
        left = total - int(counts.sum())
        order = np.lexsort((np.arange(len(caps)), -(ideal - floors)))
        order = order[w[order] > 0][:left]
        counts[order] += 1
    return counts


def _within_groups(
    groups: np.ndarray, counts: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """Positions of the first ``counts[g]`` candidates of each group ``g`` in ``rank`` order.

    Args:
        groups: int (N,) group of each candidate position.
        counts: int (G,) how many to take per group.
        rank: int (N,) candidate positions, best first.

    Returns:
        int64 positions, in ``rank`` order (best first).
    """
    ranked_groups = np.asarray(groups, dtype=np.int64)[rank]
    by_group = np.argsort(ranked_groups, kind="stable")
    sorted_groups = ranked_groups[by_group]
    group_start = np.searchsorted(sorted_groups, sorted_groups, side="left")
    place = np.empty(len(rank), dtype=np.int64)
    place[by_group] = np.arange(len(rank)) - group_start  # 0, 1, 2, ... within a group
    return np.asarray(rank, dtype=np.int64)[place < np.asarray(counts)[ranked_groups]]


def class_quotas(
    weights: np.ndarray,
    n: int,
    pool_counts: np.ndarray,
    base_counts: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class counts to add so that the whole coreset follows ``weights``.

    The final coreset (``base_counts`` already selected plus ``n`` new) should
    hold ``T * w_c / sum(w)`` samples of class ``c`` with ``T = n + sum(base)``.
    Each class asks for what it still lacks, ``max(0, T w_c / sum(w) - base_c)``;
    :func:`apportion` turns these real-valued wishes into integers that sum to
    ``n`` exactly, never exceed the candidates left in a class (``pool_counts``)
    and hand a full class's surplus to the others.
    """
    pool_counts = np.asarray(pool_counts, dtype=np.int64)
    base = np.zeros_like(pool_counts) if base_counts is None else np.asarray(base_counts)
    w = np.asarray(weights, dtype=np.float64)
    total = n + int(base.sum())
    wish = np.maximum(0.0, total * w / w.sum() - base) if w.sum() > 0 else pool_counts * 1.0
    return apportion(wish, n, pool_counts)


@dataclass(frozen=True)
class SelectionContext:
    """Everything a strategy may use beyond the candidates' own scores.

    Attributes:
        keep: "highest" (default) or "lowest": which end of the scores is best.
        population_counts: int (C,) class sizes of the whole training set, or
            None to use the candidates' class counts (plus ``base_counts``).
        base_counts: int (C,) samples per class already in the coreset (from
            earlier UNSEEN stages), or None.
        class_error: float (C,) in [0, 1], each class's error rate on unseen
            samples (hard-class priority), or None.
        ccs_beta: fraction of the hardest candidates CCS drops, in [0, 1).
        ccs_bins: number of score bins (strata) for CCS.
        priority_lambda: how strongly quotas grow with class error (hard-class priority).
        seed: seeds CCS's sampling within bins and the ``uniform`` draw.
        pruning_rate: the pruning rate of the coreset being built, in (0, 1), or
            None; the rate-aware ``auto`` strategy needs it.
        auto_ccs_rate: ``auto`` keeps the top scores below this pruning rate and
            switches to CCS from it on.
        validated_strategy: the strategy ``validated`` applies: the candidate
            that trained best on a split held out of the training set
            (:func:`unseen.validation.choose_strategy`), or None.
    """

    keep: str = "highest"
    population_counts: np.ndarray | None = None
    base_counts: np.ndarray | None = None
    class_error: np.ndarray | None = None
    ccs_beta: float = 0.1
    ccs_bins: int = 50
    priority_lambda: float = 1.0
    seed: int = 0
    pruning_rate: float | None = None
    auto_ccs_rate: float = 0.8
    validated_strategy: str | None = None


def strategy_top(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """The ``n`` best scores overall (ties by ascending id): the paper's default."""
    return select_top(ids, scores, n, ctx.keep)


def strategy_uniform(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """``n`` candidates drawn uniformly at random, ignoring the scores (seeded by ``ctx.seed``).

    The control ``validated`` can fall back to: at a pruning rate where no
    coreset drawn by the scores trains better than chance on the held-out split,
    it chooses this one (the converged run's evidence: docs/results.md).
    """
    return random_subset(ids, n, ctx.seed)


def _class_arrays(labels, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(population_counts, base_counts, class_error), each padded to the same C classes.

    Without an explicit population the training set is the candidates plus
    the samples already selected.
    """
    labels = np.asarray(labels, dtype=np.int64)
    given = [a for a in (ctx.population_counts, ctx.base_counts, ctx.class_error) if a is not None]
    c = max([int(labels.max()) + 1 if len(labels) else 0] + [len(a) for a in given])

    def pad(a, fill=0):
        return np.pad(np.asarray(a), (0, c - len(a)), constant_values=fill)

    base = pad(np.zeros(0, np.int64) if ctx.base_counts is None else ctx.base_counts)
    pop = (
        pad(ctx.population_counts)
        if ctx.population_counts is not None
        else np.bincount(labels, minlength=c) + base
    )
    err = pad(np.zeros(0) if ctx.class_error is None else ctx.class_error, 0.0).astype(float)
    return pop.astype(np.int64), base.astype(np.int64), err


def _quota_select(ids, scores, labels, n, ctx: SelectionContext, weights, base) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    pool = np.bincount(labels, minlength=len(weights))
    quotas = class_quotas(weights, n, pool, base)
    rank = rank_for_selection(ids, scores, ctx.keep)
    return _within_groups(labels, quotas, rank)


def strategy_class_balanced(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """The same fraction of every class: ``quota_c ∝ n_c``, best scores within each class.

    ``n_c`` is the class size in the training set; quotas are rounded by
    largest remainder and capped by the candidates a class has left.
    """
    pop, base, _ = _class_arrays(labels, ctx)
    return _quota_select(ids, scores, labels, n, ctx, pop.astype(float), base)


def class_error_table(labels: np.ndarray, wrong: np.ndarray) -> pd.DataFrame:
    """label, n_predictions, n_errors, error_rate for every class 0..max(label)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = np.bincount(labels)
    errors = np.bincount(labels, weights=np.asarray(wrong, dtype=np.float64), minlength=len(n))
    return pd.DataFrame(
        {
            "label": np.arange(len(n), dtype=np.int64),
            "n_predictions": n.astype(np.int64),
            "n_errors": errors.astype(np.int64),
            "error_rate": np.divide(errors, n, out=np.zeros(len(n)), where=n > 0),
        }
    )


def hard_class_weights(
    population_counts: np.ndarray, class_error: np.ndarray, priority_lambda: float
) -> np.ndarray:
    """Hard-class priority weights ``w_c = n_c * (1 + lambda * err_c)``; float64 (C,)."""
    err = np.asarray(class_error, dtype=np.float64)
    if np.any(err < 0) or np.any(err > 1):
        raise ValueError("class error rates must lie in [0, 1]")
    if priority_lambda < 0:
        raise ValueError(f"priority lambda must be >= 0, got {priority_lambda}")
    return np.asarray(population_counts, dtype=np.float64) * (1.0 + priority_lambda * err)


def strategy_hard_class_priority(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """Per-class quotas that grow with the class's out-of-fold error rate.

    ``quota_c ∝ n_c * (1 + lambda * err_c)``, normalised to the budget,
    capped by the class size, largest-remainder rounding; best scores within
    each class. ``err_c`` is measured on samples the scoring models never saw.
    """
    if ctx.class_error is None:
        raise ValueError("hard_class_priority needs class_error (per-class out-of-fold error)")
    pop, base, err = _class_arrays(labels, ctx)
    weights = hard_class_weights(pop, err, ctx.priority_lambda)
    return _quota_select(ids, scores, labels, n, ctx, weights, base)


def strategy_ccs(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """Coverage-centric coreset selection (Zheng et al., ICLR 2023).

    1. Drop the ``beta`` fraction of candidates ranked first by ``keep`` (with
       the default ``keep: highest``, the hardest, likely mislabelled ones),
       ``floor(beta * N)`` of them, fewer if that would leave less than ``n``.
    2. Split the rest into ``bins`` equal-width score bins.
    3. Spread the budget evenly over the bins: :func:`apportion` with equal
       weights capped by bin sizes, so a small bin's leftover goes to the others.
    4. Within a bin take a uniform random sample (seeded; the random key of a
       sample depends only on the seed and its id, so the result does not
       depend on the candidates' order).
    """
    if not 0.0 <= ctx.ccs_beta < 1.0:
        raise ValueError(f"ccs beta must lie in [0, 1), got {ctx.ccs_beta}")
    if ctx.ccs_bins < 1:
        raise ValueError(f"ccs bins must be >= 1, got {ctx.ccs_bins}")
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    rank = rank_for_selection(ids, scores, ctx.keep)
    n_drop = min(int(np.floor(ctx.ccs_beta * len(ids))), len(ids) - n)
    rest = rank[n_drop:]
    bins = _equal_width_bins(scores[rest], ctx.ccs_bins)
    per_bin = apportion(np.ones(ctx.ccs_bins), n, np.bincount(bins, minlength=ctx.ccs_bins))
    keys = _id_keys(ids[rest], derive_seed(ctx.seed, "ccs"))
    random_order = np.lexsort((ids[rest], keys))
    chosen = rest[_within_groups(bins, per_bin, random_order)]
    # report in score order (best first) so every strategy's output reads the same way
    rank_of = np.empty(len(rank), dtype=np.int64)
    rank_of[rank] = np.arange(len(rank))
    return chosen[np.argsort(rank_of[chosen])]


def _equal_width_bins(values: np.ndarray, k: int) -> np.ndarray:
    """Bin index in [0, k) of each value on ``k`` equal-width bins over its range."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(len(values), dtype=np.int64)
    return np.clip(((values - lo) / (hi - lo) * k).astype(np.int64), 0, k - 1)


def _id_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) key per sample that depends only on ``seed`` and its id."""
    if len(ids) == 0:
        return np.zeros(0)
    return np.random.default_rng(seed).random(int(ids.max()) + 1)[ids]


def auto_strategy_name(pruning_rate: float, auto_ccs_rate: float) -> str:
    """The strategy ``auto`` applies at ``pruning_rate``: ``"top"`` below ``auto_ccs_rate``, else ``"ccs"``.

    Why: with a fair training budget the hardest samples make the best coreset
    while most of the data is kept, but a small coreset of only the hardest
    samples loses the easy, typical ones and collapses (Sorscher et al.,
    NeurIPS 2022; CCS, Zheng et al., ICLR 2023). The rule depends on the
    pruning rate only, never on test data (docs/results.md gives the evidence).
    """
    if not 0.0 <= pruning_rate <= 1.0:
        raise ValueError(f"pruning rate must lie in [0, 1], got {pruning_rate}")
    return "ccs" if pruning_rate >= auto_ccs_rate else "top"


def strategy_auto(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """Rate-aware selection: top scores at low pruning rates, CCS from ``ctx.auto_ccs_rate`` on.

    See :func:`auto_strategy_name`. Without ``ctx.pruning_rate`` the rate is
    what this call prunes: ``1 - (n + already selected) / population``, where
    the population is ``ctx.population_counts`` summed or, without it, the
    candidates plus ``ctx.base_counts``. Later UNSEEN stages pass the
    coreset's rate explicitly, since their candidates are only the rest.
    """
    rate = ctx.pruning_rate
    if rate is None:
        base = 0 if ctx.base_counts is None else int(np.sum(ctx.base_counts))
        population = (
            int(np.sum(ctx.population_counts)) if ctx.population_counts is not None
            else len(ids) + base
        )
        rate = 1.0 - (n + base) / population if population else 0.0
    name = auto_strategy_name(rate, ctx.auto_ccs_rate)
    return STRATEGIES[name](ids, scores, labels, n, ctx)


def strategy_validated(ids, scores, labels, n, ctx: SelectionContext) -> np.ndarray:
    """The strategy chosen for this run and rate on a held-out split of the training set.

    The choice (``ctx.validated_strategy``) is made by training one model per
    candidate strategy on the rest of the training set and comparing their
    accuracy on the held-out samples (:func:`unseen.validation.choose_strategy`,
    the workflow's ``choose_strategy`` job); the test set is never used.
    """
    name = ctx.validated_strategy
    if name is None:
        raise ValueError(
            "strategy 'validated' needs the strategy chosen on the held-out split: call "
            "unseen.api.choose_strategy (the workflow's choose_strategy job does it) and pass "
            "its 'strategy' as validated_strategy, or pick a strategy such as 'auto'"
        )
    if name not in VALIDATION_CANDIDATES:
        raise ValueError(f"validated_strategy must be one of {VALIDATION_CANDIDATES}, got {name!r}")
    return STRATEGIES[name](ids, scores, labels, n, ctx)


StrategyFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int, SelectionContext], np.ndarray]

#: name -> :class:`unseen.plugins.StrategyPlugin`: every strategy and what it needs.
#: The order of the validation candidates here is the order ``validated`` breaks ties in.
STRATEGY_PLUGINS: dict[str, StrategyPlugin] = registry(
    StrategyPlugin("top", strategy_top, validation_candidate=True, plain=True,
                   description="the best scores overall"),
    StrategyPlugin("ccs", strategy_ccs, validation_candidate=True,
                   description="coverage-centric: drop the hardest ccs_beta, even budget over score bins"),
    StrategyPlugin("class_balanced", strategy_class_balanced, class_aware=True,
                   validation_candidate=True,
                   description="the same fraction of every class"),
    StrategyPlugin("hard_class_priority", strategy_hard_class_priority,
                   needs=frozenset({CLASS_DIFFICULTY}), class_aware=True,
                   description="class quotas growing with the out-of-fold class error"),
    StrategyPlugin("uniform", strategy_uniform, validation_candidate=True,
                   description="uniformly at random, ignoring the scores (the fallback validated can choose)"),
    StrategyPlugin("auto", strategy_auto, validation_candidate=True,
                   description="top below auto_ccs_rate, ccs from it on"),
    StrategyPlugin("validated", strategy_validated, needs=frozenset({STRATEGY_CHOICE}),
                   description="the candidate that trained best on a held-out split"),
)

#: name -> fn(sample_ids, scores, labels, n, ctx) -> int64 (n,) positions, best first.
STRATEGIES: dict[str, StrategyFn] = {name: entry.fn for name, entry in STRATEGY_PLUGINS.items()}
#: Strategies ``validated`` may choose between: those that need nothing but the scores.
VALIDATION_CANDIDATES = tuple(
    name for name, entry in STRATEGY_PLUGINS.items() if entry.validation_candidate
)
#: Strategies that give every class a quota.
CLASS_AWARE_STRATEGIES = tuple(name for name, entry in STRATEGY_PLUGINS.items() if entry.class_aware)
#: The strategy of a selection that names none (the paper's: the best scores overall).
DEFAULT_STRATEGY = next(name for name, entry in STRATEGY_PLUGINS.items() if entry.plain)


def strategy_plugin(name: str) -> StrategyPlugin:
    """The registry entry of strategy ``name``; KeyError naming the known ones."""
    if name not in STRATEGY_PLUGINS:
        raise KeyError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGY_PLUGINS)}")
    return STRATEGY_PLUGINS[name]


def strategy_needs(name: str, need: str) -> bool:
    """True when strategy ``name`` needs side input ``need`` (:data:`unseen.plugins.STRATEGY_NEEDS`)."""
    return need in strategy_plugin(name).needs


def strategies_where(**flags) -> tuple[str, ...]:
    """Names of the strategies whose entry has every attribute in ``flags``, registry order."""
    return tuple(
        name for name, entry in STRATEGY_PLUGINS.items()
        if all(getattr(entry, key) == value for key, value in flags.items())
    )


def strategies_needing(need: str) -> tuple[str, ...]:
    """Names of the strategies that need side input ``need``, sorted."""
    return tuple(sorted(name for name, entry in STRATEGY_PLUGINS.items() if need in entry.needs))


def select_coreset(
    scores: np.ndarray,
    labels: np.ndarray,
    n: int,
    strategy: str = "top",
    *,
    sample_ids: np.ndarray | None = None,
    keep: str = "highest",
    **options,
) -> np.ndarray:
    """Positions of the ``n`` samples to keep, without Snakemake or files.

    Args:
        scores: float (N,) per-sample scores, higher = keep first (see ``keep``).
        labels: int (N,) class labels in [0, C).
        n: coreset size, 0 <= n <= N; the result has exactly ``n`` entries.
        strategy: a name in :data:`STRATEGIES`.
        sample_ids: int (N,) ids used to break ties (ascending id first) and to
            key CCS's random draws; default ``arange(N)``.
        keep: "highest" or "lowest".
        **options: further :class:`SelectionContext` fields, e.g.
            ``class_error`` (float (C,)) for hard_class_priority, ``ccs_beta``,
            ``ccs_bins``, ``priority_lambda``, ``seed``, ``base_counts``,
            ``population_counts``, ``pruning_rate`` and ``auto_ccs_rate`` (auto),
            ``validated_strategy`` (validated).

    Returns:
        int64 (n,) distinct positions into ``scores``, best first.
    """
    if strategy not in STRATEGIES:
        raise KeyError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.arange(len(scores)) if sample_ids is None else np.asarray(sample_ids, np.int64)
    if not (len(scores) == len(labels) == len(ids)):
        raise ValueError("scores, labels and sample_ids must have the same length")
    if not 0 <= n <= len(scores):
        raise ValueError(f"cannot select {n} of {len(scores)} samples")
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("sample ids must be unique")
    ctx = SelectionContext(keep=keep, **options)
    pos = np.asarray(STRATEGIES[strategy](ids, scores, labels, n, ctx), dtype=np.int64)
    if len(pos) != n or len(np.unique(pos)) != n:
        raise RuntimeError(f"strategy {strategy!r} returned {len(pos)} positions for n={n}")
    return pos
