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
