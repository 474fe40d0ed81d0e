"""unseen.api: the README's example runs as written, and the API reproduces the default run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, api_scoring_kwargs, job_environment
from unseen import api


def _readme_python_api_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)\n```", section, re.DOTALL)
    assert match and match.start() == section.find("```"), (
        "README.md's '## Python API' section must open with a ```python example"
    )
    return match.group(1)


def test_readme_python_api_example_runs_as_written(tmp_path):
    code = _readme_python_api_example()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env=job_environment(), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    kept = re.search(r"kept (\d+) of (\d+) samples: test accuracy (0\.\d+) \(all samples: (0\.\d+)\)", proc.stdout)
    assert kept, proc.stdout
    assert (int(kept[1]), int(kept[2])) == (404, 1347)  # round(1347 * 0.3)
    assert float(kept[3]) > 0.8 and float(kept[4]) > 0.9, proc.stdout


def test_tables_have_the_workflows_columns_and_dtypes():
    from unseen import io

    rng = np.random.default_rng(0)
    scores = pd.DataFrame({
        "sample_id": np.arange(50, dtype=np.int64), "label": rng.integers(0, 3, 50),
        "score": rng.random(50), "score_std": 0.0, "n_scores": 1,
    })
    coreset = api.select(scores, pruning_rate=0.6, strategy="class_balanced")
    assert list(coreset.columns) == io.CORESET_SCHEMA.names
    assert len(coreset) == 20 and coreset["sample_id"].is_unique and (coreset["stage"] == 1).all()


def test_hard_class_priority_without_class_error_names_what_is_missing():
    scores = pd.DataFrame({"sample_id": np.arange(10), "label": np.arange(10) % 2, "score": np.arange(10.0)})
    with pytest.raises(ValueError, match="per-class error"):
        api.select(scores, 0.5, "hard_class_priority")


def test_images_of_the_wrong_type_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"uint8 of shape \(N, C, H, W\).*astype\(np.uint8\)"):
        api.out_of_fold_scores(np.zeros((10, 1, 8, 8), dtype=np.float32), np.zeros(10, dtype=int))


@pytest.mark.workflow
def test_api_reproduces_the_default_run(default_run):
    """The API, called with the default config's settings, gives the default run's tables.

    (default_run was killed and resumed: its out-of-fold scores equal the API's
    uninterrupted in-process computation too.)
    """
    config = yaml.safe_load((default_run / "config" / "config.yaml").read_text())
    res, rate = default_run / "results" / "seed0", 0.7
    data = api.load_dataset("digits")
    final = config["final_model"]
    model_kwargs = api_scoring_kwargs(config)

    scores = api.out_of_fold_scores(data.train_x, data.train_y, "el2n", k=config["folds"]["k"],
                                    mode=config["folds"]["mode"], **model_kwargs)
    pd.testing.assert_frame_equal(scores, pd.read_parquet(res / "scores/oof/el2n.parquet"))

    choice = api.choose_strategy(data.train_x, data.train_y, scores, rate, model=final,
                                 train=final["train"], budget=config["budget"]["retrain"][0], threads=1)
    workflow_choice = json.loads((res / f"strategy_choice/oof-el2n/rate{rate:g}.json").read_text())
    assert choice["strategy"] == workflow_choice["strategy"]
    assert choice["validation_accuracy"] == workflow_choice["validation_accuracy"]

    single = api.select(scores, rate, "validated", validated_strategy=choice["strategy"])
    pd.testing.assert_frame_equal(
        single, pd.read_parquet(res / f"coresets/unseen_single-el2n-validated/rate{rate:g}/coreset.parquet")
    )
    staged = api.multi_step(data.train_x, data.train_y, scores, rate, "el2n", "validated",
                            stages=config["stages"], validated_strategy=choice["strategy"],
                            **model_kwargs)
    pd.testing.assert_frame_equal(
        staged, pd.read_parquet(res / f"coresets/unseen-el2n-validated/rate{rate:g}/coreset.parquet")
    )
    metrics = api.retrain(data.train_x, data.train_y, data.test_x, data.test_y, single,
                          model=final, train=final["train"], threads=1)
    expected = pd.read_parquet(
        res / f"retrain/full_steps/unseen_single-el2n-validated/rate{rate:g}/metrics.parquet").iloc[0]
    for column in ("coreset_size", "n_train_total", "test_accuracy", "worst_class_accuracy",
                   "epochs", "train_samples_seen", "train_steps", "retrain_budget"):
        assert metrics[column] == expected[column], column
    assert metrics["per_class_accuracy"] == list(expected["per_class_accuracy"])


# ---------------------------------------------------------------------------
# Inputs in another layout or labelling are refused with the fix, not misread
# (docs/reliability.md). Each call would train quickly if it were let through.

QUICK = {"model": {"arch": "mlp", "options": {"width": 16}}, "train": {"epochs": 1}, "threads": 1}


@pytest.fixture(scope="module")
def digits():
    return api.load_dataset("digits")


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_images_are_refused_with_the_transpose(digits, channels):
    nhwc = np.repeat(digits.train_x.transpose(0, 2, 3, 1), channels, axis=3)  # (1347, 8, 8, c)
    with pytest.raises(ValueError, match=r"images has shape \(1347, 8, 8, \d\), channels last.*"
                                         r"read it as 8 channels.*images\.transpose\(0, 3, 1, 2\)"):
        api.out_of_fold_scores(nhwc, digits.train_y, k=2, **QUICK)
    test_nhwc = digits.test_x.transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"test_images has shape .*test_images\.transpose\(0, 3, 1, 2\)"):
        api.retrain(digits.train_x, digits.train_y, test_nhwc, digits.test_y, np.arange(100), **QUICK)


def _one_based(y):
    return y + 1


def _float_with_a_fraction(y):
    y = y.astype(np.float64)
    y[7] = 2.5
    return y


BAD_LABELS = {
    # labels 1..10: a model with an 11th class that no sample has
    "one-based": (_one_based, r"labels\[(\d+)\] = 10: .*0\.\.C-1 with every class present.*1 to 10"
                              r" \(class 0 has no sample\)"),
    "float-truncated": (_float_with_a_fraction, r"labels\[7\] = 2\.5 is not an integer"),
    "numeric-strings": (lambda y: y.astype(str), r"labels are <U\d+ \(labels\[0\] = '0'\), not integers"),
}


@pytest.mark.parametrize("case", BAD_LABELS)
def test_labels_that_are_not_0_to_c_minus_1_are_refused_naming_the_first_bad_value(digits, case):
    relabel, message = BAD_LABELS[case]
    labels = relabel(digits.train_y.copy())
    with pytest.raises(ValueError, match=message) as err:
        api.out_of_fold_scores(digits.train_x, labels, k=2, **QUICK)
    assert "np.unique(labels, return_inverse=True)" in str(err.value)
    if case == "one-based":  # the first bad value is named, not just any
        assert int(re.search(message, str(err.value))[1]) == np.flatnonzero(labels == 10)[0]


def test_test_labels_outside_the_training_classes_are_refused(digits):
    with pytest.raises(ValueError, match=r"test_labels\[\d+\] = 10 is not one of the training labels 0\.\.9"):
        api.retrain(digits.train_x, digits.train_y, digits.test_x, digits.test_y + 1, np.arange(100),
                    **QUICK)


def _mask(n):
    mask = np.zeros(n, dtype=bool)
    mask[::3] = True
    return mask


BAD_CORESETS = {
    # a mask would be read as the ids 0 and 1, 1347 times over
    "boolean-mask": (_mask, r"coreset is a boolean mask of 1347 entries.*np\.flatnonzero\(mask\)"),
    "duplicate-ids": (lambda n: np.r_[np.arange(100), np.arange(50)],
                      r"coreset holds 50 duplicate id\(s\) \(e\.g\. 0, 2 times\).*np\.unique\(ids\)"),
    "duplicate-rows": (lambda n: pd.DataFrame({"sample_id": np.r_[np.arange(100), [7]]}),
                       r"coreset\['sample_id'\] holds 1 duplicate id\(s\) \(e\.g\. 7, 2 times\).*"
                       r"coreset\.drop_duplicates\('sample_id'\)"),
    "id-out-of-range": (lambda n: np.array([3, n]), r"coreset\[1\] = 1347 is not a sample id.*0\.\.1346"),
}


@pytest.mark.parametrize("case", BAD_CORESETS)
def test_a_coreset_that_is_not_distinct_sample_ids_is_refused_by_retrain(digits, case):
    make, message = BAD_CORESETS[case]
    with pytest.raises(ValueError, match=message):
        api.retrain(digits.train_x, digits.train_y, digits.test_x, digits.test_y,
                    make(len(digits.train_y)), **QUICK)


def test_a_class_smaller_than_k_is_refused_by_the_workflows_own_check(digits):
    """The API calls what the workflow's parse calls (preflight.fold_split_problem)."""
    # N = 20 < C x K = 50: two samples of each of the 10 classes, K = 5
    two_each = np.concatenate([np.flatnonzero(digits.train_y == c)[:2] for c in range(10)])
    with pytest.raises(ValueError, match=r"argument 'k': 5 folds need at least 5 training samples in"
                                         r" every class, but in labels class '0' has 2.*set k to at most 2"):
        api.out_of_fold_scores(digits.train_x[two_each], digits.train_y[two_each], k=5, **QUICK)


