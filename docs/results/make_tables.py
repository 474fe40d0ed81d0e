"""Print the Markdown tables of docs/results.md from a report's tables.

    python docs/results/make_tables.py docs/results/fashion_mnist [--recipe unseen_single-el2n-auto]
        [--collect-choices RUN_DIR]

reads ``summary.parquet`` and ``diagnostics.parquet`` there (copies of a run's
``results/report/``) and, if present, ``ablation.parquet`` (``unseen
budget-ablation``), and prints per retrain budget: test accuracy, worst-class
accuracy (all in %, mean ± std over seeds), the recipe against the best
baseline at every rate, the scoring cost, the score diagnostics and the
budget ablation. With ``--collect-choices`` it first copies the `validated`
strategy's choices of a run (``RUN_DIR/results/seed*/strategy_choice/``) into
``strategy_choices.csv`` there (the report's ``strategy_choices`` table:
:func:`unseen.tables.strategy_choices_table`), and prints them per rate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from unseen.tables import strategy_choices_overview, strategy_choices_table

METHOD_NAMES = {"fitting": "fitting", "unseen": "UNSEEN multi-step",
                "unseen_single": "UNSEEN single-step"}
BASELINE_METHODS = ("random", "fitting")


def label(row) -> str:
    if row.method in ("full", "random"):
        return row.method
    return f"{METHOD_NAMES[row.method]} {row.scorer} ({row.strategy})"


def cell(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}" if pd.isna(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def rate_name(rate: float) -> str:
    return "full data" if rate == 0 else f"{100 * rate:.0f} %"


def pivot(summary: pd.DataFrame, column: str) -> str:
    summary = summary.assign(
        selection=summary.apply(label, axis=1),
        value=[cell(m, s) for m, s in zip(summary[f"{column}_mean"], summary[f"{column}_std"])],
        rate=[rate_name(r) for r in summary["pruning_rate"]],
    )
    table = summary.pivot(index="selection", columns="rate", values="value")
    order = list(dict.fromkeys(summary["selection"]))
    columns = ["full data"] + [c for c in table.columns if c != "full data"]
    return table.loc[order, [c for c in columns if c in table.columns]].fillna("").to_markdown()


def recipe_against_baselines(summary: pd.DataFrame, recipe: tuple[str, str, str]) -> str:
    """Per rate: the recipe, the best baseline (random or any fitting variant), the gap in points."""
    rows = []
    for rate, part in summary[summary["pruning_rate"] > 0].groupby("pruning_rate"):
        mine = part[(part["method"] == recipe[0]) & (part["scorer"] == recipe[1])
                    & (part["strategy"] == recipe[2])]
        baselines = part[part["method"].isin(BASELINE_METHODS)]
        if mine.empty or baselines.empty:
            continue
        best = baselines.loc[baselines["test_accuracy_mean"].idxmax()]
        me = mine.iloc[0]
        rows.append({
            "pruning rate": rate_name(rate),
            "recipe": cell(me["test_accuracy_mean"], me["test_accuracy_std"]),
            "best baseline": f"{label(best)}: {cell(best['test_accuracy_mean'], best['test_accuracy_std'])}",
            "recipe − best (points)": f"{100 * (me['test_accuracy_mean'] - best['test_accuracy_mean']):+.2f}",
        })
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def ablation_table(ablation: pd.DataFrame, recipe: tuple[str, str, str]) -> str:
    """Recipe accuracy per scoring budget and rate, with its scoring compute, per retrain budget."""
    mine = ablation[(ablation["method"] == recipe[0]) & (ablation["scorer"] == recipe[1])
                    & (ablation["strategy"] == recipe[2])]
    mine = mine.assign(
        value=[cell(m, s) for m, s in zip(mine["test_accuracy_mean"], mine["test_accuracy_std"])],
        rate=[rate_name(r) for r in mine["pruning_rate"]],
        budget=[f"{b} (scoring {c:.2f}x)" for b, c in
                zip(mine["scoring_budget"], mine["scoring_compute_mean"])],
    )
    out = []
    for retrain, part in mine.groupby("retrain_budget", sort=False):
        table = part.pivot(index="budget", columns="rate", values="value")
        out.append(f"retrain budget `{retrain}`\n\n{table.to_markdown()}")
    return "\n\n".join(out)


def collect_choices(run_dir: Path, out_csv: Path) -> None:
    """The run's `validated` choices (unseen.tables.strategy_choices_table) as CSV."""
    paths = sorted(run_dir.glob("results/seed*/strategy_choice/*/rate*.json"))
    strategy_choices_table(paths).to_csv(out_csv, index=False)


def choices_table(choices: pd.DataFrame) -> str:
    """Per score table and rate: what `validated` chose in how many seeds, and the held-out accuracies."""
    return strategy_choices_overview(choices).to_markdown(index=False, disable_numparse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--recipe", default="unseen_single-el2n-auto",
                        help="<method>-<scorer>-<strategy> to compare with the baselines")
    parser.add_argument("--collect-choices", metavar="RUN_DIR", default=None,
                        help="copy the run's strategy choices into FOLDER/strategy_choices.csv first")
    args = parser.parse_args()
    recipe = tuple(args.recipe.split("-"))
    folder = Path(args.folder)
    if args.collect_choices:
        collect_choices(Path(args.collect_choices), folder / "strategy_choices.csv")
    summary = pd.read_parquet(folder / "summary.parquet")
    summary = summary.sort_values(["pruning_rate"], kind="stable")
    seeds = sorted(int(n) for n in summary["n_seeds"].unique())
    full = summary[summary["method"] == "full"]
    for budget in [b for b in ("full_steps", "epochs") if b in set(summary["retrain_budget"])]:
        part = pd.concat([full, summary[(summary["retrain_budget"] == budget)
                                        & (summary["method"] != "full")]])
        print(f"### Retrain budget `{budget}`\n")
        print(f"Test accuracy (%), mean ± std over seeds (seeds per cell: {seeds})\n")
        print(pivot(part, "test_accuracy") + "\n")
        print(f"The recipe {args.recipe} against the best baseline\n")
        print(recipe_against_baselines(part, recipe) + "\n")
        print("Worst-class test accuracy (%)\n")
        print(pivot(part, "worst_class_accuracy") + "\n")
    cost = summary[summary["scoring_sample_epochs"] > 0].assign(
        selection=lambda d: d.apply(label, axis=1))
    cost = cost.groupby("selection", sort=False)[
        ["scoring_steps", "scoring_sample_epochs", "scoring_wall_seconds"]].mean()
    print("Scoring cost per coreset (mean over rates and seeds)\n")
    print(cost.round(1).to_markdown() + "\n")
    diagnostics = pd.read_parquet(folder / "diagnostics.parquet")
    print("Score diagnostics\n")
    print(diagnostics[["scorer", "kind", "n_seeds", "std", "iqr", "concentration",
                       "spearman_rho_mean", "spearman_rho_min", "n_seed_pairs"]]
          .round(3).to_markdown(index=False) + "\n")
    if (folder / "strategy_choices.csv").exists():
        print("What `validated` chose (seeds 0 / 1 / 2: held-out accuracy, %)\n")
        print(choices_table(pd.read_csv(folder / "strategy_choices.csv")) + "\n")
    if (folder / "ablation.parquet").exists():
        print("Budget ablation: the recipe's test accuracy (%) by scoring budget\n")
        print(ablation_table(pd.read_parquet(folder / "ablation.parquet"), recipe))


if __name__ == "__main__":
    main()
