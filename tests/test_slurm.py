"""The workflow on a real one-node SLURM cluster, through the project's profile.

The module fixture starts the cluster with ``.ci/slurm/start_cluster.sh``
(installs slurmctld/slurmd/slurm-client/munge from apt when missing; needs root)
and stops it at the end with ``stop_cluster.sh`` (only if it was not already
running). Where SLURM cannot be had, the tests are skipped with the reason;
set ``UNSEEN_REQUIRE_SLURM=1`` (CI) to turn such a skip into a failure.

One SLURM pipeline run serves every check, done the way the README ("Running on a SLURM cluster") tells
users to:

1. ``snakemake --profile profiles/slurm`` is started and SIGKILLed once some
   fold models have finished; the run's leftover jobs are cancelled by its run
   id (``scancel --name``), then ``--unlock``;
2. the same command is run again and completes. In this second run one job
   (``finalize_unseen_coreset``) fails on its first attempt, injected from
   outside the product by a ``python`` shim early on PATH (sbatch exports the
   environment), and the profile's ``retries: 1`` resubmits it.

The checks read the job logs (first line: ``slurm_job_id=...
cuda_visible_devices=...``), the outputs, and slurmctld (``scontrol show job``;
MinJobAge=600 in the test cluster keeps finished jobs there for ten minutes).
A local run (``--cores 1``, started first and run alongside) of the same config is the
reference for results.

Beside it, started first, a second small run checks a training longer than its SLURM time limit
(one minute) with the profile's ``--signal=USR1@...`` line: stopped before the limit (and again
in the attempt the profile's retries resubmit), then resumed by the same command with a longer
limit for the rule, and equal to a local uninterrupted training (its own reference run).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import (
    REPO, assert_same_outputs, finished_outputs, job_environment, make_workdir, planned_jobs,
    run_snakemake, snakemake_command,
)

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CI = REPO / ".ci" / "slurm"
PROFILE = REPO / "profiles" / "slurm"
K = 2
# Small but with every kind of job: folds, shards, aggregation, two stages
# (stage model + stage scoring + next-stage selection), random and full
# baselines, retrains, summary.
SMALL = {
    "folds": {"k": K},
    "scorers": ["el2n"],
    "pruning_rates": [0.5],
    "stages": [0.5, 1.0],
    "methods": ["full", "random", "unseen"],
    "record_epochs": [],
    "scoring_model": {"train": {"epochs": 3}},
    "final_model": {"train": {"epochs": 3}},
    "selection": {"strategy": ["top"]},
}
# The rules the profile gives a GPU (test_profile.py: exactly the rules that train).
TRAINING_RULES = {rule for rule, resources in
                  yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"].items()
                  if resources.get("gpu")}
# Test-only overrides on top of the profile: poll SLURM every 2 s instead of 20 s
# (3 x 2 s is still far below the test cluster's MinJobAge), and make the
# retry explicit although the profile already has it.
SLURM_ARGS = ("--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "2", "--retries", "1")
JOB_LINE = re.compile(r"slurm_job_id=(\S+) cuda_visible_devices=(\S+)")


def _unavailable(reason: str):
    if os.environ.get("UNSEEN_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (UNSEEN_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


def _cluster_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return "is UP" in ping.stdout


@pytest.fixture(scope="module")
def slurm_cluster():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable("the one-node SLURM test cluster needs root (apt-get, slurmd as root)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed")
    was_up = _cluster_up()
    start = subprocess.run(
        ["bash", str(CI / "start_cluster.sh")], capture_output=True, text=True, timeout=900,
    )
    if start.returncode != 0 or not _cluster_up():
        subprocess.run(["bash", str(CI / "stop_cluster.sh")], capture_output=True)
        _unavailable(
            "could not install or start the one-node SLURM cluster "
            f"(start_cluster.sh exit {start.returncode}):\n{start.stdout[-2000:]}\n{start.stderr[-2000:]}"
        )
    yield
    if not was_up:  # leave a cluster someone else started alone
        subprocess.run(["bash", str(CI / "stop_cluster.sh")], capture_output=True, text=True)


def _slurm_env(shim_dir: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def _write_fail_once_shim(shim_dir: Path, marker: Path) -> None:
    """A ``python`` that fails the first ``python -m unseen finalize`` it sees, once.

    The rules call ``python -m unseen <command>`` through PATH; sbatch passes
    the environment on (--export=ALL). The failed attempt's SLURM job id is
    left in ``marker``/job_id. Everything else runs the real interpreter.
    """
    shim_dir.mkdir()
    shim = shim_dir / "python"
    shim.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case " $* " in
          *" -m unseen finalize "*)
            if mkdir {marker} 2>/dev/null; then
              echo "${{SLURM_JOB_ID:-none}}" > {marker}/job_id
              echo "test_slurm: injected failure of the first attempt" >&2
              exit 1
            fi ;;
        esac
        exec {sys.executable} "$@"
        """))
    shim.chmod(0o755)


