"""`snakemake --profile slurm`, typed as the README says, after `unseen install-profile slurm`.

Snakemake looks a profile name up in its user config folder; the tests point
that folder (XDG_CONFIG_HOME) and HOME at temporary directories, so nothing of
the user's is read or written. Dry runs only: planning needs the SLURM executor
plugin installed, but no cluster.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, job_environment, make_workdir, run_snakemake

SHIPPED = REPO / "profiles" / "slurm" / "config.yaml"


@pytest.fixture
def user_env(tmp_path) -> dict[str, str]:
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the slurm profile needs the SLURM executor plugin")
    return {**job_environment(), "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def _unseen(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unseen", *args], capture_output=True, text=True, env=env)


def _snakemake_from_repo_root(env, *args) -> subprocess.CompletedProcess:
    """`snakemake ARGS` from the repository root, as a user types it (the Snakefile is found there)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True, env=env
    )


def test_profile_by_name_plans_the_jobs_once_installed(user_env, tmp_path):
    workdir = make_workdir(tmp_path / "work")
    command = ("--profile", "slurm", "-n", "--directory", str(workdir))
    before = _snakemake_from_repo_root(user_env, *command)
    assert before.returncode != 0 and "no profile.yaml" in before.stderr, before.stderr

    installed = _unseen(user_env, "install-profile", "slurm")
    assert installed.returncode == 0, installed.stderr
    target = tmp_path / "xdg" / "snakemake" / "slurm" / "config.yaml"
    assert target.read_bytes() == SHIPPED.read_bytes()
    assert str(target.parent) in installed.stdout

    after = _snakemake_from_repo_root(user_env, *command)
    output = after.stdout + after.stderr
    assert after.returncode == 0, output
    assert re.search(r"^total\s+\d+$", output, re.MULTILINE), output
    # the profile is in effect: its partition for every job, and its set-resources
    # give each fold model a GPU although the workflow config asks for none
    fold_resources = re.findall(r"rule train_fold_model:\n(?:\s+.*\n)*?\s+resources: (.*)", output)
    assert len(fold_resources) == 5, output
    for resources in fold_resources:
        assert "slurm_partition=debug" in resources and "gpu=1" in resources, resources


def test_install_profile_keeps_an_edited_copy_unless_forced(user_env, tmp_path):
    target = tmp_path / "xdg" / "snakemake" / "slurm" / "config.yaml"
    assert _unseen(user_env, "install-profile", "slurm").returncode == 0
    again = _unseen(user_env, "install-profile", "slurm")
    assert again.returncode == 0 and again.stdout.startswith("unchanged"), again.stdout + again.stderr

    edited = SHIPPED.read_text().replace('slurm_partition: "debug"', 'slurm_partition: "gpu_a100"')
    assert edited != SHIPPED.read_text()
    target.write_text(edited)
    refused = _unseen(user_env, "install-profile", "slurm")
    assert refused.returncode != 0
    assert str(target.parent) in refused.stderr and "config.yaml" in refused.stderr and "--force" in refused.stderr
    assert target.read_text() == edited

    forced = _unseen(user_env, "install-profile", "slurm", "--force")
    assert forced.returncode == 0 and forced.stdout.startswith("replaced"), forced.stderr
    assert target.read_bytes() == SHIPPED.read_bytes()


def test_install_profile_names_the_profiles_there_are(user_env):
    proc = _unseen(user_env, "install-profile", "no_such_profile")
    assert proc.returncode != 0
    assert "no_such_profile" in proc.stderr and "slurm" in proc.stderr, proc.stderr


def test_both_gpu_profiles_give_a_gpu_to_exactly_the_training_rules(tmp_path):
    """The rules that train (resources from `resources.train`) are the profiles' set-resources."""
    # a GPU count no default has: the jobs that show it take the training resources
    workdir = make_workdir(tmp_path, {"resources": {"train": {"gpu": 7}}})
    plan = run_snakemake(workdir, "-n", "--forceall")
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:\s+.*\n)*?\s+resources: (.*)", plan.stdout + plan.stderr,
                      re.MULTILINE)
    training = {rule for rule, resources in jobs if re.search(r"\bgpu=7\b", resources)}
    assert {"train_fold_model", "choose_strategy", "retrain"} <= training, jobs
    for profile in ("slurm", "local-gpu"):
        config = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
        gpu_rules = {rule for rule, res in config["set-resources"].items() if res.get("gpu")}
        assert gpu_rules == training, profile
