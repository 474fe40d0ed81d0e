"""Score diagnostics: how widely a scorer's scores spread and how stable their ranking is.

Everything here works on score tables as pandas DataFrames: ``sample_id``
(int64) and ``score`` (float64), one per (seed, scorer, kind) with kind
``"fitting"`` or ``"unseen"``. Scores follow the package convention: higher =
more important to keep. Ranks are 1..n with 1 = lowest score (least important).

:func:`diagnostics_table` is the report's ``diagnostics`` table
(:func:`unseen.report.write_report`).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, rankdata, spearmanr

SPREAD_FIELDS = (
    "n", "mean", "std", "q05", "q25", "median", "q75", "q95", "iqr", "concentration",
)
"""Keys of :func:`score_spread`, in order; also columns of :func:`diagnostics_table`."""

CONCENTRATION_BINS = 50

DIAGNOSTICS_COLUMNS = (
    "scorer", "kind", "n_seeds", *SPREAD_FIELDS,
    "spearman_rho_mean", "spearman_rho_min", "n_seed_pairs",
)


# --------------------------------------------------------------------------- #
# Rank stability and score spread
# --------------------------------------------------------------------------- #


def _check_score_table(scores: pd.DataFrame, name: str) -> None:
    missing = [c for c in ("sample_id", "score") if c not in scores.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")
    if scores["sample_id"].duplicated().any():
        dup = scores.loc[scores["sample_id"].duplicated(), "sample_id"].iloc[:5].tolist()
        raise ValueError(f"{name} has duplicate sample ids, e.g. {dup}")


def aligned_ranks(scores_a: pd.DataFrame, scores_b: pd.DataFrame) -> pd.DataFrame:
    """Rank two score tables on the samples they share.

    Args:
        scores_a, scores_b: tables with unique ``sample_id`` and a float ``score``
            (higher = more important to keep).

    Returns:
        DataFrame with columns ``sample_id, rank_a, rank_b`` for the n ids present
        in both tables with a non-NaN score on both sides, sorted by sample_id.
        Ranks run 1..n (1 = lowest score), ties share their average rank. Ranks
        are computed on the shared ids only, so ids present on one side do not
        shift the other side's ranks.

    Raises:
        ValueError: a table has duplicate ids or lacks a column, or fewer than 2
            ids are shared.
    """
    _check_score_table(scores_a, "scores_a")
    _check_score_table(scores_b, "scores_b")
    joined = pd.merge(
        scores_a[["sample_id", "score"]],
        scores_b[["sample_id", "score"]],
        on="sample_id",
        how="inner",
        suffixes=("_a", "_b"),
    )
    # A NaN score has no place in a ranking; dropping it on both sides keeps
    # the two rank vectors over the same samples.
    joined = joined.dropna(subset=["score_a", "score_b"]).sort_values("sample_id")
    if len(joined) < 2:
        raise ValueError(
            f"score tables share {len(joined)} sample ids with finite scores; "
            "rank stability needs at least 2"
        )
    return pd.DataFrame(
        {
            "sample_id": joined["sample_id"].to_numpy(),
            "rank_a": rankdata(joined["score_a"].to_numpy(), method="average"),
            "rank_b": rankdata(joined["score_b"].to_numpy(), method="average"),
        }
    )


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equal-length vectors (``scipy.stats.spearmanr``).

    In [-1, 1]; ties take their average rank. NaN when either vector is constant
    (no ordering to compare).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(x, y).statistic)


def rank_stability(scores_a: pd.DataFrame, scores_b: pd.DataFrame) -> float:
    """Spearman's rho between two score tables (e.g. the same scorer under two seeds).

    Over the samples both tables score (:func:`aligned_ranks`), in [-1, 1]:
    1 = both tables order the shared samples identically. NaN when either table
    gives all shared samples the same score (no ordering to compare).
    """
    ranks = aligned_ranks(scores_a, scores_b)
    return spearman_rho(ranks["rank_a"].to_numpy(), ranks["rank_b"].to_numpy())


def score_spread(scores: np.ndarray) -> dict:
    """Summary of how widely a score distribution spreads.

    Args:
        scores: float array of any shape (flattened); NaNs are ignored.

    Returns:
        dict with keys :data:`SPREAD_FIELDS`: ``n`` (number of non-NaN scores),
        ``mean``, ``std`` (population, ddof=0), quantiles ``q05, q25, median, q75,
        q95`` (linear interpolation), ``iqr`` = q75 - q25, and ``concentration``:
        the largest fraction of the n scores that falls into one of
        :data:`CONCENTRATION_BINS` equal-width bins spanning the 1st to 99th
        percentile. About 0.98/50 for a uniform sample, near 1 when almost all
        scores crowd together. All values are NaN (n = 0) for an empty input.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    n = int(values.size)
    if n == 0:
        return {"n": 0, **{k: float("nan") for k in SPREAD_FIELDS[1:]}}
    q01, q05, q25, q50, q75, q95, q99 = np.quantile(
        values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    )
    return {
        "n": n,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "q05": float(q05),
        "q25": float(q25),
        "median": float(q50),
        "q75": float(q75),
        "q95": float(q95),
        "iqr": float(q75 - q25),
        "concentration": _concentration(values, float(q01), float(q99)),
    }


