"""Shared helpers: real Snakemake runs of the workflow in temporary directories."""

from __future__ import annotations

import base64
import copy
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def deep_update(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def benchmark_script(name: str):
    """Import benchmarks/<name>.py as a module (the folder is not a package)."""
    import importlib.util

    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_workdir(path: Path, changes: dict | None = None) -> Path:
    """A working directory with config/config.yaml = the default config plus ``changes``."""
    (path / "config").mkdir(parents=True, exist_ok=True)
    config = deep_update(DEFAULT_CONFIG, changes or {})
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
        *args,
    ]


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake on ``workdir``; on failure with ``check`` show its output and job errors."""
    proc = subprocess.run(
        snakemake_command(workdir, *args), capture_output=True, text=True, env=job_environment()
    )
    if check and proc.returncode != 0:
        failed_logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}"
            for p in sorted((workdir / "logs").rglob("*.log"))
            if "Error" in p.read_text()
        )
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}\n{failed_logs}")
    return proc


def assert_same_outputs(a: Path, b: Path) -> None:
    """Two runs made the same folds, score tables, stage tables and coresets, byte for byte,
    and the same retrain metrics (summary.parquet, timings aside)."""
    from unseen.compare import compare_results

    files = compare_results(a / "results", b / "results")
    assert len(files) > 0 and (files["status"] == "identical").all(), files[files.status != "identical"]
    timings = ["wall_seconds", "train_samples_per_s", "scoring_wall_seconds"]
    summaries = [pd.read_parquet(run / "results/summary.parquet").drop(columns=timings)
                 for run in (a, b)]
    pd.testing.assert_frame_equal(*summaries)


def api_scoring_kwargs(config: dict) -> dict:
    """unseen.api keyword arguments that train scoring models as a run of ``config`` does."""
    scoring = config["scoring_model"]
    return dict(model=scoring, train=scoring["train"], budget=config["budget"]["scoring"],
                record_epochs=config["record_epochs"], threads=1)


def job_environment() -> dict[str, str]:
    """The test interpreter's folder first on PATH, so jobs' `python` is the one under test.

    (A version-manager shim in front of it would also cost every job a fraction of a second.)
    """
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule name -> number of jobs a dry run would execute."""
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", *args)
    counts: dict[str, int] = {}
    in_table = False
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(parts[0]) <= {"-"}:
                break
    return counts


def finished_outputs(workdir: Path, outputs: list[Path]) -> list[Path]:
    """Outputs that exist and that Snakemake has recorded as complete.

    Snakemake marks each output of a running job in .snakemake/incomplete (file
    name: the path, URL-safe base64) and clears the mark when the job succeeds.
    """
    marks = workdir / ".snakemake" / "incomplete"

    def marked(path: Path) -> bool:
        rel = str(path.relative_to(workdir)).encode()
        return (marks / base64.urlsafe_b64encode(rel).decode()).exists()

    return [p for p in outputs if p.exists() and not marked(p)]


def killed_and_resumed_run(workdir: Path) -> dict:
    """Run the workflow in ``workdir``, SIGKILL it like a lost node, resume as the README says.

    The kill lands once two fold models have finished. Returns what the resume
    test checks: the fold models finished at the kill (path -> mtime_ns), whether
    the summary existed then, and the fold models the resume planned.
    """
    k = yaml.safe_load((workdir / "config" / "config.yaml").read_text())["folds"]["k"]
    proc = subprocess.Popen(
        snakemake_command(workdir, "--cores", "2"), env=job_environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    folds = [workdir / f"results/seed0/folds/fold{i}/predictions.npz" for i in range(k)]
    deadline = time.time() + 300
    while len(finished_outputs(workdir, folds)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running jobs at once
    proc.wait()
    record = {
        "finished": {str(p): p.stat().st_mtime_ns for p in finished_outputs(workdir, folds)},
        "summary_at_kill": (workdir / "results/summary.parquet").exists(),
    }
    run_snakemake(workdir, "--unlock")
    record["planned_fold_models"] = planned_jobs(workdir, "--rerun-incomplete").get("train_fold_model", 0)
    run_snakemake(workdir, "--cores", "2", "--rerun-incomplete")
    return record


@pytest.fixture(scope="session")
def default_run(tmp_path_factory, worker_id) -> Path:
    """One complete run of the default config (digits, K=5, all methods), made once per session.

    Made the way a user makes it after a crash: killed once two fold models have
    finished, then resumed (:func:`killed_and_resumed_run`; its record is
    ``<run>.kill.json`` next to it, for the resume test). Test files run on
    parallel workers; the first worker that needs the run makes it under a lock
    in the session's shared temporary folder, the others wait and read it.
    Tests only read it (or copy it).
    """
    # the folder every worker of this session shares (pytest -n 0: its own)
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    workdir = shared / "default_run"
    with open(shared / "default_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not kill_record(workdir).exists():
            make_workdir(workdir)
            kill_record(workdir).write_text(json.dumps(killed_and_resumed_run(workdir)))
    return workdir


def kill_record(run: Path) -> Path:
    """Where :func:`default_run` keeps its :func:`killed_and_resumed_run` record."""
    return run.parent / f"{run.name}.kill.json"


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core plus one (at most 4, pyproject's --maxprocesses).

    The extra worker takes the SLURM test, which spends its minutes mostly
    waiting for SLURM; its jobs run at a higher CPU priority (.ci/slurm: slurmd
    is niced -10), so the other workers keep every core busy meanwhile.
    """
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(config, items):
    """The SLURM test first, then the files with workflow runs, the quick unit tests last.

    ``pytest`` runs test files on parallel workers (pyproject: ``-n``,
    ``--dist loadfile``, in this order). Most of the SLURM test's time is
    waiting for SLURM, which the other workers fill; long files early and short
    ones last keep every worker busy to the end. (When the SLURM test stops its
    cluster, stop_cluster.sh makes SLURM's client fail at once, so later
    snakemake starts do not wait for the stopped controller.)
    """
    items.sort(key=lambda item: (item.get_closest_marker("slurm") is None,
                                 item.get_closest_marker("workflow") is None))
