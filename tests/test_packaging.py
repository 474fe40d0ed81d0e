"""environment.yml and pyproject.toml list the same dependencies."""

import re
import tomllib

import yaml

from conftest import REPO

# conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pypi = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        pypi |= {_name(r) for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {
        CONDA_TO_PYPI.get(_name(d), _name(d))
        for d in env["dependencies"]
        if isinstance(d, str) and _name(d) != "python"
    }
    assert conda == pypi
