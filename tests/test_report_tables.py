"""Tests of unseen.tables (difference to random, cost table, recipe margins, strategy choices),
the report's overview and choices notes, the new figures and the one-way import graph.

Expected numbers are derived by hand in the comments next to them.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from conftest import REPO
from test_report import assert_png, model_row
from unseen import plots, report, tables


def rows_for(method, scorer, strategy, rate, accuracies, **kw):
    """One model row per seed 0, 1, ... with the given test accuracies."""
    return [model_row(method, scorer, strategy, rate, seed, 500, acc, 0.5, [0.5, 0.9], 1.0, **kw)
            for seed, acc in enumerate(accuracies)]


# --------------------------------------------------------------------------- #
# Import graph: tables <- plots <- report, no cycle in the package
# --------------------------------------------------------------------------- #


def package_imports() -> dict[str, set[str]]:
    """unseen module -> the unseen modules it imports anywhere in its source (also in functions)."""
    graph = {}
    for path in sorted((REPO / "unseen").glob("*.py")):
        name = path.stem
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "unseen":
                    if len(parts) > 1:
                        found.add(parts[1])
                    else:  # from unseen import plots, report
                        found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "unseen" and len(parts) > 1:
                        found.add(parts[1])
        graph[name] = found - {name}
    return graph


def test_tables_plots_report_import_one_way():
    graph = package_imports()
    assert "report" not in graph["plots"] and "report" not in graph["tables"]
    assert "plots" not in graph["tables"]
    assert "tables" in graph["plots"] and {"plots", "tables"} <= graph["report"]


def test_the_package_has_no_import_cycle():
    graph = package_imports()
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, module, other]))
            if other in graph and other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_importing_plots_does_not_import_report():
    code = "import sys, unseen.plots; print('unseen.report' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- #
# difference_to_random_table
# --------------------------------------------------------------------------- #


def test_difference_to_random_is_paired_by_seed_rate_and_budget():
    metrics = pd.DataFrame(
        rows_for("full", "none", "none", 0.0, [0.90, 0.92])
        + rows_for("random", "none", "none", 0.5, [0.70, 0.74])
        + rows_for("unseen", "el2n", "top", 0.5, [0.80, 0.86])
        + rows_for("random", "none", "none", 0.5, [0.60, 0.62], retrain_budget="epochs")
        + rows_for("unseen", "el2n", "top", 0.5, [0.61], retrain_budget="epochs")
    )
    table = tables.difference_to_random_table(metrics)
    assert list(table.columns) == list(tables.DIFFERENCE_COLUMNS)
    assert "random" not in set(table["method"])
    got = table.set_index(["retrain_budget", "method"])
    # full_steps: unseen - random per seed = 0.10, 0.12 -> mean 0.11, std 0.02 / sqrt(2)
    unseen = got.loc[("full_steps", "unseen")]
    assert unseen["difference_mean"] == pytest.approx(0.11)
    assert unseen["difference_std"] == pytest.approx(0.02 / math.sqrt(2))
    assert unseen["n_seeds"] == 2
    # full (rate 0) against random at 0.5 of each budget: 0.20, 0.18 and 0.30, 0.30
    full = got.loc[("full_steps", "full")]
    assert full["pruning_rate"] == 0.5 and full["difference_mean"] == pytest.approx(0.19)
    assert got.loc[("epochs", "full"), "difference_mean"] == pytest.approx(0.30)
    # epochs: only seed 0 has both: 0.61 - 0.60, no std
    epochs = got.loc[("epochs", "unseen")]
    assert epochs["difference_mean"] == pytest.approx(0.01) and epochs["n_seeds"] == 1
    assert math.isnan(epochs["difference_std"])


def test_difference_to_random_is_empty_without_random():
    metrics = pd.DataFrame(rows_for("unseen", "el2n", "top", 0.5, [0.8]))
    assert tables.difference_to_random_table(metrics).empty


# --------------------------------------------------------------------------- #
# recommended_recipe / recipe_margin_table
# --------------------------------------------------------------------------- #


def test_recommended_recipe_prefers_validated_then_single_step():
    run = {("unseen", "el2n", "validated"), ("unseen_single", "el2n", "validated"),
           ("unseen_single", "el2n", "top"), ("unseen_single", "margin", "validated")}
    assert tables.recommended_recipe(run, "el2n") == ("unseen_single", "el2n", "validated")
    run.discard(("unseen_single", "el2n", "validated"))
    assert tables.recommended_recipe(run, "el2n") == ("unseen", "el2n", "validated")
    assert tables.recommended_recipe({("unseen", "el2n", "ccs"), ("unseen", "el2n", "top")},
                                     "el2n") == ("unseen", "el2n", "top")
    assert tables.recommended_recipe({("fitting", "el2n", "validated")}, "el2n") is None


@pytest.fixture
def three_seeds() -> pd.DataFrame:
    recipe = ("unseen_single", "el2n", "validated")
    return pd.DataFrame(
        rows_for("full", "none", "none", 0.0, [0.90, 0.90, 0.90])
        # rate 0.3: best baseline fitting top (mean 0.850 against random's 0.800)
        + rows_for("random", "none", "none", 0.3, [0.80, 0.80, 0.80])
        + rows_for("fitting", "el2n", "top", 0.3, [0.85, 0.84, 0.86])
        + rows_for(*recipe, 0.3, [0.86, 0.83, 0.87])
        # rate 0.7: best baseline random (0.800); fitting top collapsed
        + rows_for("random", "none", "none", 0.7, [0.79, 0.80, 0.81])
        + rows_for("fitting", "el2n", "top", 0.7, [0.40, 0.41, 0.42])
        + rows_for(*recipe, 0.7, [0.82, 0.83, 0.84])
        + rows_for("unseen_single", "el2n", "top", 0.7, [0.30, 0.30, 0.30])
    )


def test_recipe_margin_against_the_best_baseline_paired_by_seed(three_seeds):
    margins = tables.recipe_margin_table(three_seeds, ("unseen_single", "el2n", "validated"))
    assert list(margins.columns) == list(tables.MARGIN_COLUMNS)
    low, high = margins.iloc[0], margins.iloc[1]
    assert (low["pruning_rate"], high["pruning_rate"]) == (0.3, 0.7)
    # 0.3: per seed 0.86-0.85, 0.83-0.84, 0.87-0.86 = 0.01, -0.01, 0.01: mean 0.01/3,
    # std of (0.01, -0.01, 0.01) = sqrt(((2/3)^2 + (4/3)^2 + (2/3)^2) / 2) * 0.01 = 0.011547
    assert (low["baseline_method"], low["baseline_strategy"]) == ("fitting", "top")
    assert low["margin_mean"] == pytest.approx(0.01 / 3)
    assert low["margin_std"] == pytest.approx(0.011547, abs=1e-6)
    assert low["within_spread"] and low["n_seeds"] == 3
    assert low["recipe_accuracy_mean"] == pytest.approx(0.85333, abs=1e-5)
    # 0.7: recipe - random = 0.03 in every seed: std 0, outside the spread
    assert high["baseline_method"] == "random"
    assert high["margin_mean"] == pytest.approx(0.03)
    assert high["margin_std"] == pytest.approx(0.0, abs=1e-12)
    assert high["within_spread"] is not None and not high["within_spread"]


def test_recipe_margin_with_one_seed_has_no_spread(three_seeds):
    margins = tables.recipe_margin_table(three_seeds[three_seeds["seed"] == 0],
                                         ("unseen_single", "el2n", "validated"))
    assert (margins["n_seeds"] == 1).all() and margins["margin_std"].isna().all()
    assert margins["within_spread"].isna().all()
    assert margins["margin_mean"].tolist() == pytest.approx([0.01, 0.03])


# --------------------------------------------------------------------------- #
# The overview and the choices note
# --------------------------------------------------------------------------- #


def regime_rows(seeds, fitting_acc=1.0, fold_scored=0.9, k=5) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        rows.append({"seed": seed, "model": "fitting", "kind": "fitting", "n_train": 1000,
                     "n_scored": 1000, "train_accuracy": fitting_acc, "train_loss": 0.01,
                     "scored_accuracy": fitting_acc, "scored_loss": 0.01, "train_steps": 40})
        rows += [{"seed": seed, "model": f"fold{i}", "kind": "fold", "n_train": 200,
                  "n_scored": 800, "train_accuracy": 1.0, "train_loss": 0.01,
                  "scored_accuracy": fold_scored, "scored_loss": 0.3, "train_steps": 40}
                 for i in range(k)]
    return pd.DataFrame(rows)


def test_overview_states_the_run_the_regime_and_the_margins(three_seeds):
    text = report.overview_html(three_seeds, regime_rows([0, 1, 2], 0.985, 0.9123), "el2n",
                                dataset="digits")
    assert "digits, N = 1,000 training samples, 3 seeds (0, 1, 2)" in text
    assert "K = 5 fold models per seed" in text
    assert "Scoring budget: 1" in text and "retrain budget: full_steps" in text
    assert "98.50% training accuracy" in text and "not fitted" in text
    assert "91.23% out-of-fold accuracy" in text
    assert "UNSEEN single-step el2n (validated)" in text and "default recipe" in text
    # the margins of the table above, in points
    assert "+0.33 ± 1.15" in text and "+3.00 ± 0.00" in text
    assert "At 30 % (full_steps) the margin, +0.33 points, is inside the seed spread" in text
    assert "At 70 %" not in text  # outside the spread and positive: no sentence


def test_overview_with_one_seed_says_no_margin_is_evidence(three_seeds):
    text = report.overview_html(three_seeds[three_seeds["seed"] == 0], regime_rows([0]), "el2n")
    assert "One seed: there is no spread over seeds" in text
    assert "+1.00" in text and "+3.00" in text
    assert "100.00% training accuracy" in text and "; fitted:" in text


def test_overview_without_unseen_says_there_is_no_recipe(three_seeds):
    fitting_only = three_seeds[~three_seeds["method"].str.startswith("unseen")]
    text = report.overview_html(fitting_only, regime_rows([0, 1, 2], k=0), "el2n")
    assert "No UNSEEN selection of el2n" in text and "No fold models" in text


def write_choice(folder, seed, rate, chosen, accuracy):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rate{rate:g}.json"
    path.write_text(json.dumps({
        "strategy": chosen, "validation_accuracy": accuracy, "candidates": list(accuracy),
        "pruning_rate": rate, "pool_size": 900, "held_out_size": 100, "coreset_size": 450,
        "seed": seed, "scores": "results/seed0/scores/oof/el2n.parquet",
    }))
    return path


def test_strategy_choices_table_and_overview(tmp_path):
    paths = [
        write_choice(tmp_path / "seed1/oof-el2n", 1, 0.5, "ccs", {"top": 0.80, "ccs": 0.81}),
        write_choice(tmp_path / "seed0/oof-el2n", 0, 0.5, "top", {"top": 0.84, "ccs": 0.83}),
        write_choice(tmp_path / "seed0/fitting-el2n", 0, 0.3, "top", {"top": 0.9, "ccs": 0.7}),
    ]
    choices = tables.strategy_choices_table(paths)
    assert list(choices.columns) == ["seed", "scores", "pruning_rate", "strategy",
                                     "held_out_accuracy_top", "held_out_accuracy_ccs",
                                     "held_out_size", "pool_size"]
    assert choices[["scores", "seed", "strategy"]].values.tolist() == [
        ["fitting-el2n", 0, "top"], ["oof-el2n", 0, "top"], ["oof-el2n", 1, "ccs"]]
    overview = tables.strategy_choices_overview(choices).set_index("scores")
    assert overview.loc["oof-el2n", "chosen (seeds)"] in ("top (1), ccs (1)", "ccs (1), top (1)")
    assert overview.loc["oof-el2n", "held-out acc. top (%)"] == "84.0 / 80.0"
    assert overview.loc["fitting-el2n", "pruning rate"] == "30 %"
    note = report.strategy_choices_html(choices)
    assert "84.0 / 80.0" in note and "<table" in note


def test_strategy_choices_without_files_is_an_empty_table_and_says_so():
    choices = tables.strategy_choices_table([])
    assert choices.empty and list(choices.columns) == list(tables.STRATEGY_CHOICES_COLUMNS)
    assert "No <code>validated</code> selection" in report.strategy_choices_html(choices)


def test_make_tables_collects_choices_with_the_same_function(tmp_path):
    write_choice(tmp_path / "results/seed0/strategy_choice/oof-el2n", 0, 0.5, "top",
                 {"top": 0.84, "ccs": 0.83})
    out = tmp_path / "choices.csv"
    sys.path.insert(0, str(REPO / "docs/results"))
    try:
        import make_tables
    finally:
        sys.path.remove(str(REPO / "docs/results"))
    make_tables.collect_choices(tmp_path, out)
    expected = tables.strategy_choices_table(
        [tmp_path / "results/seed0/strategy_choice/oof-el2n/rate0.5.json"])
    pd.testing.assert_frame_equal(pd.read_csv(out), expected, check_dtype=False)


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #


def test_focus_keeps_small_differences_readable_and_marks_collapsed_points():
    ax = Figure().subplots()
    style = {"color": "red"}
    points = [(30, 1.0, 0.2, style), (50, 0.3, 0.1, style), (70, 0.5, 0.0, style),
              (90, -50.0, 1.0, style)]
    ax.plot([p[0] for p in points], [p[1] for p in points])
    plots._focus(ax, points, -plots.COLLAPSE_POINTS, values=True)
    low, high = ax.get_ylim()
    assert -50 < low < 0.2 and 1.2 <= high < 2.0
    # the collapsed point: a triangle inside the panel and its value
    assert any(line.get_marker() == "v" and low < line.get_ydata()[0] < 0.2 for line in ax.lines)
    assert [t.get_text() for t in ax.texts] == ["-50.0"]


def test_focus_shows_everything_when_most_points_collapse():
    ax = Figure().subplots()
    points = [(30, -20.0, 0.0, {"color": "k"}), (50, -30.0, 0.0, {"color": "k"}),
              (70, 1.0, 0.0, {"color": "k"})]
    ax.plot([p[0] for p in points], [p[1] for p in points])
    before = ax.get_ylim()
    plots._focus(ax, points, -plots.COLLAPSE_POINTS)
    assert ax.get_ylim() == before and not ax.texts


def test_plot_accuracy_vs_rate_and_cost_quality(tmp_path, three_seeds):
    summary = tables.summary_table(three_seeds)
    path = tmp_path / "accuracy.png"
    plots.plot_accuracy_vs_rate(summary, tables.difference_to_random_table(three_seeds), path)
    assert_png(path)
    cost = tables.budget_ablation_table(three_seeds.assign(train_samples_seen=1000,
                                                           scoring_sample_epochs=5000))
    path = tmp_path / "cost.png"
    plots.plot_cost_quality(cost, path)
    assert_png(path)
    with pytest.raises(ValueError, match="empty"):
        plots.plot_cost_quality(cost.iloc[:0], tmp_path / "none.png")

