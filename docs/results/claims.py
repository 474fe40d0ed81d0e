"""The paper's claims, one table each, for one or more runs side by side (docs/results.md).

    python docs/results/claims.py converged=docs/results/converged \
        underfitted=docs/results/fashion_mnist_validated [--extra docs/results/converged_extra]
    python docs/results/claims.py converged=docs/results/converged_scorers --c6
    python docs/results/claims.py converged=docs/results/converged_el2n_early \
        --extra "2 stages=docs/results/converged_extra" "4 stages=docs/results/converged_four_stages" \
        --c8 docs/results/converged_uniform

``--c6`` adds the third run's claim (config/matrix_converged_scorers.yaml): least
confidence and entropy, UNSEEN against fitting, with the verdict registered there.
C3 includes early EL2N (config/matrix_converged_el2n_early.yaml, C7) where a run has it.
``--extra`` takes one or more multi-step runs (``NAME=FOLDER``; a bare folder is the
second run). ``--c8 FOLDER`` is the fifth run (config/matrix_converged_uniform.yaml):
its recipe rows, relabelled ``validated+uniform``, against the first run's recipe,
the registered decision, and the success criterion re-scored against every
baseline of the first run.

Each RUN folder holds copies of a run's tables: ``metrics.parquet`` (its
``results/summary.parquet``, one row per retrain and seed), ``summary.parquet``
and ``diagnostics.parquet`` (its ``results/report/``) and, where recorded,
``scoring_models.parquet`` (the regime table). ``--extra`` is the second,
smaller run of the converged protocol (multi-step, class-aware strategies).

Comparisons are paired by seed: d = A - B in points of test accuracy (or of
worst-class accuracy for C5), the same seed's folds and retrain seeds on both
sides. The reading rule was fixed before the runs (config/matrix_converged.yaml):
"ahead" when mean(d) - std(d) > 0, "behind" when mean(d) + std(d) < 0, else
"tie" (std over seeds, ddof=1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from make_tables import recipe_against_baselines

from unseen.tables import summary_table

RATES = (0.3, 0.5, 0.7, 0.9)
KEY = ["method", "scorer", "strategy", "pruning_rate", "seed"]


def coreset(name: str) -> tuple[str, str, str]:
    """(method, scorer, strategy) of a coreset name; ``random`` is ("random", "none", "none")."""
    return ("random", "none", "none") if name == "random" else tuple(name.split("-"))


def seed_value(metrics: pd.DataFrame, name: str, rate: float, seed: int,
               column: str = "test_accuracy") -> float:
    """``column`` of coreset ``name`` at ``rate`` and ``seed`` (retrain budget full_steps); NaN if absent."""
    part = per_seed(metrics, name, column)
    hit = part[np.isclose(part.index.get_level_values("pruning_rate"), rate)
               & (part.index.get_level_values("seed") == seed)]
    if len(hit) > 1:
        raise SystemExit(f"{len(hit)} rows for {name} at rate {rate}, seed {seed}")
    return float(hit.iloc[0]) if len(hit) else float("nan")


def per_seed(metrics: pd.DataFrame, name: str, column: str) -> pd.DataFrame:
    """``column`` of coreset ``name`` by (pruning_rate, seed), retrain budget full_steps."""
    method, scorer, strategy = coreset(name)
    part = metrics[(metrics["method"] == method) & (metrics["scorer"] == scorer)
                   & (metrics["strategy"] == strategy) & (metrics["retrain_budget"] == "full_steps")]
    return part.set_index(["pruning_rate", "seed"])[column]


def verdict(d: np.ndarray) -> str:
    """The pre-registered reading of paired differences ``d`` (points, one per seed)."""
    if len(d) < 2:
        return "one seed"
    mean, std = d.mean(), d.std(ddof=1)
    if mean - std > 0:
        return "ahead"
    if mean + std < 0:
        return "behind"
    return "tie"


def paired(metrics: pd.DataFrame | None, a: str, b: str, rate: float,
           column: str = "test_accuracy") -> str:
    """``mean(d) ± std(d) (verdict, n seeds)`` of ``a`` minus ``b`` at ``rate``, in points."""
    if metrics is None:
        return "not run"
    left, right = per_seed(metrics, a, column), per_seed(metrics, b, column)
    both = left.to_frame("a").join(right.to_frame("b"), how="inner")
    both = both[np.isclose(both.index.get_level_values("pruning_rate"), rate)]
    if both.empty:
        return "not run"
    d = 100 * (both["a"] - both["b"]).to_numpy()
    spread = f" ± {d.std(ddof=1):.2f}" if len(d) > 1 else ""
    return f"{d.mean():+.2f}{spread} ({verdict(d)}, {len(d)})"


def scorer_verdict(metrics: pd.DataFrame, scorer: str) -> str:
    """C6's registered reading for one scorer: UNSEEN `validated` against fitting `validated`.

    "supported" when ahead at 2 or more of the 4 rates and behind at none, "refuted" when
    behind at 2 or more, otherwise "mixed" (config/matrix_converged_scorers.yaml).
    """
    a, b = f"unseen_single-{scorer}-validated", f"fitting-{scorer}-validated"
    readings = [paired(metrics, a, b, rate) for rate in RATES]
    ahead = sum("(ahead" in r for r in readings)
    behind = sum("(behind" in r for r in readings)
    if ahead >= 2 and behind == 0:
        return f"supported (ahead at {ahead}, behind at none of {len(RATES)} rates)"
    if behind >= 2:
        return f"refuted (behind at {behind} of {len(RATES)} rates)"
    return f"mixed (ahead at {ahead}, behind at {behind} of {len(RATES)} rates)"


def comparison_table(runs: dict[str, pd.DataFrame | None], pairs: list[tuple[str, str]],
                     column: str = "test_accuracy") -> str:
    """One row per pair and run (runs that lack the pair are left out), one column per rate."""
    rows = []
    for a, b in pairs:
        for run, metrics in runs.items():
            cells = {f"{100 * rate:.0f} %": paired(metrics, a, b, rate, column) for rate in RATES}
            if set(cells.values()) == {"not run"}:
                continue
            rows.append({"A − B": f"{a} − {b}", "run": run, **cells})
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def spread_table(diagnostics: dict[str, pd.DataFrame]) -> str:
    """C1: per run and scorer, fitting against UNSEEN: crowding and seed-to-seed rank stability."""
    rows = []
    for run, table in diagnostics.items():
        for scorer, part in table.groupby("scorer", sort=False):
            by_kind = part.set_index("kind")
            if not {"fitting", "unseen"} <= set(by_kind.index):
                continue
            fit, oof = by_kind.loc["fitting"], by_kind.loc["unseen"]
            rows.append({
                "run": run, "scorer": scorer,
                "most crowded bin, fitting / UNSEEN": f"{fit['concentration']:.1%} / {oof['concentration']:.1%}",
                "IQR, fitting / UNSEEN": f"{fit['iqr']:.3f} / {oof['iqr']:.3f}",
                "Spearman rho across seeds, fitting / UNSEEN": f"{fit['spearman_rho_mean']:.3f} / {oof['spearman_rho_mean']:.3f}",
                "less crowded": "yes" if oof["concentration"] < fit["concentration"] else "no",
                "more stable": "yes" if oof["spearman_rho_mean"] > fit["spearman_rho_mean"] else "no",
            })
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def regime_table(regimes: dict[str, pd.DataFrame]) -> str:
    """Per run and kind of scoring model: training accuracy and accuracy on what it scores."""
    rows = []
    for run, table in regimes.items():
        for kind, part in table.groupby("kind", sort=True):
            rows.append({
                "run": run, "model": kind, "models": len(part),
                "training accuracy (min … max)": f"{part['train_accuracy'].min():.4f} … {part['train_accuracy'].max():.4f}",
                "training loss (mean)": f"{part['train_loss'].mean():.4f}",
                "accuracy on what it scores (mean)": f"{part['scored_accuracy'].mean():.4f}",
            })
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


RECIPE = "unseen_single-el2n-validated"
EXTENDED = "unseen_single-el2n-validated+uniform"


def c8_decision(metrics: pd.DataFrame) -> str:
    """C8's registered decision: [top, ccs, uniform] becomes the default if behind at no rate, ahead at one or more."""
    readings = [paired(metrics, EXTENDED, RECIPE, rate) for rate in RATES]
    ahead = sum("(ahead" in r for r in readings)
    behind = sum("(behind" in r for r in readings)
    adopt = ahead >= 1 and behind == 0
    return (f"ahead at {ahead}, behind at {behind} of {len(RATES)} rates: "
            + ("the default candidates become [top, ccs, uniform]" if adopt
               else "the default stays [top, ccs]"))