def _squeue_ids(run_id: str, states: str = "PENDING,RUNNING,CONFIGURING,COMPLETING") -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", f"--name={run_id}", "-t", states, "-o", "%i"], capture_output=True, text=True,
    ).stdout
    return out.split()


def _job_states() -> dict[str, str]:
    """SLURM job id -> state, finished jobs included (kept MinJobAge seconds)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _log_job_id(log: Path) -> str | None:
    try:
        match = JOB_LINE.search(log.read_text().split("\n", 1)[0])
    except FileNotFoundError:
        return None
    return match.group(1) if match else None


def _dag_jobs(workdir: Path) -> dict[str, tuple[str, list[str]]]:
    """Job log -> (rule, outputs) for every job of the workflow, from a dry run.

    (``--detailed-summary`` would not do: it takes the log from the job's
    metadata, which the killed snakemake never wrote for the jobs it had not
    seen finish.)
    """
    proc = run_snakemake(workdir, "-n", "--forceall")
    jobs: dict[str, tuple[str, list[str]]] = {}
    rule, outputs = "", []
    for line in (proc.stdout + proc.stderr).splitlines():
        text = line.strip()
        if re.fullmatch(r"(local)?rule \w+:", text):
            rule, outputs = text.split()[1][:-1], []
        elif text.startswith("output: "):
            outputs = text[len("output: "):].split(", ")
        elif text.startswith("log: "):
            jobs[text[len("log: "):]] = (rule, outputs)
    return jobs


def _results_files(workdir: Path) -> list[Path]:
    return [
        p for p in (workdir / "results").rglob("*")
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".partial"))
    ]


def _job_logs(workdir: Path) -> dict[Path, tuple[str, str]]:
    """Job log -> (slurm_job_id, cuda_visible_devices) from its first line."""
    out = {}
    for path in sorted((workdir / "logs").rglob("*.log")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        match = JOB_LINE.search(first)
        assert match, f"{path}: first line has no job context: {first!r}"
        out[path] = (match.group(1), match.group(2))
    return out


def _scontrol_job(job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "-d", "show", "job", job_id], capture_output=True, text=True,
    ).stdout


@dataclass
class SlurmRun:
    workdir: Path
    expected_jobs: dict[str, int]
    rule_of: dict[Path, str]  # job log -> rule
    run_ids: list[str]
    killed_output: str
    finished_at_kill: dict[Path, int]
    leftover_jobs: list[str]
    resume_output: str
    fail_marker: Path
    plan_after_kill: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def local_run_started(tmp_path_factory):
    """The local reference run of the same config, started first in the background.

    It runs while the SLURM run below mostly waits for SLURM (job start-up,
    status polls); ``local_run`` waits for it to finish.
    """
    workdir = make_workdir(tmp_path_factory.mktemp("local"), SMALL)
    log = workdir.parent / "local_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(snakemake_command(workdir, "--cores", "1"), stdout=out,
                                stderr=subprocess.STDOUT, env=job_environment())
    yield workdir, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def local_run(local_run_started) -> Path:
    workdir, proc, log = local_run_started
    if proc.wait(timeout=900) != 0:
        pytest.fail(f"the local reference run failed:\n{log.read_text()[-4000:]}")
    return workdir


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, time_limited_started, local_run_started, tmp_path_factory) -> SlurmRun:
    base = tmp_path_factory.mktemp("slurm")
    workdir = make_workdir(base / "run", SMALL)
    marker = base / "failed_once"
    _write_fail_once_shim(base / "bin", marker)
    env = _slurm_env(base / "bin")
    dag = _dag_jobs(workdir)
    assert dag["logs/seed0/train_fold_model/fold0.log"][0] == "train_fold_model"
    # every job the workflow plans has a log (the target rule `all`, run inside
    # snakemake, has none)
    expected = dict(Counter(rule for rule, _ in dag.values()))
    log_of = {out: log for log, (_, outputs) in dag.items() for out in outputs}

    # 1. Start, and SIGKILL the submitting snakemake once SLURM reports a fold
    #    model's job COMPLETED (outputs of a job SLURM still runs can be
    #    removed when that job is cancelled, even if its command had finished).
    first_log = base / "first_run.log"
    with open(first_log, "w") as out:
        proc = subprocess.Popen(
            snakemake_command(workdir, *SLURM_ARGS), stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
    fold_logs = [workdir / f"logs/seed0/train_fold_model/fold{k}.log" for k in range(K)]
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        states = _job_states()
        if any(states.get(_log_job_id(log)) == "COMPLETED" for log in fold_logs):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    candidates = {p: p.stat().st_mtime_ns for p in finished_outputs(workdir, _results_files(workdir))}
    states = _job_states()
    log_jobs = {log: _log_job_id(log) for log in (workdir / "logs").rglob("*.log")}
    killed_output = first_log.read_text()
    run_ids = re.findall(r"SLURM run ID: (\S+)", killed_output)
    assert len(run_ids) == 1, killed_output

    # 2. As the README ("Running on a SLURM cluster") says: cancel the run's leftover jobs, unlock, rerun.
    leftover = _squeue_ids(run_ids[0])
    subprocess.run(["scancel", f"--name={run_ids[0]}"], check=True)
    deadline = time.time() + 60
    while _squeue_ids(run_ids[0]) and time.time() < deadline:
        time.sleep(0.5)
    assert not _squeue_ids(run_ids[0]), "leftover jobs did not go away after scancel"
    run_snakemake(workdir, "--unlock")
    # finished before the kill = written by a job that SLURM had as COMPLETED
    finished = {
        p: mtime for p, mtime in candidates.items()
        if states.get(log_jobs.get(workdir / log_of.get(str(p.relative_to(workdir)), "-"))) == "COMPLETED"
    }
    plan = planned_jobs(workdir, "--rerun-incomplete")
    resume = subprocess.run(
        snakemake_command(workdir, *SLURM_ARGS), capture_output=True, text=True, env=env,
    )
    output = resume.stdout + resume.stderr
    if resume.returncode != 0:
        pytest.fail(f"resumed SLURM run failed:\n{output[-8000:]}")
    run_ids += re.findall(r"SLURM run ID: (\S+)", output)
    rule_of = {workdir / log: rule for log, (rule, _) in dag.items()}
    return SlurmRun(workdir, expected, rule_of, run_ids, killed_output, finished, leftover, output, marker, plan)


def test_every_job_ran_as_its_own_slurm_job(slurm_run):
    workdir = slurm_run.workdir
    assert (workdir / "results/summary.parquet").exists()
    assert len(slurm_run.run_ids) == 2 and slurm_run.run_ids[0] != slurm_run.run_ids[1]
    logs = _job_logs(workdir)
    ids = [job_id for job_id, _ in logs.values()]
    assert "none" not in ids, "a job ran outside SLURM"
    assert len(set(ids)) == len(ids), "two jobs share one SLURM job"
    assert len(ids) == sum(slurm_run.expected_jobs.values())
    per_rule: dict[str, int] = {}
    for log in logs:
        rule = slurm_run.rule_of[log]
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == slurm_run.expected_jobs
    # each fold model, score shard, stage model and retrain is there
    assert per_rule["train_fold_model"] == per_rule["score_fold"] == K
    assert per_rule["train_stage_model"] == per_rule["score_stage"] == 1
    assert per_rule["retrain"] == 2 and per_rule["retrain_full"] == 1
    # and SLURM knows each of them as a finished job of one of the two runs
    # (a leftover job of the killed run may have finished its work just before
    # it was cancelled; its outputs were then kept)
    for job_id in ids:
        info = _scontrol_job(job_id)
        run_id = re.search(r"JobName=(\S+)", info).group(1)
        assert run_id in slurm_run.run_ids
        ok = ("COMPLETED", "CANCELLED") if job_id in slurm_run.leftover_jobs else ("COMPLETED",)
        assert re.search(r"JobState=(\S+)", info).group(1) in ok, info


def test_results_equal_a_local_run(slurm_run, local_run):
    assert (slurm_run.workdir / "results/seed0/coresets/unseen-el2n-top/rate0.5/stage2.parquet").exists()
    assert_same_outputs(slurm_run.workdir, local_run)  # byte for byte, and the same metrics


def test_resume_after_killing_snakemake_reruns_nothing_finished(slurm_run):
    finished = slurm_run.finished_at_kill
    folds_done = [p for p in finished if p.name == "predictions.npz" and "folds" in p.parts]
    assert 1 <= len(folds_done) < K, (
        f"the kill should land after some fold models finished:\n{slurm_run.killed_output[-4000:]}"
    )
    # jobs of the killed run were still queued or running in SLURM
    assert slurm_run.leftover_jobs, "nothing was left to cancel: the kill came too late"
    assert slurm_run.plan_after_kill.get("train_fold_model", 0) <= K - len(folds_done)
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rebuilt after the resume"
    # the logs of the finished jobs still name jobs of the killed run
    logs = _job_logs(slurm_run.workdir)
    for path in folds_done:
        fold = path.parent.name
        job_id, _ = logs[slurm_run.workdir / f"logs/seed0/train_fold_model/{fold}.log"]
        assert re.search(r"JobName=(\S+)", _scontrol_job(job_id)).group(1) == slurm_run.run_ids[0]


def test_a_job_that_fails_once_is_retried(slurm_run):
    marker = slurm_run.fail_marker
    assert marker.is_dir(), "the injected failure never happened"
    failed_job = (marker / "job_id").read_text().strip()
    assert failed_job.isdigit()
    workdir = slurm_run.workdir
    log = workdir / "logs/seed0/finalize/unseen-el2n-top_rate0.5.log"
    final_job, _ = _job_logs(workdir)[log]
    assert final_job != failed_job, "the retry must be a new SLURM job"
    assert "JobState=FAILED" in _scontrol_job(failed_job)
    assert "JobState=COMPLETED" in _scontrol_job(final_job)
    # the failed attempt's SLURM log is kept for the user
    kept = list((workdir / ".snakemake/slurm_logs/rule_finalize_unseen_coreset").rglob(f"{failed_job}.log"))
    assert kept, "no SLURM log kept for the failed attempt"
    assert (workdir / "results/seed0/coresets/unseen-el2n-top/rate0.5/coreset.parquet").exists()


def test_training_jobs_request_the_gpu(slurm_run):
    workdir = slurm_run.workdir
    for log, (job_id, cuda) in _job_logs(workdir).items():
        rule = slurm_run.rule_of[log]
        info = _scontrol_job(job_id)
        if rule in TRAINING_RULES:
            # sbatch --gpus=1 from the profile's set-resources; SLURM binds the
            # fake GPU and exports it; torch still runs on the CPU (device auto).
            assert re.search(r"TresPerJob=\S*gpu:1", info), info
            assert "JOB_GRES=gpu:1" in info, info
            assert cuda == "0", f"{log}: CUDA_VISIBLE_DEVICES={cuda}"
            assert re.search(r"\bon cpu\b", log.read_text()), f"{log}: did not train on the CPU"
        else:
            assert "gpu" not in info, f"{log}: a light job requested a GPU:\n{info}"
            assert cuda == "unset", f"{log}: a light job got a GPU ({cuda})"


# --------------------------------------------------------------------------- #
# A training longer than its SLURM time limit
# --------------------------------------------------------------------------- #

#: One fold model (K = 2) whose training takes about 1.5 minutes on one core (1,680 epochs of 674
#: samples; about 13,000 samples/s in a SLURM job here), with a two-minute SLURM time limit
#: (config resources.train.runtime). Only its target is made (data, folds, fold model).
LONG_TRAINING = {**SMALL, "scoring_model": {"arch": "small_cnn", "options": {"width": 16},
                                            "train": {"epochs": 840}},
                 "resources": {"train": {"runtime": 2}}}
LONG_TARGETS = ("results/seed0/folds/fold0/model.pt", "results/seed0/folds/fold0/predictions.npz")
LONG_LOG = "logs/seed0/train_fold_model/fold0.log"
#: The profile's default resources with its signal line at @10 instead of @300: slurmctld checks
#: time limits every 30 s and sends the signal at the first check less than SECONDS + 30 s before
#: the limit (sbatch(1): "up to 60 seconds earlier"), so @10 comes 20 to 50 s into a one-minute
#: job, once the training runs, and at least one check (30 s) before the limit's SIGTERM.
PROFILE_RESOURCES = yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]
SIGNAL_LINE = re.compile(r"'--signal=USR1@(\d+)'")


def _profile_resources(signal_at: int) -> list[str]:
    """The profile's default-resources as ``--default-resources`` arguments (as Snakemake reads a
    profile's), its signal line at ``@signal_at``."""
    resources = dict(PROFILE_RESOURCES)
    resources["slurm_extra"] = SIGNAL_LINE.sub(f"'--signal=USR1@{signal_at}'",
                                               resources.get("slurm_extra", ""))
    return [f"{key}={value}" for key, value in resources.items()]


