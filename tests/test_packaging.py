"""environment.yml, the per-job conda env and pyproject.toml list the same dependencies; no symlinks."""

import re
import subprocess
import tomllib

import pytest
import yaml

from conftest import REPO

# conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch"}
JOB_ENV = REPO / "workflow" / "envs" / "unseen.yaml"
# What runs `snakemake` or the tests, never a job: not in the per-job environment.
# pygments: `snakemake --report` highlights code in the main process, not in a job.
NOT_FOR_JOBS = {"snakemake", "pytest", "pytest-xdist", "hypothesis", "snakemake-executor-plugin-slurm", "pygments"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def _conda_dependencies(path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    return [d for d in env["dependencies"] if isinstance(d, str) and _name(d) != "python"]


def _pypi_names(requirements) -> set[str]:
    return {_name(r) for r in requirements}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pypi = _pypi_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pypi |= _pypi_names(extra)
    conda = {CONDA_TO_PYPI.get(_name(d), _name(d)) for d in _conda_dependencies(REPO / "environment.yml")}
    assert conda == pypi


def test_job_env_holds_the_runtime_dependencies_only():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _pypi_names(project["dependencies"]) - NOT_FOR_JOBS
    job_deps = _conda_dependencies(JOB_ENV)
    names = {CONDA_TO_PYPI.get(_name(d), _name(d)) for d in job_deps}
    assert names == runtime, f"{JOB_ENV.relative_to(REPO)}: missing {runtime - names}, extra {names - runtime}"
    # same version bounds as the development environment, written the same way
    dev = set(_conda_dependencies(REPO / "environment.yml"))
    assert set(job_deps) <= dev, f"version bounds differ from environment.yml: {set(job_deps) - dev}"


def test_no_tracked_file_is_a_symlink():
    """Symlinks break on some checkouts and exports (Windows, zip downloads, some CI caches)."""
    proc = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    listing = proc.stdout
    links = [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000 ")]
    assert not links, f"tracked symlinks (replace each with the real file): {links}"


#: Releases with a known security hole that every declared bound must exclude.
KNOWN_VULNERABLE = {
    "pyarrow": ["14.0.0"],  # CVE-2023-47248: reading an IPC, Feather or Parquet file can run code
}


@pytest.mark.parametrize("path", ["pyproject.toml", "environment.yml", "workflow/envs/unseen.yaml"])
def test_declared_bounds_exclude_releases_with_known_vulnerabilities(path):
    from packaging.requirements import Requirement

    if path.endswith(".toml"):
        requirements = tomllib.loads((REPO / path).read_text())["project"]["dependencies"]
    else:
        requirements = _conda_dependencies(REPO / path)
    for requirement in map(Requirement, requirements):
        for version in KNOWN_VULNERABLE.get(requirement.name.lower(), []):
            assert not requirement.specifier.contains(version), (
                f"{path}: {requirement} admits {requirement.name} {version}, which has a known"
                " vulnerability (tests/test_packaging.py: KNOWN_VULNERABLE)")
