"""unseen.compare / `unseen compare-runs`: two results folders, file by file, on real Parquet files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from unseen import io
from unseen.compare import compare_results


def _write_run(results: Path, scores: list[float]) -> None:
    folds = pd.DataFrame({"sample_id": [0, 1, 2], "label": [0, 1, 0], "fold": [0, 1, 0]})
    io.write_table(folds, results / "seed0/split/folds.parquet", io.FOLDS_SCHEMA)
    agg = pd.DataFrame({"sample_id": [0, 1, 2], "label": [0, 1, 0], "score": scores,
                        "score_std": [0.0] * 3, "n_scores": [4] * 3})
    io.write_table(agg, results / "seed0/scores/oof/el2n.parquet", io.AGGREGATE_SCHEMA)
    io.write_id_list(pd.Series([2, 0]).to_numpy(), results / "seed0/coresets/random/rate0.3/coreset.txt")
    # not compared: timings differ from run to run
    io.write_json({"wall_seconds": scores[0]}, results / "seed0/retrain/full/metrics.json")


def _status(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["path"], table["status"]))


def test_same_outputs_are_identical_and_timings_are_ignored(tmp_path):
    _write_run(tmp_path / "a", [0.5, 0.25, 0.75])
    _write_run(tmp_path / "b", [0.5, 0.25, 0.75])
    (tmp_path / "b/seed0/retrain/full/metrics.json").write_text('{"wall_seconds": 9}')
    status = _status(compare_results(tmp_path / "a", tmp_path / "b"))
    assert status == {
        "seed0/split/folds.parquet": "identical",
        "seed0/scores/oof/el2n.parquet": "identical",
        "seed0/coresets/random/rate0.3/coreset.txt": "identical",
    }


def test_a_changed_score_a_rewritten_table_and_a_missing_file_are_told_apart(tmp_path):
    _write_run(tmp_path / "a", [0.5, 0.25, 0.75])
    _write_run(tmp_path / "b", [0.5, 0.25, 0.7500001])
    # the same table written with other Parquet settings: other bytes, same content
    folds = tmp_path / "b/seed0/split/folds.parquet"
    pq.write_table(pq.read_table(folds), folds, compression="none")
    (tmp_path / "b/seed0/coresets/random/rate0.3/coreset.txt").unlink()
    status = _status(compare_results(tmp_path / "a", tmp_path / "b"))
    assert status == {
        "seed0/split/folds.parquet": "equal_content",
        "seed0/scores/oof/el2n.parquet": "different",
        "seed0/coresets/random/rate0.3/coreset.txt": "only_left",
    }


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unseen", "compare-runs", *args],
                          capture_output=True, text=True)


def test_cli_exit_status_names_the_differences(tmp_path):
    _write_run(tmp_path / "a", [0.5, 0.25, 0.75])
    _write_run(tmp_path / "b", [0.5, 0.25, 0.75])
    same = _cli(str(tmp_path / "a"), str(tmp_path / "b"))
    assert same.returncode == 0 and same.stdout.startswith("3 identical")
    (tmp_path / "b/seed0/coresets/random/rate0.3/coreset.txt").write_text("0\n1\n")
    changed = _cli(str(tmp_path / "a"), str(tmp_path / "b"))
    assert changed.returncode == 1
    assert "different: seed0/coresets/random/rate0.3/coreset.txt" in changed.stdout
    (tmp_path / "b/seed0/coresets/random/rate0.3/coreset.txt").unlink()
    assert _cli(str(tmp_path / "a"), str(tmp_path / "b")).returncode == 1
    assert _cli(str(tmp_path / "a"), str(tmp_path / "b"), "--shared-only").returncode == 0
    missing = _cli(str(tmp_path / "a"), str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "nowhere: no such results folder" in missing.stderr
