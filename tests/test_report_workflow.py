"""The report rule and the scoring-cost columns in real Snakemake runs.

* the default run (one seed, ``default_run`` from conftest): every report file,
  table columns, one summary row per selection, valid PNGs (rank stability is
  a placeholder with one seed), the overview's numbers against
  ``summary.parquet`` and the regime table, the `validated` choices table
  against the choice files, scoring cost with three UNSEEN stages;
* a small two-seed run of the default digits config with every method,
  ``unseen_single`` and ``extra_selections``: seed-to-seed statistics in the
  report tables, a real rank-stability plot, scoring cost of every method and
  ``snakemake --report``.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from conftest import DEFAULT_CONFIG, deep_update, make_workdir, planned_jobs, run_snakemake
from unseen import tables
from unseen.diagnostics import DIAGNOSTICS_COLUMNS, rank_stability
from unseen.selection import coreset_size

pytestmark = pytest.mark.workflow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("accuracy_vs_rate", "cost_quality", "score_histograms", "rank_stability",
           "per_class_accuracy")
TABLES = ("summary", "diagnostics", "scoring_models", "strategy_choices")
NOTES = ("overview", "regime", "strategy_choices_note")
SELECTION = ["method", "scorer", "strategy", "pruning_rate"]

# The two-seed run: default digits config, reduced matrix.
K2 = 2
RATE = 0.5
SCORING_EPOCHS = 10
TWO_SEEDS = {
    "seeds": [0, 1],
    "folds": {"k": K2},
    "scorers": ["el2n"],
    "methods": ["full", "random", "fitting", "unseen_single", "unseen"],
    "pruning_rates": [RATE],
    "stages": [0.5, 1.0],
    "extra_selections": ["unseen_single-el2n-hard_class_priority"],
    "record_epochs": [5],
    "scoring_model": {"train": {"epochs": SCORING_EPOCHS}},
    "final_model": {"train": {"epochs": 10}},
    # Epoch budgets for every model, so the scoring cost below is a count of
    # passes over each model's own training set (the budget rules have their
    # own tests in test_budget.py and test_workflow.py).
    "budget": {"scoring": "epochs", "retrain": ["epochs"]},
    "selection": {"strategy": ["top"]},
}
TWO_SEED_SELECTIONS = [
    "random", "fitting-el2n-top", "unseen_single-el2n-top", "unseen-el2n-top",
    "unseen_single-el2n-hard_class_priority",
]


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory) -> Path:
    workdir = make_workdir(tmp_path_factory.mktemp("two_seeds"), TWO_SEEDS)
    run_snakemake(workdir, "--cores", "2")
    return workdir


# --- helpers ---------------------------------------------------------------------------


def png_pixels(path: Path) -> np.ndarray:
    """RGB pixels (n, 3) of a PNG after checking its signature."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, image.shape
    return image[..., :3].reshape(-1, 3)


def is_grey(pixels: np.ndarray) -> bool:
    """Only shades of grey: the placeholder is black text on white, every plot has colour."""
    return bool(np.all(np.isclose(pixels[:, 0], pixels[:, 1]) & np.isclose(pixels[:, 1], pixels[:, 2])))


def read_report(run: Path, name: str) -> pd.DataFrame:
    table = pd.read_parquet(run / f"results/report/{name}.parquet")
    csv = pd.read_csv(run / f"results/report/{name}.csv", keep_default_na=False, na_values=[""])
    assert list(csv.columns) == list(table.columns), name
    pd.testing.assert_frame_equal(csv, table, check_dtype=False, rtol=1e-9, obj=f"{name}.csv")
    return table