def test_one_class_is_refused_by_the_workflows_own_check(digits):
    """With one class every score is 0 and every accuracy 1.0: the API used to return such scores."""
    zeros = digits.train_y == 0
    with pytest.raises(ValueError, match=r"labels has 1 class \('0'\), but a classifier needs at least 2"):
        api.out_of_fold_scores(digits.train_x[zeros], digits.train_y[zeros], k=2, **QUICK)


def test_a_hand_edited_coreset_txt_fed_to_retrain_is_checked(digits, tmp_path):
    """coreset.txt (one id per line, as the workflow writes it) edited by hand, then read back."""
    scores = pd.DataFrame({"sample_id": np.arange(1347), "label": digits.train_y,
                           "score": np.random.default_rng(0).random(1347)})
    coreset = api.select(scores, pruning_rate=0.9, strategy="top")
    path = tmp_path / "coreset.txt"
    path.write_text("".join(f"{i}\n" for i in coreset["sample_id"]) + f"{coreset['sample_id'][0]}\n")
    edited = np.loadtxt(path)  # floats, as np.loadtxt reads them without dtype=int
    with pytest.raises(ValueError, match=r"coreset holds 1 duplicate id\(s\).*np\.unique\(ids\)"):
        api.retrain(digits.train_x, digits.train_y, digits.test_x, digits.test_y, edited, **QUICK)
    metrics = api.retrain(digits.train_x, digits.train_y, digits.test_x, digits.test_y,
                          np.unique(edited), **QUICK)
    assert metrics["coreset_size"] == len(coreset) == 135  # round(1347 * 0.1)