def read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / f"{name}.parquet"
    return pd.read_parquet(path) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--extra", nargs="+", default=None, metavar="[NAME=]FOLDER",
                        help="multi-step runs (C4, C5): the second converged run, the four-stage run")
    parser.add_argument("--c8", type=Path, default=None,
                        help="the fifth converged run's folder (uniform as a validated candidate)")
    parser.add_argument("--c6", action="store_true",
                        help="least confidence and entropy (the third converged run)")
    args = parser.parse_args()
    folders = {name: Path(folder) for name, folder in (run.split("=", 1) for run in args.runs)}
    metrics = {name: read(folder, "metrics") for name, folder in folders.items()}
    regimes = {name: t for name, f in folders.items() if (t := read(f, "scoring_models")) is not None}
    print("Regime: how well the scoring models fit\n")
    print(regime_table(regimes) + "\n")
    print("C1 spread and stability (share of samples in the most crowded of 50 equal-width bins; interquartile range of the scores)\n")
    print(spread_table({name: read(f, "diagnostics") for name, f in folders.items()}) + "\n")
    same_scorer = [(f"unseen_single-{s}-{g}", f"fitting-{s}-{g}")
                   for s in ("el2n", "margin", "least_confidence", "entropy")
                   for g in ("top", "ccs", "validated")]
    print("C2 UNSEEN against fitting with the same scorer and strategy (points of test accuracy)\n")
    print(comparison_table(metrics, same_scorer) + "\n")
    dynamics = [(f"unseen_single-{s}-validated", f"fitting-{d}-validated")
                for s in ("el2n", "margin") for d in ("tdds", "forgetting", "aum", "el2n_early")]
    dynamics += [(f"unseen_single-{s}-validated", "random") for s in ("el2n", "margin")]
    print("C3 UNSEEN against training-dynamics scores and random (points of test accuracy)\n")
    print(comparison_table(metrics, dynamics) + "\n")
    if args.c6:
        print("C6 the paper's Fig. 4 scorers, UNSEEN `validated` against fitting `validated`,"
              " registered reading\n")
        rows = [{"run": run, "scorer": scorer, "verdict": scorer_verdict(table, scorer)}
                for run, table in metrics.items() if table is not None
                for scorer in ("least_confidence", "entropy")]
        print(pd.DataFrame(rows).to_markdown(index=False) + "\n")
    if args.c8 is not None:
        first = next(iter(metrics.values()))
        fifth = read(args.c8, "metrics")
        mine = fifth[(fifth["method"] == "unseen_single") & (fifth["scorer"] == "el2n")
                     & (fifth["strategy"] == "validated")].assign(strategy="validated+uniform")
        both = pd.concat([first, mine], ignore_index=True)
        print("C8 `uniform` as a third `validated` candidate, against the registered recipe"
              " (points of test accuracy)\n")
        print(comparison_table({"converged, 5th run": both}, [(EXTENDED, RECIPE)]) + "\n")
        print(f"C8 registered decision: {c8_decision(both)}\n")
        summary = summary_table(both)
        for recipe in (RECIPE, EXTENDED):
            print(f"The success criterion for {recipe}, against every baseline of the first run"
                  " (random and every fitting coreset; test accuracy, %)\n")
            print(recipe_against_baselines(summary, coreset(recipe)) + "\n")
    if args.extra is not None:
        named = [item.split("=", 1) if "=" in item else ("converged, 2nd run", item) for item in args.extra]
        extra = {name: read(Path(folder), "metrics") for name, folder in named}
        print("C4 multi-step against single-step, EL2N `validated` (points of test accuracy)\n")
        print(comparison_table(extra, [("unseen-el2n-validated", "unseen_single-el2n-validated")]) + "\n")
        print("C5 hard-class priority against class-balanced (points of worst-class accuracy)\n")
        print(comparison_table(
            extra, [("unseen_single-el2n-hard_class_priority", "unseen_single-el2n-class_balanced")],
            "worst_class_accuracy") + "\n")
        print("C5 the same pair in points of test accuracy\n")
        print(comparison_table(
            extra, [("unseen_single-el2n-hard_class_priority", "unseen_single-el2n-class_balanced")]) + "\n")


if __name__ == "__main__":
    main()