def sample_epochs(n: int, batch_size: int, epochs: int) -> int:
    """Samples processed training on n samples for ``epochs`` epochs.

    The trainer drops the ragged last batch of every epoch (unseen.train:
    steps_per_epoch = n // batch), so an epoch sees n // b * b samples.
    """
    batch = min(batch_size, n)
    return max(1, n // batch) * batch * epochs


def scoring_models(run: Path, seed: int, selection: str, rate: str, n_stages: int) -> list[Path]:
    """predictions.npz of every scoring model behind one coreset (independently of the rules)."""
    res = run / f"results/seed{seed}"
    method = selection.split("-")[0]
    if method == "random":
        return []
    if method == "fitting":
        return [res / "fitting/predictions.npz"]
    k = len(list((res / "folds").glob("fold*/predictions.npz")))
    folds = [res / f"folds/fold{i}/predictions.npz" for i in range(k)]
    stages = n_stages if method == "unseen" else 1
    base = res / f"coresets/{selection}/rate{rate}"
    return folds + [base / f"stage{t}/predictions.npz" for t in range(1, stages)]


def model_sample_epochs(n: int, n_total: int, train: dict, budget) -> int:
    """Samples processed by one fold or stage model on n of the N = n_total samples.

    Under a fractional scoring budget b the model takes round(b x the fitting
    model's steps) steps of min(batch, n) samples; under "epochs" it makes the
    configured passes over its n samples.
    """
    if budget == "epochs":
        return sample_epochs(n, train["batch_size"], train["epochs"])
    fitting_steps = max(1, n_total // min(train["batch_size"], n_total)) * train["epochs"]
    steps = max(1, int(float(budget) * fitting_steps + 0.5))
    return steps * min(train["batch_size"], n)


def expected_scoring_cost(run: Path, config: dict, seed: int, selection: str, rate: str) -> int:
    """Sample-epochs of the scoring models from the config and the fold / stage tables."""
    res = run / f"results/seed{seed}"
    train = config["scoring_model"]["train"]
    budget = config.get("budget", {}).get("scoring", 1.0)
    folds = pd.read_parquet(res / "split/folds.parquet")
    method = selection.split("-")[0]
    if method == "random":
        return 0
    # validated also paid for its choice: the candidates' training on the held-out split's pool
    choice = 0
    if selection.endswith("-validated"):
        kind = "fitting" if method == "fitting" else "oof"
        scorer = selection.split("-")[1]
        made = json.loads((res / f"strategy_choice/{kind}-{scorer}/rate{rate}.json").read_text())
        n_pool, n_candidates = made["pool_size"], len(made["candidates"])
        final = config["final_model"]["train"]
        assert made["train_samples_seen"] == n_candidates * sample_epochs(
            n_pool, final["batch_size"], final["epochs"])
        choice = made["train_samples_seen"]
    if method == "fitting":
        return sample_epochs(len(folds), train["batch_size"], train["epochs"]) + choice
    # paper mode: fold model k trains on fold k
    cost = sum(
        model_sample_epochs(int((folds["fold"] == k).sum()), len(folds), train, budget)
        for k in range(config["folds"]["k"])
    )
    if method == "unseen":
        for t in range(1, len(config["stages"])):
            stage = pd.read_parquet(res / f"coresets/{selection}/rate{rate}/stage{t}.parquet")
            cost += model_sample_epochs(len(stage), len(folds), train, budget)
    return cost + choice


# --- the default run (one seed) ------------------------------------------------------------


def test_default_run_writes_every_report_file(default_run):
    out = default_run / "results/report"
    expected = {f"{t}.{ext}" for t in TABLES for ext in ("parquet", "csv")}
    expected |= {f"{f}.png" for f in FIGURES} | {f"{n}.html" for n in NOTES}
    assert {p.name for p in out.iterdir()} == expected
    assert (default_run / "logs/report.log").exists()


def test_report_tables_have_the_documented_columns_and_one_row_per_selection(default_run):
    summary = read_report(default_run, "summary")
    assert list(summary.columns) == list(tables.SUMMARY_COLUMNS)
    metrics = pd.read_parquet(default_run / "results/summary.parquet")
    selections = set(metrics[SELECTION].itertuples(index=False, name=None))
    rows = list(summary[SELECTION].itertuples(index=False, name=None))
    assert len(rows) == len(set(rows)) == len(selections)
    assert set(rows) == selections
    # one seed: the mean is that seed's value and the std is undefined
    merged = summary.merge(metrics, on=SELECTION, validate="one_to_one")
    assert np.allclose(merged["test_accuracy_mean"], merged["test_accuracy"])
    assert (merged["coreset_size_x"] == merged["coreset_size_y"]).all()
    assert (summary["n_seeds"] == 1).all() and summary["test_accuracy_std"].isna().all()
    assert np.array_equal(merged["scoring_sample_epochs_x"], merged["scoring_sample_epochs_y"])

    diagnostics = read_report(default_run, "diagnostics")
    assert list(diagnostics.columns) == list(DIAGNOSTICS_COLUMNS)
    scorers = DEFAULT_CONFIG["scorers"]
    assert sorted(zip(diagnostics["scorer"], diagnostics["kind"])) == sorted(
        (s, kind) for s in scorers for kind in ("fitting", "unseen")
    )
    assert (diagnostics["n_seeds"] == 1).all() and (diagnostics["n_seed_pairs"] == 0).all()
    assert diagnostics["spearman_rho_mean"].isna().all()
    for row in diagnostics.itertuples():
        folder = "oof" if row.kind == "unseen" else "fitting"
        scores = pd.read_parquet(default_run / f"results/seed0/scores/{folder}/{row.scorer}.parquet")
        assert row.n == len(scores)
        assert row.std == pytest.approx(scores["score"].std(ddof=0), rel=1e-9)
        assert row.median == pytest.approx(scores["score"].median(), rel=1e-9)


def test_report_figures_are_real_pngs(default_run):
    out = default_run / "results/report"
    for name in FIGURES:
        path = out / f"{name}.png"
        pixels = png_pixels(path)
        assert len(np.unique(pixels, axis=0)) > 1, f"{name} is one flat colour"
        if name == "rank_stability":
            # one seed: a placeholder that says why (text only, no data)
            assert is_grey(pixels)
        else:
            assert path.stat().st_size > 5_000, name
            assert not is_grey(pixels), f"{name} looks like a placeholder"


def test_overview_numbers_match_the_run(default_run):
    """The summary block against results/summary.parquet and the regime table, recomputed here."""
    text = (default_run / "results/report/overview.html").read_text()
    metrics = pd.read_parquet(default_run / "results/summary.parquet")
    regime = pd.read_parquet(default_run / "results/scoring_models.parquet")
    n = int(metrics["n_train_total"].iloc[0])
    assert f"Data: {DEFAULT_CONFIG['dataset']['name']}, N = {n:,} training samples, 1 seed (0)" in text
    assert f"K = {DEFAULT_CONFIG['folds']['k']} fold models per seed" in text
    assert "Scoring budget: 1 " in text and "retrain budget: full_steps." in text
    fitting = regime.loc[regime["kind"] == "fitting", "train_accuracy"].mean()
    folds = regime.loc[regime["kind"] == "fold", "scored_accuracy"].mean()
    assert f"Fitting model: {fitting:.2%} training accuracy" in text
    assert f"Fold models: {folds:.2%} out-of-fold accuracy" in text
    # the default recipe: single-step UNSEEN, the first scorer, validated
    scorer = DEFAULT_CONFIG["scorers"][0]
    assert f"Recipe: <b>UNSEEN single-step {scorer} (validated)</b>" in text
    rows = re.findall(r"<tr>\s*((?:<td>.*?</td>\s*)+)</tr>", text)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert [c[1] for c in cells] == [f"{100 * r:g} %" for r in DEFAULT_CONFIG["pruning_rates"]]
    for (budget, rate, recipe, best, best_acc, margin, seeds), pruning_rate in zip(
            cells, DEFAULT_CONFIG["pruning_rates"]):
        at_rate = metrics[np.isclose(metrics["pruning_rate"], pruning_rate)]
        mine = at_rate[(at_rate["method"] == "unseen_single") & (at_rate["scorer"] == scorer)
                       & (at_rate["strategy"] == "validated")]["test_accuracy"].item()
        baselines = at_rate[at_rate["method"].isin(["random", "fitting"])]
        top = baselines["test_accuracy"].max()
        assert recipe == f"{100 * mine:.2f}" and best_acc == f"{100 * top:.2f}"
        winners = baselines[baselines["test_accuracy"] == top]
        assert best in {"random" if w.method == "random" else f"fitting {w.scorer} ({w.strategy})"
                        .replace(" (top)", "") for w in winners.itertuples()}
        assert margin == f"{100 * (mine - top):+.2f}" and seeds == "1" and budget == "full_steps"
    assert "One seed: there is no spread over seeds" in text


def test_strategy_choices_table_holds_every_choice_file(default_run):
    choices = read_report(default_run, "strategy_choices")
    files = sorted((default_run / "results/seed0/strategy_choice").glob("*/rate*.json"))
    # the default config: validated for fitting and UNSEEN, one scorer, every rate
    assert len(files) == len(choices) == 2 * len(DEFAULT_CONFIG["pruning_rates"])
    for path in files:
        made = json.loads(path.read_text())
        row = choices[(choices["scores"] == path.parent.name)
                      & np.isclose(choices["pruning_rate"], made["pruning_rate"])].iloc[0]
        assert row["strategy"] == made["strategy"] and row["seed"] == 0
        for candidate, accuracy in made["validation_accuracy"].items():
            assert row[f"held_out_accuracy_{candidate}"] == pytest.approx(accuracy)
        assert (row["held_out_size"], row["pool_size"]) == (made["held_out_size"], made["pool_size"])
    note = (default_run / "results/report/strategy_choices_note.html").read_text()
    assert note.count("<tr") == 1 + len(choices)  # header (styled) + one row per score table and rate


def test_scoring_cost_with_three_unseen_stages(default_run):
    metrics = pd.read_parquet(default_run / "results/summary.parquet")
    assert len(DEFAULT_CONFIG["stages"]) == 3
    for row in metrics.itertuples():
        if row.method == "full":
            assert row.scoring_sample_epochs == 0 and row.scoring_wall_seconds == 0
            continue
        selection = "random" if row.method == "random" else f"{row.method}-{row.scorer}-{row.strategy}"
        rate = f"{row.pruning_rate:g}"
        assert row.scoring_sample_epochs == expected_scoring_cost(
            default_run, DEFAULT_CONFIG, 0, selection, rate
        ), selection


# --- two seeds, every method --------------------------------------------------------------


def test_two_seed_run_has_every_selection_of_the_matrix(two_seed_run):
    for seed in (0, 1):
        base = two_seed_run / f"results/seed{seed}/coresets"
        assert sorted(p.name for p in base.iterdir()) == sorted(TWO_SEED_SELECTIONS)
        n = len(pd.read_parquet(two_seed_run / f"results/seed{seed}/split/folds.parquet"))
        for selection in TWO_SEED_SELECTIONS:
            coreset = pd.read_parquet(base / f"{selection}/rate{RATE:g}/coreset.parquet")
            assert len(coreset) == coreset_size(n, RATE) and coreset["sample_id"].is_unique
            if selection.startswith("unseen_single-"):
                # single step: stage1 is the coreset; no stage model
                folder = base / f"{selection}/rate{RATE:g}"
                assert sorted(p.name for p in folder.iterdir()) == [
                    "coreset.parquet", "coreset.txt", "stage1.parquet"]
                stage1 = pd.read_parquet(folder / "stage1.parquet")
                assert set(stage1["sample_id"]) == set(coreset["sample_id"])
        unseen = base / f"unseen-el2n-top/rate{RATE:g}"
        assert (unseen / "stage1/predictions.npz").exists() and (unseen / "stage2.parquet").exists()
    metrics = pd.read_parquet(two_seed_run / "results/summary.parquet")
    assert len(metrics) == 2 * (1 + len(TWO_SEED_SELECTIONS))
    strategies = metrics.loc[metrics.method == "unseen_single", "strategy"]
    assert sorted(set(strategies)) == ["hard_class_priority", "top"]


def test_summary_statistics_over_two_seeds(two_seed_run):
    metrics = pd.read_parquet(two_seed_run / "results/summary.parquet")
    summary = read_report(two_seed_run, "summary")
    assert len(summary) == 1 + len(TWO_SEED_SELECTIONS)
    assert (summary["n_seeds"] == 2).all()
    for row in summary.itertuples():
        seeds = metrics[(metrics.method == row.method) & (metrics.scorer == row.scorer)
                        & (metrics.strategy == row.strategy)
                        & np.isclose(metrics.pruning_rate, row.pruning_rate)]
        assert sorted(seeds["seed"]) == [0, 1]
        acc = seeds["test_accuracy"].to_numpy()
        assert row.test_accuracy_mean == pytest.approx(acc.mean(), abs=1e-12)
        assert row.test_accuracy_std == pytest.approx(np.std(acc, ddof=1), abs=1e-12)
        worst = seeds["worst_class_accuracy"].to_numpy()
        assert row.worst_class_accuracy_std == pytest.approx(np.std(worst, ddof=1), abs=1e-12)
        assert row.scoring_sample_epochs == pytest.approx(seeds["scoring_sample_epochs"].mean())
    # the seeds do differ somewhere, so the std is not trivially 0
    assert (summary["test_accuracy_std"] > 0).any()


def test_rank_stability_recomputed_from_the_two_seeds(two_seed_run):
    diagnostics = read_report(two_seed_run, "diagnostics")
    assert sorted(diagnostics["kind"]) == ["fitting", "unseen"]
    for row in diagnostics.itertuples():
        folder = "oof" if row.kind == "unseen" else "fitting"
        tables = [pd.read_parquet(two_seed_run / f"results/seed{s}/scores/{folder}/el2n.parquet")
                  for s in (0, 1)]
        expected = rank_stability(tables[0], tables[1])
        assert (row.n_seeds, row.n_seed_pairs) == (2, 1)
        assert row.spearman_rho_mean == pytest.approx(expected, abs=1e-12)
        assert row.spearman_rho_min == pytest.approx(expected, abs=1e-12)
        # a finite correlation, below 1: the two seeds' scores do differ
        assert -1.0 < row.spearman_rho_mean < 1.0


def test_rank_stability_is_a_real_plot_with_two_seeds(two_seed_run, default_run):
    real = two_seed_run / "results/report/rank_stability.png"
    placeholder = default_run / "results/report/rank_stability.png"
    assert real.stat().st_size > placeholder.stat().st_size
    pixels = png_pixels(real)
    assert not is_grey(pixels)
    assert len(np.unique(pixels, axis=0)) > 100


@pytest.mark.parametrize("seed", [0, 1])
def test_scoring_cost_of_every_method(two_seed_run, seed):
    config = deep_update(DEFAULT_CONFIG, TWO_SEEDS)
    train = config["scoring_model"]["train"]
    n = len(pd.read_parquet(two_seed_run / f"results/seed{seed}/split/folds.parquet"))
    batch = train["batch_size"]
    for selection in ["full", *TWO_SEED_SELECTIONS]:
        folder = "full" if selection == "full" else f"epochs/{selection}/rate{RATE:g}"
        metrics = json.loads(
            (two_seed_run / f"results/seed{seed}/retrain/{folder}/metrics.json").read_text()
        )
        cost, seconds = metrics["scoring_sample_epochs"], metrics["scoring_wall_seconds"]
        if selection in ("full", "random"):
            assert cost == 0 and seconds == 0, selection
            continue
        expected = expected_scoring_cost(two_seed_run, config, seed, selection, f"{RATE:g}")
        assert cost == expected, selection
        # the same models' own record of their training
        models = scoring_models(two_seed_run, seed, selection, f"{RATE:g}", len(config["stages"]))
        own_samples, own_seconds = 0, 0.0
        for path in models:
            with np.load(path) as arrays:
                own_samples += int(arrays["train_samples_seen"])
                own_seconds += float(arrays["train_wall_seconds"])
        assert cost == own_samples, selection
        assert seconds == pytest.approx(own_seconds)
        assert seconds > 0
        # N * E up to the ragged last batch of each model
        method = selection.split("-")[0]
        full_pass = n * SCORING_EPOCHS
        if method == "fitting":
            assert full_pass - batch * SCORING_EPOCHS < cost <= full_pass
        elif method == "unseen_single":
            # the K fold models together see every sample once per epoch
            assert len(models) == K2
            assert full_pass - K2 * batch * SCORING_EPOCHS < cost <= full_pass
        else:
            stage1 = pd.read_parquet(
                two_seed_run / f"results/seed{seed}/coresets/{selection}/rate{RATE:g}/stage1.parquet")
            assert len(models) == K2 + 1
            extra = len(stage1) * SCORING_EPOCHS
            assert full_pass + extra - (K2 + 1) * batch * SCORING_EPOCHS < cost <= full_pass + extra
    # single-step UNSEEN costs the same whatever the strategy: the same fold models
    costs = {
        s: json.loads((two_seed_run / f"results/seed{seed}/retrain/epochs/{s}/rate{RATE:g}/metrics.json")
                      .read_text())["scoring_sample_epochs"]
        for s in TWO_SEED_SELECTIONS if s.startswith("unseen_single")
    }
    assert len(set(costs.values())) == 1


def test_snakemake_report_bundles_tables_and_figures(two_seed_run, tmp_path):
    bundle = tmp_path / "report.zip"
    run_snakemake(two_seed_run, "--report", str(bundle))
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        assert "report/report.html" in names
        files = {Path(n).name: n for n in names if n.startswith("report/data/raw/")}
        expected = ({f"{f}.png" for f in FIGURES} | {f"{t}.csv" for t in TABLES}
                    | {f"{n}.html" for n in NOTES})
        assert expected <= set(files), sorted(files)
        for name in expected:
            assert archive.read(files[name]) == (two_seed_run / f"results/report/{name}").read_bytes()
        html = archive.read("report/report.html").decode()
        assert "digits" in html
        # the overview's category sorts first (Snakemake orders categories by name)
        categories = sorted(set(re.findall(r'"(\d\. [A-Z][a-z -]+)"', html)))
        assert categories[0] == "0. Overview", categories
    # no validated selection in this run: an empty choices table and a note that says so
    assert read_report(two_seed_run, "strategy_choices").empty
    assert "No <code>validated</code> selection" in (
        two_seed_run / "results/report/strategy_choices_note.html").read_text()


@pytest.mark.parametrize("methods", [["full", "random", "unseen"], ["full", "random", "fitting"]])
def test_the_report_rule_plans_without_fitting_or_without_unseen(tmp_path, methods):
    # the report draws placeholders for what a run lacks; planning must not fail
    workdir = make_workdir(tmp_path, {"methods": methods, "scorers": ["el2n"]})
    assert planned_jobs(workdir).get("report") == 1