TIME_LIMIT_ARGS = ("--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "2",
                   "--default-resources", *_profile_resources(signal_at=60))
#: The second run: what a user does after a job hit its limit, a longer limit for the rule. (Under
#: load a one-minute job trains for 10 to 30 s after starting up, so resubmitting it with the
#: same limit, as `retries` does, would take a dozen attempts of this training; that `retries`
#: resubmits a failed job is test_a_job_that_fails_once_is_retried.)
LONGER_LIMIT = ("--set-resources", "train_fold_model:runtime=10")


@dataclass
class TimeLimitedRun:
    workdir: Path
    local: Path  # the reference
    output: str
    attempts: dict[str, str]  # SLURM job id -> the training's log in that job
    slurm: dict[str, str]  # SLURM job id -> `scontrol show job` once the run had ended
    returncodes: dict[str, int] = field(default_factory=dict)  # "cut", "rerun" -> exit status
    procs: list = field(default_factory=list)


def _follow(proc: subprocess.Popen, log: Path, seen: dict[str, str], slurm: dict[str, str]):
    """Keep each attempt's job log by SLURM job id (the next attempt overwrites it) until ``proc``
    ends; then what slurmctld says of each job (it forgets them MinJobAge later)."""
    while True:
        ended = proc.poll() is not None
        try:
            text = log.read_text()
        except FileNotFoundError:
            text = ""
        match = JOB_LINE.search(text.split("\n", 1)[0])
        if match:
            seen[match.group(1)] = text
        if ended:
            break
        time.sleep(0.2)
    slurm.update({job_id: _scontrol_job(job_id) for job_id in seen})


