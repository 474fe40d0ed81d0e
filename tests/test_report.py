"""Tests of unseen.diagnostics, unseen.report and unseen.plots: rank stability,
score spread, result tables and plots.

Expected numbers are derived by hand in the comments next to them.
"""

from __future__ import annotations

import itertools
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from unseen import diagnostics, plots, report, tables

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def table(ids, scores) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": np.asarray(ids, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64),
        }
    )


# --------------------------------------------------------------------------- #
# rank_stability / aligned_ranks
# --------------------------------------------------------------------------- #


def test_rank_stability_hand_example_with_shuffled_rows_and_one_swap():
    a = table([0, 1, 2, 3, 4], [0.1, 0.5, 0.3, 0.9, 0.7])
    # Same order as a except ids 3 and 4 swap ranks; rows deliberately shuffled.
    b = table([4, 2, 0, 3, 1], [9.0, 3.0, 1.0, 7.0, 5.0])
    # ranks by id: a = [1, 3, 2, 5, 4], b = [1, 3, 2, 4, 5]
    # centred (mean 3): a = [-2, 0, -1, 2, 1], b = [-2, 0, -1, 1, 2]
    # dot = 4 + 0 + 1 + 2 + 2 = 9; both squared norms = 10 -> rho = 0.9
    ranks = diagnostics.aligned_ranks(a, b)
    assert ranks["sample_id"].tolist() == [0, 1, 2, 3, 4]
    assert ranks["rank_a"].tolist() == [1, 3, 2, 5, 4]
    assert ranks["rank_b"].tolist() == [1, 3, 2, 4, 5]
    assert diagnostics.rank_stability(a, b) == pytest.approx(0.9, abs=1e-12)
    assert diagnostics.rank_stability(b, a) == pytest.approx(0.9, abs=1e-12)


def test_rank_stability_identical_and_reversed_orderings():
    rng = np.random.default_rng(1)
    ids = np.arange(100)
    scores = rng.normal(size=100)
    a = table(ids, scores)
    # A monotone transform keeps the ranking; negation reverses it.
    assert diagnostics.rank_stability(a, table(ids, np.exp(scores) * 3)) == pytest.approx(
        1.0, abs=1e-12
    )
    assert diagnostics.rank_stability(a, table(ids, -scores)) == pytest.approx(-1.0, abs=1e-12)


