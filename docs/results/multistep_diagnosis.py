"""Why multi-step UNSEEN does or does not change the coreset (issue 18, claim C4).

    python docs/results/multistep_diagnosis.py [NAME=]RUN_DIR ... [--single unseen_single-el2n-validated]
        [--multi unseen-el2n-validated] [--out TABLE.parquet]

Each RUN_DIR is a workflow run folder that made both a single-step and a multi-step
UNSEEN coreset from the same out-of-fold scores (e.g. config/matrix_converged_extra.yaml
with config/matrix_converged_extra_rates.yaml). For every seed and rate it reads

- ``results/seed<s>/scores/oof/<scorer>.parquet``: the out-of-fold scores;
- ``results/seed<s>/coresets/<multi>/rate<r>/stage<t>.parquet`` and
  ``.../stage<t>/scores.parquet``: each stage's coreset and the stage model's
  scores of the samples not yet selected;
- ``results/seed<s>/coresets/<single>/rate<r>/coreset.parquet``;
- ``results/scoring_models.parquet``: each stage model's accuracy on its own
  training samples and on the samples it scores;
- ``results/summary.parquet``: the retrains' test accuracy;

and builds one row per seed, rate and later stage:

- ``added``: samples the stage adds; ``stage_train_n``: the stage model's training set;
- ``stage_fit`` / ``stage_scored_acc``: the stage model's accuracy on its training
  samples and on the candidates it scores;
- ``rho_stage_oof``: Spearman's rho between the stage model's scores and the
  out-of-fold scores over the candidates (1 = the stage re-ranks nothing);
- ``stage_crowding`` / ``oof_crowding``: share of the candidates' scores in the most
  crowded of 50 bins (:func:`unseen.diagnostics.score_spread`), stage and out-of-fold;
- ``added_in_single``: share of the added samples that single-step UNSEEN also keeps;
- ``coreset_overlap``: share of the multi-step coreset that single-step also keeps;
- ``d_test``: multi-step minus single-step test accuracy (points, same seed).

It prints those rows (``--out`` also writes them as Parquet; with one run only),
then one row per run and rate: the table of docs/results.md (rates and shares
averaged over seeds and stages). Scores follow the package convention: higher =
more important to keep.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from claims import seed_value

from unseen.diagnostics import score_spread, spearman_rho


def diagnose(run: Path, single: str, multi: str) -> pd.DataFrame:
    """One row per seed, rate and later stage of ``multi`` (columns: module docstring)."""
    results = run / "results"
    summary = pd.read_parquet(results / "summary.parquet")
    models = pd.read_parquet(results / "scoring_models.parquet").set_index(["seed", "model"])
    scorer = multi.split("-")[1]
    rows = []
    for seed_dir in sorted(results.glob("seed*")):
        seed = int(seed_dir.name[4:])
        oof = pd.read_parquet(seed_dir / "scores" / "oof" / f"{scorer}.parquet").set_index("sample_id")
        for rate_dir in sorted((seed_dir / "coresets" / multi).glob("rate*")):
            rate = float(rate_dir.name[4:])
            single_ids = set(pd.read_parquet(
                seed_dir / "coresets" / single / rate_dir.name / "coreset.parquet").sample_id)
            multi_ids = set(pd.read_parquet(rate_dir / "coreset.parquet").sample_id)
            d_test = 100 * (seed_value(summary, multi, rate, seed)
                            - seed_value(summary, single, rate, seed))
            stage = 1
            while (rate_dir / f"stage{stage + 1}.parquet").exists():
                before = pd.read_parquet(rate_dir / f"stage{stage}.parquet")
                after = pd.read_parquet(rate_dir / f"stage{stage + 1}.parquet")
                stage_scores = pd.read_parquet(rate_dir / f"stage{stage}" / "scores.parquet")
                model = stage_scores.model.iloc[0]
                fit = models.loc[(seed, model)]
                candidates = stage_scores.sample_id.to_numpy()
                added = after[after.stage == stage + 1].sample_id.to_numpy()
                oof_scores = oof.loc[candidates, "score"].to_numpy()
                rows.append({
                    "seed": seed, "pruning_rate": rate, "stage": stage + 1,
                    "stage_train_n": len(before), "added": len(added),
                    "stage_fit": float(fit.train_accuracy),
                    "stage_scored_acc": float(fit.scored_accuracy),
                    "rho_stage_oof": spearman_rho(stage_scores.score.to_numpy(), oof_scores),
                    "stage_crowding": score_spread(stage_scores.score.to_numpy())["concentration"],
                    "oof_crowding": score_spread(oof_scores)["concentration"],
                    "added_in_single": float(np.mean([i in single_ids for i in added])),
                    "coreset_overlap": len(single_ids & multi_ids) / len(multi_ids),
                    "d_test": d_test,
                })
                stage += 1
    if not rows:
        raise SystemExit(f"{run}: no multi-step coreset {multi!r} with a second stage")
    return pd.DataFrame(rows).sort_values(["pruning_rate", "seed", "stage"], ignore_index=True)


def summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per run and rate: means over seeds and stages, formatted for docs/results.md."""
    rows = []
    for name, table in tables.items():
        for rate, part in table.groupby("pruning_rate"):
            rows.append({
                "run": name, "rate": f"{100 * rate:.0f} %",
                "stage models trained on": ", ".join(map(str, sorted(part.stage_train_n.unique()))),
                "their accuracy on the rest": f"{part.stage_scored_acc.mean():.2f}",
                "rho with out-of-fold": f"{part.rho_stage_oof.mean():.2f}",
                "most crowded bin, stage / out-of-fold":
                    f"{part.stage_crowding.mean():.0%} / {part.oof_crowding.mean():.0%}",
                "additions single-step also keeps": f"{part.added_in_single.mean():.0%}",
                "coreset shared with single-step": f"{part.coreset_overlap.mean():.0%}",
                "multi − single (points)": f"{part.d_test.mean():+.2f}",
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="[NAME=]RUN_DIR")
    parser.add_argument("--single", default="unseen_single-el2n-validated")
    parser.add_argument("--multi", default="unseen-el2n-validated")
    parser.add_argument("--out", type=Path, help="also write the per-stage rows as Parquet (one run)")
    args = parser.parse_args()
    named = [run.split("=", 1) if "=" in run else (Path(run).name, run) for run in args.runs]
    tables = {name: diagnose(Path(run), args.single, args.multi) for name, run in named}
    if args.out:
        if len(tables) != 1:
            raise SystemExit("--out writes one run's rows: name one run")
        next(iter(tables.values())).to_parquet(args.out, index=False)
    for name, table in tables.items():
        print(f"{name}\n\n{table.to_markdown(index=False, floatfmt='.3f')}\n")
    print(summary(tables).to_markdown(index=False, disable_numparse=True))


if __name__ == "__main__":
    main()