def _cut_then_rerun(workdir: Path, base: Path, run: "TimeLimitedRun") -> None:
    """The run with the one-minute limit (its training is cut in each attempt; it fails unless its
    retry finished the training), then the same command with a longer limit for the rule, as a
    user reruns it; each run's output and exit status kept."""
    for phase, extra in (("cut", ()), ("rerun", LONGER_LIMIT)):
        with open(base / f"slurm-{phase}.log", "w") as out:
            proc = subprocess.Popen(snakemake_command(workdir, *LONG_TARGETS, *TIME_LIMIT_ARGS, *extra),
                                    stdout=out, stderr=subprocess.STDOUT, env=job_environment())
            run.procs.append(proc)
            _follow(proc, workdir / LONG_LOG, run.attempts, run.slurm)
        run.returncodes[phase] = proc.returncode
        run.output += (base / f"slurm-{phase}.log").read_text()


@pytest.fixture(scope="module")
def time_limited_started(slurm_cluster, tmp_path_factory):
    """The fold model through the profile with a one-minute SLURM time limit, and a local run of
    the same target (the reference), started before the main SLURM run and run beside it (both
    mostly wait for SLURM)."""
    base = tmp_path_factory.mktemp("time_limit")
    local = make_workdir(base / "local", LONG_TRAINING)
    with open(base / "local.log", "w") as out:
        reference = subprocess.Popen(snakemake_command(local, *LONG_TARGETS, "--cores", "1"),
                                     stdout=out, stderr=subprocess.STDOUT, env=job_environment())
    workdir = make_workdir(base / "slurm", LONG_TRAINING)
    run = TimeLimitedRun(workdir, local, "", {}, {})
    runner = threading.Thread(target=_cut_then_rerun, args=(workdir, base, run), daemon=True)
    runner.start()
    yield run, reference, runner, base
    for process in (*run.procs, reference):
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def time_limited_run(time_limited_started) -> TimeLimitedRun:
    run, reference, runner, base = time_limited_started
    runner.join(timeout=900)
    if runner.is_alive() or run.returncodes.get("rerun") != 0:
        pytest.fail(f"the time-limited SLURM runs did not finish ({run.returncodes}):\n"
                    f"{run.output[-6000:]}")
    if reference.wait(timeout=600) != 0:
        pytest.fail(f"the local reference run failed:\n{(base / 'local.log').read_text()[-4000:]}")
    return run


