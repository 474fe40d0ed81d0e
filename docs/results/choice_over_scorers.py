"""Would choosing the scorer too, on the held-out split, beat the default recipe? (issue 18, item 4)

    python docs/results/choice_over_scorers.py RUN_DIR [--out TABLE.parquet]

RUN_DIR is a workflow run that made `validated` coresets for several score
tables with the same held-out split and candidates (e.g. the converged runs:
config/matrix_converged.yaml with config/matrix_converged_scorers.yaml). Every
``results/seed<s>/strategy_choice/<kind>-<scorer>/rate<r>.json`` holds each
candidate strategy's accuracy on the held-out samples. Choosing the scorer as
well is then the argmax over score tables and candidates; its coreset is that
scorer's `validated` coreset (whose own choice is the same argmax within the
table), so its test accuracy is read from ``results/summary.parquet`` with no
training. No test data enters the choice.

Two pools are compared with the default (single-step UNSEEN EL2N `validated`)
and with random: ``unseen`` (the out-of-fold score tables only) and ``all``
(the fitting model's tables too). Ties in held-out accuracy go to the table
listed first (sorted by kind, then scorer). Prints one row per seed and rate,
then the means over seeds in points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from claims import seed_value

DEFAULT = "unseen_single-el2n-validated"
METHOD = {"oof": "unseen_single", "fitting": "fitting"}


def held_out_accuracies(results: Path) -> pd.DataFrame:
    """seed, rate, kind, scorer, candidate, held_out_accuracy: one row per candidate of every choice."""
    rows = []
    for path in sorted(results.glob("seed*/strategy_choice/*/rate*.json")):
        choice = json.loads(path.read_text())
        kind, scorer = path.parent.name.split("-", 1)
        for candidate, accuracy in choice["validation_accuracy"].items():
            rows.append({"seed": choice["seed"], "rate": choice["pruning_rate"], "kind": kind,
                         "scorer": scorer, "candidate": candidate, "held_out_accuracy": accuracy})
    if not rows:
        raise SystemExit(f"{results}: no strategy_choice JSON files")
    return pd.DataFrame(rows)


def choose_over_scorers(results: Path) -> pd.DataFrame:
    """One row per seed, rate and pool: the chosen table and candidate, its test accuracy, the default's, random's."""
    summary = pd.read_parquet(results / "summary.parquet")
    held = held_out_accuracies(results).sort_values(["kind", "scorer"], kind="stable")
    rows = []
    for (seed, rate), group in held.groupby(["seed", "rate"]):
        for pool, tables in (("unseen", group[group.kind == "oof"]), ("all", group)):
            best = tables.loc[tables.held_out_accuracy.idxmax()]
            method = METHOD[best.kind]
            rows.append({
                "seed": seed, "pruning_rate": rate, "pool": pool,
                "chosen": f"{method}-{best.scorer}-{best.candidate}",
                "held_out_accuracy": best.held_out_accuracy,
                "test_accuracy": seed_value(summary, f"{method}-{best.scorer}-validated", rate, seed),
                "default_test_accuracy": seed_value(summary, DEFAULT, rate, seed),
                "random_test_accuracy": seed_value(summary, "random", rate, seed),
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, help="also write the per-seed table as Parquet")
    args = parser.parse_args()
    table = choose_over_scorers(args.run / "results")
    if args.out:
        table.to_parquet(args.out, index=False)
    print(table.to_markdown(index=False, floatfmt=".4f"))
    accuracy = ["test_accuracy", "default_test_accuracy", "random_test_accuracy"]
    means = 100 * table.groupby(["pool", "pruning_rate"])[accuracy].mean()
    means["chosen_minus_default"] = means.test_accuracy - means.default_test_accuracy
    print("\nMeans over seeds (points):\n")
    print(means.to_markdown(floatfmt=".2f"))


if __name__ == "__main__":
    main()
