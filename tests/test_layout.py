"""Repository layout: rule files in top-level rules/, every path they name resolves, lint is clean."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, SNAKEFILE, job_environment, make_workdir

RULES = REPO / "rules"


def test_rule_files_live_in_top_level_rules():
    names = sorted(p.name for p in RULES.glob("*.smk"))
    assert "common.smk" in names and len(names) >= 7, names
    assert not (REPO / "workflow" / "rules").exists(), "rule files belong in rules/, not workflow/rules/"
    snakefile = SNAKEFILE.read_text()
    for name in names:
        assert f'include: "../rules/{name}"' in snakefile, f"workflow/Snakefile does not include rules/{name}"


def test_relative_paths_in_rule_files_resolve():
    """Conda envs, the schema and report captions are named relative to the rule file.

    `snakemake --lint` does not open them, so a moved file would only show up in
    a `--use-conda` or `--report` run; check every "../..." string here instead.
    """
    checked = 0
    for smk in sorted(RULES.glob("*.smk")):
        for relative in re.findall(r'"(\.\./[^"{}]+)"', smk.read_text()):
            target = (smk.parent / relative).resolve()
            assert target.is_file(), f"{smk.relative_to(REPO)} names {relative!r}, which is not a file ({target})"
            checked += 1
    # the conda env, the schema and the six report captions at least
    assert checked >= 8, checked


def test_snakemake_lint_is_clean(tmp_path):
    workdir = make_workdir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--lint"],
        cwd=workdir, capture_output=True, text=True, env=job_environment(),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in output, output