def test_rank_stability_uses_average_ranks_for_ties():
    a = table([0, 1, 2, 3], [1.0, 2.0, 2.0, 3.0])
    b = table([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    # ranks a = [1, 2.5, 2.5, 4], b = [1, 2, 3, 4]; centred (mean 2.5):
    # a = [-1.5, 0, 0, 1.5], b = [-1.5, -0.5, 0.5, 1.5]
    # dot = 4.5, |a|^2 = 4.5, |b|^2 = 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9)
    assert diagnostics.aligned_ranks(a, b)["rank_a"].tolist() == [1.0, 2.5, 2.5, 4.0]
    assert diagnostics.rank_stability(a, b) == pytest.approx(math.sqrt(0.9), abs=1e-12)


def test_ids_on_one_side_only_are_dropped_before_ranking():
    a = table([0, 1, 2, 3, 4, 99], [0.1, 0.5, 0.3, 0.9, 0.7, -100.0])
    b = table([4, 2, 0, 3, 1, 7], [9.0, 3.0, 1.0, 7.0, 5.0, 100.0])
    ranks = diagnostics.aligned_ranks(a, b)
    # Only the 5 shared ids, re-ranked 1..5 among themselves.
    assert ranks["sample_id"].tolist() == [0, 1, 2, 3, 4]
    assert sorted(ranks["rank_a"]) == [1, 2, 3, 4, 5]
    assert diagnostics.rank_stability(a, b) == pytest.approx(0.9, abs=1e-12)


def test_nan_scores_are_dropped_on_both_sides():
    a = table([0, 1, 2], [0.1, np.nan, 0.3])
    b = table([0, 1, 2], [5.0, 1.0, 6.0])
    ranks = diagnostics.aligned_ranks(a, b)
    assert ranks["sample_id"].tolist() == [0, 2]
    assert diagnostics.rank_stability(a, b) == pytest.approx(1.0)


def test_duplicate_ids_raise():
    a = table([0, 1, 1], [0.1, 0.2, 0.3])
    b = table([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="duplicate"):
        diagnostics.rank_stability(a, b)
    with pytest.raises(ValueError, match="duplicate"):
        diagnostics.rank_stability(b, a)


def test_fewer_than_two_shared_ids_raise():
    with pytest.raises(ValueError, match="at least 2"):
        diagnostics.rank_stability(table([0, 1], [0.1, 0.2]), table([1, 2], [0.1, 0.2]))


def test_constant_scores_give_nan():
    a = table([0, 1, 2], [0.5, 0.5, 0.5])
    b = table([0, 1, 2], [0.1, 0.2, 0.3])
    assert math.isnan(diagnostics.rank_stability(a, b))
    assert math.isnan(diagnostics.rank_stability(b, a))


# --------------------------------------------------------------------------- #
# score_spread
# --------------------------------------------------------------------------- #


def test_score_spread_of_0_to_100_has_known_quantiles():
    values = np.arange(101, dtype=float)
    values_with_nan = np.concatenate([values, [np.nan, np.nan]])
    spread = diagnostics.score_spread(values_with_nan)
    # With 101 equally spaced points linear-interpolated quantile q is exactly 100 q.
    assert spread["n"] == 101
    assert spread["mean"] == pytest.approx(50.0)
    assert spread["q05"] == pytest.approx(5.0)
    assert spread["q25"] == pytest.approx(25.0)
    assert spread["median"] == pytest.approx(50.0)
    assert spread["q75"] == pytest.approx(75.0)
    assert spread["q95"] == pytest.approx(95.0)
    assert spread["iqr"] == pytest.approx(50.0)
    # population variance of 0..N-1 is (N^2 - 1) / 12 = (101^2 - 1) / 12 = 850
    assert spread["std"] == pytest.approx(math.sqrt(850.0))
    assert set(spread) == set(diagnostics.SPREAD_FIELDS)


def test_concentration_uniform_vs_clustered():
    rng = np.random.default_rng(0)
    uniform = rng.uniform(0, 1, size=100_000)
    # 98% of the mass inside [q01, q99] split over 50 bins -> about 0.98 / 50.
    assert diagnostics.score_spread(uniform)["concentration"] == pytest.approx(0.98 / 50, abs=0.003)

    # 90% of the samples in one tight cluster, the rest spread wide.
    clustered = np.concatenate([rng.normal(0.5, 1e-4, 9_000), rng.uniform(0, 1, 1_000)])
    assert diagnostics.score_spread(clustered)["concentration"] > 0.85

    constant_ish = np.concatenate([np.full(990, 0.3), [0.0] * 5 + [1.0] * 5])
    # q01 == q99 == 0.3: the zero-width case counts the samples equal to that value.
    assert diagnostics.score_spread(constant_ish)["concentration"] == pytest.approx(0.99)


def test_score_spread_empty_is_nan():
    spread = diagnostics.score_spread(np.array([np.nan]))
    assert spread["n"] == 0
    assert all(math.isnan(spread[k]) for k in diagnostics.SPREAD_FIELDS[1:])


# --------------------------------------------------------------------------- #
# diagnostics_table
# --------------------------------------------------------------------------- #


def test_diagnostics_table_averages_over_seeds_and_pairs():
    rng = np.random.default_rng(3)
    ids = np.arange(500)
    base = rng.normal(size=500)
    tables = {}
    for seed in (0, 1, 2):
        tables[(seed, "el2n", "unseen")] = table(ids, base + rng.normal(scale=0.5, size=500))
        tables[(seed, "el2n", "fitting")] = table(ids, base + rng.normal(scale=2.0, size=500))
    tables[(0, "forgetting", "unseen")] = table(ids, base)

    diag = diagnostics.diagnostics_table(tables)
    assert list(diag.columns) == list(diagnostics.DIAGNOSTICS_COLUMNS)
    assert list(zip(diag["scorer"], diag["kind"])) == [
        ("el2n", "fitting"), ("el2n", "unseen"), ("forgetting", "unseen"),
    ]
    for kind in ("fitting", "unseen"):
        row = diag[(diag["scorer"] == "el2n") & (diag["kind"] == kind)].iloc[0]
        pairs = [
            diagnostics.rank_stability(tables[(a, "el2n", kind)], tables[(b, "el2n", kind)])
            for a, b in itertools.combinations((0, 1, 2), 2)
        ]
        assert row["n_seeds"] == 3
        assert row["n_seed_pairs"] == 3
        assert row["spearman_rho_mean"] == pytest.approx(np.mean(pairs), abs=1e-12)
        assert row["spearman_rho_min"] == pytest.approx(min(pairs), abs=1e-12)
        stds = [diagnostics.score_spread(tables[(s, "el2n", kind)]["score"])["std"]
                for s in (0, 1, 2)]
        assert row["std"] == pytest.approx(np.mean(stds))
    unseen = diag[(diag["scorer"] == "el2n") & (diag["kind"] == "unseen")].iloc[0]
    fitting = diag[(diag["scorer"] == "el2n") & (diag["kind"] == "fitting")].iloc[0]
    # Less seed noise -> more stable ranking.
    assert unseen["spearman_rho_mean"] > fitting["spearman_rho_mean"]

    single = diag[diag["scorer"] == "forgetting"].iloc[0]
    assert single["n_seeds"] == 1 and single["n_seed_pairs"] == 0
    assert math.isnan(single["spearman_rho_mean"]) and math.isnan(single["spearman_rho_min"])


# --------------------------------------------------------------------------- #
# summary_table / selection_label
# --------------------------------------------------------------------------- #


def model_row(method, scorer, strategy, rate, seed, size, acc, worst, per_class, wall,
              scoring=(0, 0.0), retrain_budget="full_steps", train_steps=40):
    scored = method not in ("full", "random")
    return {
        "method": method, "scorer": scorer, "strategy": strategy, "pruning_rate": rate,
        "seed": seed, "coreset_size": size, "n_train_total": 1000, "test_accuracy": acc,
        "worst_class_accuracy": worst, "per_class_accuracy": per_class, "epochs": 5,
        "wall_seconds": wall, "retrain_budget": retrain_budget, "train_steps": train_steps,
        "scoring_budget": "1" if scored else "none", "scoring_steps": 10 * scored,
        "scoring_sample_epochs": scoring[0],
        "scoring_wall_seconds": scoring[1], "model": "mlp", "device": "cpu",
    }


@pytest.fixture
def metrics() -> pd.DataFrame:
    return pd.DataFrame(
        [
            model_row("full", "none", "none", 0.0, 0, 1000, 0.90, 0.80, [0.80, 1.00], 100.0),
            model_row("full", "none", "none", 0.0, 1, 1000, 0.92, 0.84, [0.84, 1.00], 110.0),
            model_row("unseen", "el2n", "top", 0.5, 0, 500, 0.80, 0.60, [0.60, 1.00], 50.0,
                      scoring=(1000, 10.0)),
            model_row("unseen", "el2n", "top", 0.5, 1, 500, 0.84, 0.70, [0.70, 0.90, np.nan], 60.0,
                      scoring=(1200, 20.0)),
            model_row("random", "none", "none", 0.5, 0, 500, 0.70, 0.50, [0.50, 0.90], 40.0),
            model_row("random", "none", "none", 0.5, 1, 500, 0.74, 0.50, [0.50, 0.98], 44.0),
        ]
    )


def test_summary_table_means_stds_and_compute(metrics):
    summary = tables.summary_table(metrics)
    assert list(summary.columns) == list(tables.SUMMARY_COLUMNS)
    # sorted by rate, then method: full (0.0), random (0.5), unseen (0.5)
    assert summary["method"].tolist() == ["full", "random", "unseen"]
    assert summary["coreset_size"].tolist() == [1000, 500, 500]
    assert summary["coreset_size"].dtype == np.int64
    assert summary["n_seeds"].tolist() == [2, 2, 2]

    full, rand, unseen = (summary.iloc[i] for i in range(3))
    # two values x, y: mean (x+y)/2, sample std |x-y|/sqrt(2)
    assert full["test_accuracy_mean"] == pytest.approx(0.91)
    assert full["test_accuracy_std"] == pytest.approx(0.02 / math.sqrt(2))
    assert unseen["test_accuracy_mean"] == pytest.approx(0.82)
    assert unseen["test_accuracy_std"] == pytest.approx(0.04 / math.sqrt(2))
    assert unseen["worst_class_accuracy_mean"] == pytest.approx(0.65)
    assert unseen["worst_class_accuracy_std"] == pytest.approx(0.10 / math.sqrt(2))
    # per model population std over two classes is |x-y|/2 (NaN class ignored):
    # unseen: 0.2, 0.1 -> 0.15; full: 0.1, 0.08 -> 0.09; random: 0.2, 0.24 -> 0.22
    assert unseen["per_class_accuracy_std_mean"] == pytest.approx(0.15)
    assert full["per_class_accuracy_std_mean"] == pytest.approx(0.09)
    assert rand["per_class_accuracy_std_mean"] == pytest.approx(0.22)

    assert full["scoring_sample_epochs"] == 0 and full["scoring_wall_seconds"] == 0
    assert rand["scoring_sample_epochs"] == 0 and rand["scoring_wall_seconds"] == 0
    assert unseen["scoring_sample_epochs"] == pytest.approx(1100.0)
    assert unseen["scoring_wall_seconds"] == pytest.approx(15.0)
    assert unseen["retrain_wall_seconds_mean"] == pytest.approx(55.0)
    assert full["retrain_wall_seconds_mean"] == pytest.approx(105.0)


def test_summary_table_single_seed_std_is_nan_and_missing_compute_is_nan(metrics):
    one_seed = metrics[metrics["seed"] == 0]
    without_cost = one_seed.drop(
        columns=["scoring_sample_epochs", "scoring_wall_seconds", "scoring_steps"])
    summary = tables.summary_table(without_cost).set_index("method")
    assert (summary["n_seeds"] == 1).all()
    assert summary["test_accuracy_std"].isna().all()
    assert summary.loc["random", "scoring_sample_epochs"] == 0
    # A scored selection without compute rows must not look free.
    assert math.isnan(summary.loc["unseen", "scoring_sample_epochs"])


def test_summary_table_rejects_duplicate_models(metrics):
    with pytest.raises(ValueError, match="more than one row"):
        tables.summary_table(pd.concat([metrics, metrics.iloc[[0]]]))


def test_summary_table_float_coreset_size_when_seeds_disagree(metrics):
    metrics.loc[3, "coreset_size"] = 501
    summary = tables.summary_table(metrics).set_index("method")
    assert summary.loc["unseen", "coreset_size"] == pytest.approx(500.5)


def test_selection_label():
    assert tables.selection_label("full", "none", "none") == "full"
    assert tables.selection_label("random", "none", "none") == "random"
    assert tables.selection_label("fitting", "el2n", "top") == "fitting el2n"
    assert tables.selection_label("unseen", "el2n", "top") == "UNSEEN el2n"
    assert tables.selection_label("unseen_single", "el2n", "top") == "UNSEEN single-step el2n"
    assert tables.selection_label("unseen", "el2n", "ccs") == "UNSEEN el2n (ccs)"


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    image = matplotlib.image.imread(path)
    pixels = image.reshape(-1, image.shape[-1])
    assert len(np.unique(pixels, axis=0)) > 1
    # written atomically: no temporary file left next to it
    assert not list(path.parent.glob(f".{path.name}.*"))


def test_plot_accuracy_vs_rate_with_many_methods(tmp_path):
    rows = []
    rng = np.random.default_rng(0)
    selections = [("full", "none", "none"), ("random", "none", "none")] + [
        (m, s, t) for m in ("fitting", "unseen", "unseen_single")
        for s in ("el2n", "forgetting") for t in ("top", "ccs")
    ]
    for method, scorer, strategy in selections:
        rates = [0.0] if method == "full" else [0.3, 0.5, 0.7, 0.9]
        for rate, seed in itertools.product(rates, (0, 1)):
            rows.append(model_row(method, scorer, strategy, rate, seed, int(1000 * (1 - rate)),
                                  0.9 - 0.3 * rate + rng.normal(scale=0.01), 0.5,
                                  [0.5, 0.9], 1.0))
    summary = tables.summary_table(pd.DataFrame(rows))
    path = tmp_path / "plots" / "accuracy.png"
    plots.plot_accuracy_vs_rate(summary, tables.difference_to_random_table(pd.DataFrame(rows)), path)
    assert_png(path)


@pytest.mark.parametrize("width", [4.0, 6.5, 13.0])
def test_the_legend_below_fits_the_figure_width(width):
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", figsize=(width, 4))
    ax = fig.subplots()
    labels = [f"UNSEEN single-step least_confidence (validated) {i}" for i in range(7)] + ["random"]
    for i, label in enumerate(labels):
        ax.plot([0, 1], [i, i], label=label)
    plots.legend_below(fig, len(labels))
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.width


def test_plot_score_histograms(tmp_path):
    rng = np.random.default_rng(0)
    fitting = np.clip(rng.exponential(0.05, 5000), 0, 1.4)
    unseen = rng.uniform(0, 1.4, 5000)
    path = tmp_path / "hist.png"
    plots.plot_score_histograms(fitting, unseen, "el2n", path)
    assert_png(path)


def test_plot_rank_stability_subsamples_large_inputs(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.arange(30_000)
    base = rng.normal(size=ids.size)
    pairs = {
        "fitting": diagnostics.aligned_ranks(
            table(ids, base + rng.normal(scale=2, size=ids.size)),
            table(ids, base + rng.normal(scale=2, size=ids.size)),
        ),
        "UNSEEN": diagnostics.aligned_ranks(
            table(ids, base + rng.normal(scale=0.3, size=ids.size)),
            table(ids, base + rng.normal(scale=0.3, size=ids.size)),
        ),
    }
    path = tmp_path / "rank.png"
    plots.plot_rank_stability(pairs, path, seeds=(0, 1))
    assert_png(path)


def test_plot_per_class_accuracy(tmp_path, metrics):
    path = tmp_path / "per_class.png"
    plots.plot_per_class_accuracy(
        metrics,
        [("full", "none", "none"), ("random", "none", "none"), ("unseen", "el2n", "top")],
        0.5, path, class_names=["cat", "dog", "bird"],
    )
    assert_png(path)
    with pytest.raises(ValueError, match="no models"):
        plots.plot_per_class_accuracy(metrics, [("fitting", "el2n", "top")], 0.5,
                                       tmp_path / "missing.png")
    assert not (tmp_path / "missing.png").exists()


def test_placeholder_plot(tmp_path):
    path = tmp_path / "placeholder.png"
    plots.placeholder_plot("rank stability needs at least two seeds", path)
    assert_png(path, min_bytes=0)