def _concentration(values: np.ndarray, low: float, high: float) -> float:
    """Largest fraction of ``values`` in one of the equal-width bins over [low, high]."""
    if high <= low:
        # Zero-width range: at least 98% of the scores are one value; the
        # "bin" is that value itself.
        return float(np.mean(values == low))
    counts, _ = np.histogram(values, bins=CONCENTRATION_BINS, range=(low, high))
    return float(counts.max() / values.size)


def diagnostics_table(
    score_tables: dict[tuple[int, str, str], pd.DataFrame],
) -> pd.DataFrame:
    """Score spread and seed-to-seed rank stability per (scorer, kind).

    Args:
        score_tables: ``{(seed, scorer, kind): table}`` with ``sample_id`` and
            ``score`` columns; kind is e.g. "fitting" or "unseen".

    Returns:
        One row per (scorer, kind), sorted by scorer then kind, with columns
        :data:`DIAGNOSTICS_COLUMNS`:
        ``scorer, kind, n_seeds``; the :func:`score_spread` fields ``n, mean, std,
        q05, q25, median, q75, q95, iqr, concentration``, each averaged over the
        seeds (no prefix); ``spearman_rho_mean`` / ``spearman_rho_min``: mean /
        minimum of :func:`rank_stability` over all unordered pairs of distinct
        seeds (NaN with fewer than 2 seeds; a NaN pair, i.e. constant scores,
        propagates); ``n_seed_pairs`` = n_seeds * (n_seeds - 1) / 2.
    """
    groups: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    for (seed, scorer, kind), table in score_tables.items():
        groups.setdefault((scorer, kind), {})[seed] = table

    rows = []
    for (scorer, kind), by_seed in sorted(groups.items()):
        spreads = pd.DataFrame(
            [score_spread(t["score"].to_numpy()) for t in by_seed.values()]
        )
        pairs = [
            rank_stability(by_seed[a], by_seed[b])
            for a, b in itertools.combinations(sorted(by_seed), 2)
        ]
        rows.append(
            {
                "scorer": scorer,
                "kind": kind,
                "n_seeds": len(by_seed),
                **spreads[list(SPREAD_FIELDS)].mean().to_dict(),
                "spearman_rho_mean": float(np.mean(pairs)) if pairs else float("nan"),
                "spearman_rho_min": float(np.min(pairs)) if pairs else float("nan"),
                "n_seed_pairs": len(pairs),
            }
        )
    return pd.DataFrame(rows, columns=list(DIAGNOSTICS_COLUMNS))