def test_a_training_longer_than_its_time_limit_is_stopped_before_it_and_resumed(time_limited_run):
    """`--signal=USR1@SECONDS` reaches the training through SLURM, the job's snakemake and its
    shell: the training saves its state and exits 75 before the time limit (the job FAILED, not
    TIMEOUT), and the rerun's job continues from the saved step until the training is done."""
    assert SIGNAL_LINE.fullmatch(PROFILE_RESOURCES.get("slurm_extra", "")), (
        "profiles/slurm has no default-resources slurm_extra \"'--signal=USR1@SECONDS'\"")
    run = time_limited_run
    *stopped, last = sorted(run.attempts.items(), key=lambda item: int(item[0]))
    assert stopped, f"the training was never stopped:\n{run.output[-4000:]}"
    for job_id, log in stopped:
        assert "stopped by SIGUSR1 after SGD step" in log, log[-3000:]
        info = run.slurm[job_id]
        assert "JobState=FAILED" in info, info  # ended by the job itself, before its limit
        assert "TimeLimit=00:02:00" in info, info
        kept = list((run.workdir / ".snakemake/slurm_logs/rule_train_fold_model").rglob(
            f"{job_id}.log"))
        assert kept and "non-zero exit status 75" in kept[0].read_text(), kept
    assert "resuming from the training state" in last[1] and "stopped by" not in last[1], (
        last[1][-3000:])
    assert "JobState=COMPLETED" in run.slurm[last[0]], run.slurm[last[0]]
    assert not list((run.workdir / "results").rglob("*.training-state.pt"))


def test_the_time_limited_training_equals_an_uninterrupted_local_one(time_limited_run):
    import numpy as np
    import torch

    run = time_limited_run
    local = run.local
    fold = Path("results/seed0/folds/fold0")
    with np.load(run.workdir / fold / "predictions.npz") as a, \
            np.load(local / fold / "predictions.npz") as b:
        assert a.files == b.files
        for key in a.files:
            if "wall" not in key:  # timings
                assert np.array_equal(a[key], b[key]), key
    ours = torch.load(run.workdir / fold / "model.pt", weights_only=True)["state_dict"]
    theirs = torch.load(local / fold / "model.pt", weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
