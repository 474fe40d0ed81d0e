"""results/README.md documents exactly the columns the code writes, table by table."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO
from unseen import io
from unseen.diagnostics import DIAGNOSTICS_COLUMNS
from unseen.tables import ABLATION_COLUMNS, STRATEGY_CHOICES_COLUMNS, SUMMARY_COLUMNS

DOC = REPO / "results" / "README.md"

# section heading in results/README.md -> the columns the code writes there
DOCUMENTED = {
    "split/folds.parquet": io.FOLDS_SCHEMA.names,
    "Score shards": io.SHARD_SCHEMA.names,
    "scores/oof/{scorer}.parquet": io.AGGREGATE_SCHEMA.names,
    "class_difficulty.parquet": io.CLASS_DIFFICULTY_SCHEMA.names,
    "scoring_models.parquet": io.SCORING_MODELS_SCHEMA.names,
    "Coresets": io.CORESET_SCHEMA.names,
    "metrics.parquet and summary.parquet": io.METRICS_SCHEMA.names,
    "report/summary.parquet": list(SUMMARY_COLUMNS),
    "report/diagnostics.parquet": list(DIAGNOSTICS_COLUMNS),
    "scoring_models.parquet": io.SCORING_MODELS_SCHEMA.names,
    "report/strategy_choices.parquet": list(STRATEGY_CHOICES_COLUMNS),
    "ablation.parquet": list(ABLATION_COLUMNS),
}


def _documented_columns(text: str, heading: str) -> list[str]:
    """First column of the first Markdown table under ``### heading``."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^### |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{DOC.relative_to(REPO)} has no section '### {heading}'"
    rows = re.findall(r"^\| *([^|`]+?) *\|", match.group(1), re.MULTILINE)
    assert rows[:1] == ["column"], f"section '{heading}': no | column | dtype | meaning | table"
    return [name for name in rows[1:] if not set(name) <= {"-"}]


@pytest.mark.parametrize("heading", DOCUMENTED)
def test_every_column_is_documented(heading):
    documented = _documented_columns(DOC.read_text(), heading)
    written = list(DOCUMENTED[heading])
    missing = [c for c in written if c not in documented]
    stale = [c for c in documented if c not in written]
    assert not missing and not stale, (
        f"{DOC.relative_to(REPO)}, '### {heading}': add rows for {missing}, remove rows for {stale}"
    )


def test_every_schema_of_io_is_covered():
    """A new *_SCHEMA in unseen/io.py needs its own section in results/README.md."""
    schemas = {name for name in vars(io) if name.endswith("_SCHEMA")}
    covered = {name for name in schemas if getattr(io, name).names in DOCUMENTED.values()}
    assert schemas == covered, f"document {sorted(schemas - covered)} in {DOC.relative_to(REPO)}"


def test_results_readme_is_tracked_and_the_rest_of_results_ignored():
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "results/README.md", "results/seed0/summary.parquet"],
        cwd=REPO, capture_output=True, text=True,
    )
    if proc.returncode == 128:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    # check-ignore prints the paths that git ignores
    assert proc.stdout.split() == ["results/seed0/summary.parquet"], proc.stdout + proc.stderr
