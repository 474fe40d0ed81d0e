"""Repository layout: rule files in top-level rules/, every path they name resolves, lint is clean."""

from __future__ import annotations

import os
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
    """The conda env and the report captions are named relative to the rule file.

    `snakemake --lint` does not open them, so a moved file would only show up in
    a `--use-conda` or `--report` run; check every "../..." string here instead.
    """
    checked = 0
    for smk in sorted(RULES.glob("*.smk")):
        for relative in re.findall(r'"(\.\./[^"{}]+)"', smk.read_text()):
            target = (smk.parent / relative).resolve()
            assert target.is_file(), f"{smk.relative_to(REPO)} names {relative!r}, which is not a file ({target})"
            checked += 1
    # the conda env and the six report captions at least
    assert checked >= 7, checked


def test_snakemake_lint_is_clean(tmp_path):
    workdir = make_workdir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--lint"],
        cwd=workdir, capture_output=True, text=True, env=job_environment(),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in output, output


def test_snakefile_imports_this_checkouts_package(tmp_path):
    """Parsing uses the same `unseen` as the jobs, even when another copy comes first on the path.

    A shadow `unseen` that refuses to be imported sits first on PYTHONPATH (where
    a stale pip-installed copy would also win); the dry run must still plan the
    jobs, i.e. the Snakefile imported the checkout's package.
    """
    shadow = tmp_path / "shadow" / "unseen"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('the Snakefile imported a shadow copy of unseen, not the checkout')\n"
    )
    workdir = make_workdir(tmp_path / "work")
    env = job_environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow.parent), env.get("PYTHONPATH")]))
    # the shadow really is what a plain `import unseen` finds in this environment
    plain = subprocess.run(
        [sys.executable, "-c", "import unseen"], cwd=workdir, capture_output=True, text=True, env=env
    )
    assert "shadow copy" in plain.stderr, plain.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-n", "--quiet", "rules"],
        cwd=workdir, capture_output=True, text=True, env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert re.search(r"^train_fold_model\s+5$", output, re.MULTILINE), output
