"""A training stopped by SIGTERM or SIGUSR1 continues where it stopped, bit-identically on CPU
(unseen.resume): in the trainer, in a real job process, and in a real workflow run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unseen import io
from unseen.data import load_dataset, save_cached
from unseen.images import ImageDataset
from unseen.resume import EXIT_RESUMABLE, TrainingCheckpoint, TrainingInterrupted, state_path
from unseen.scorers import StatisticsRecorder
from unseen.subset_training import train_on_subset

MODEL = {"arch": "small_cnn", "options": {"width": 4}}
TRAIN = {"epochs": 4, "batch_size": 64, "lr": 0.05, "crop_padding": 1, "flip": True,
         "lookahead": True}


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits")


class SignalAtStep(TrainingCheckpoint):
    """A checkpoint whose training gets a real ``signum`` from this process after SGD step ``at``."""

    def __init__(self, path: Path, at: int, signum: int = signal.SIGTERM, **kwargs):
        super().__init__(path, key="", **kwargs)
        self.at, self.signum, self.steps = at, signum, 0

    def due(self) -> bool:
        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), self.signum)
        return super().due()


def _train(data, checkpoint=None, recorder=None):
    train_ids = np.arange(0, len(data.train_y), 2)
    record_ids = np.arange(1, len(data.train_y), 2)
    return train_on_subset(data, train_ids, record_ids, MODEL, TRAIN, [1, 2, 3], 7, "cpu", 1,
                           on_record=recorder, checkpoint=checkpoint)


def _same_model(a, b) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
@pytest.mark.parametrize("at", [5, 20])  # inside epoch 1; the last step of epoch 2 (10 an epoch)
def test_a_stopped_training_continues_bit_identically(digits, tmp_path, signum, at):
    whole, _, _, _ = _train(digits)
    path = tmp_path / ".model.pt.training-state.pt"
    with pytest.raises(TrainingInterrupted, match=f"stopped by {signal.Signals(signum).name} after"
                       f" SGD step {at} of"):
        _train(digits, SignalAtStep(path, at, signum, every_seconds=None))
    assert path.is_file()
    assert signal.getsignal(signum) is signal.SIG_DFL  # the handlers are put back
    again, _, _, _ = _train(digits, TrainingCheckpoint(path, key="", every_seconds=None))
    _same_model(whole, again)
    assert np.array_equal(whole.recorded_logits, again.recorded_logits)
    assert whole.recorded_epochs.tolist() == again.recorded_epochs.tolist() == [1, 2, 3, 4]
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in again.history]
    assert again.steps == whole.steps


def test_statistics_records_continue_too(digits, tmp_path):
    labels = digits.train_y[1::2]
    whole_stats = StatisticsRecorder(labels)
    _train(digits, recorder=whole_stats)
    path = tmp_path / "state.pt"
    with pytest.raises(TrainingInterrupted):
        _train(digits, SignalAtStep(path, 25, every_seconds=None), StatisticsRecorder(labels))
    stats = StatisticsRecorder(labels)
    _train(digits, TrainingCheckpoint(path, key="", every_seconds=None), stats)
    assert stats.epochs == whole_stats.epochs
    for name, values in whole_stats.stacked().items():
        assert np.array_equal(values, stats.stacked()[name]), name


def test_periodic_states_change_nothing(digits, tmp_path):
    whole, _, _, _ = _train(digits)
    path = tmp_path / "state.pt"
    checkpoint = TrainingCheckpoint(path, key="", every_seconds=1e-9)  # after every step
    written, _, _, _ = _train(digits, checkpoint)
    _same_model(whole, written)
    assert path.is_file() and torch.load(path, weights_only=True)["step"] == whole.steps


def test_the_first_periodic_state_comes_an_interval_after_the_start(digits, tmp_path):
    """The interval counts from the training's start: a training shorter than it writes nothing
    (no state at SGD step 1 of every training)."""
    path = tmp_path / "state.pt"
    checkpoint = TrainingCheckpoint(path, key="", every_seconds=3600)
    _train(digits, checkpoint)
    assert not path.exists()


@pytest.mark.parametrize("damage", ["truncated", "other training", "not a state", "older version"])
def test_a_bad_state_is_named_and_ignored(digits, tmp_path, caplog, damage):
    whole, _, _, _ = _train(digits)
    path = tmp_path / "state.pt"
    with pytest.raises(TrainingInterrupted):
        _train(digits, SignalAtStep(path, 12, every_seconds=None))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
        said = "it cannot be read"
    elif damage == "other training":
        state = torch.load(path, weights_only=True)
        torch.save({**state, "key": "0" * 32}, path)
        said = "it was made for another training"
    elif damage == "older version":  # the layout before TrainingState (format 1)
        state = torch.load(path, weights_only=True)
        torch.save({**state, "format": 1}, path)
        said = "not a training state of this version"
    else:
        torch.save({"weights": torch.zeros(3)}, path)
        said = "not a training state of this version"
    caplog.set_level("WARNING", logger="unseen.resume")
    again, _, _, _ = _train(digits, TrainingCheckpoint(path, key="", every_seconds=None))
    assert f"ignoring the training state {path}: {said}" in caplog.text
    assert "training starts from step 0" in caplog.text
    _same_model(whole, again)


@pytest.mark.parametrize("other", [{"train": dict(TRAIN, lr=0.02)}, {"seed": 8},
                                   {"train_ids": np.arange(1, 1347, 2)}])
def test_another_training_does_not_take_the_state(digits, tmp_path, caplog, other):
    """The key covers settings, seed and samples: a state saved for another training is not used."""
    path = tmp_path / "state.pt"
    with pytest.raises(TrainingInterrupted):
        _train(digits, SignalAtStep(path, 12, every_seconds=None))
    run = {"train": TRAIN, "seed": 7, "train_ids": np.arange(0, len(digits.train_y), 2), **other}
    caplog.set_level("WARNING", logger="unseen.resume")
    result, _, _, _ = train_on_subset(
        digits, run["train_ids"], np.arange(1, 1347, 2), MODEL, run["train"], [1, 2, 3],
        run["seed"], "cpu", 1, checkpoint=TrainingCheckpoint(path, key="", every_seconds=None))
    assert "it was made for another training" in caplog.text
    assert result.steps == 40


# --------------------------------------------------------------------------- #
# A real job process, stopped by a real signal
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "dataset.npz"
    save_cached(load_dataset("digits"), path)
    return path


def _job(cache: Path, out: Path, epochs: int) -> list[str]:
    import json

    from unseen.folds import assign_folds

    folds = out.parent / "folds.parquet"
    if not folds.exists():
        labels = np.load(cache)["train_y"]
        import pandas as pd

        table = pd.DataFrame({"sample_id": np.arange(len(labels), dtype=np.int64),
                              "label": labels.astype(np.int64),
                              "fold": assign_folds(labels, 3, 0).astype(np.int64)})
        io.write_table(table, folds, io.FOLDS_SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "unseen", "train-scoring-model", "--dataset-cache", str(cache),
            "--folds-table", str(folds), "--fold", "0", "--model", json.dumps(MODEL),
            "--train", json.dumps({**TRAIN, "epochs": epochs}), "--record-epochs", "[1, 2]",
            "--seed", "0", "--device", "cpu", "--state-every-minutes", "0",
            "--checkpoint", str(out / "model.pt"), "--predictions", str(out / "predictions.npz")]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if "wall" not in k}


def test_a_job_stopped_by_sigterm_exits_resumable_and_its_rerun_finishes_it(cache, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_job(cache, whole, 40), check=True, capture_output=True)
    stopped = tmp_path / "stopped"
    command = _job(cache, stopped, 40)
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # the job logs one line per epoch: stop it during epoch 3
        lines.append(line)
        if "epoch 2/40" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == EXIT_RESUMABLE, "".join(lines) + rest
    state = state_path(stopped / "model.pt")
    assert "its training state is in" in rest and str(state) in rest
    assert state.is_file() and not (stopped / "predictions.npz").exists()
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from the training state" in rerun.stderr
    assert not state.exists()  # removed once the outputs are complete
    a, b = _arrays(whole / "predictions.npz"), _arrays(stopped / "predictions.npz")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    wa = torch.load(whole / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(stopped / "model.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_before_training_starts_is_the_default_kill(cache, tmp_path):
    """Outside the training loop nothing is caught: the job dies at once, leaving no state."""
    out = tmp_path / "early"
    proc = subprocess.Popen(_job(cache, out, 40), stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # still importing
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not state_path(out / "model.pt").exists()


# --------------------------------------------------------------------------- #
# A real workflow run: SIGTERM to a training job, and to snakemake itself
# --------------------------------------------------------------------------- #

#: One seed, K = 3, single-step UNSEEN: fold models long enough (a few seconds) to be hit.
RESUMABLE_RUN = {
    "folds": {"k": 3},
    "scorers": ["el2n"],
    "methods": ["unseen_single"],
    "pruning_rates": [0.5],
    "record_epochs": [1, 2],
    "scoring_model": {"arch": "small_cnn", "options": {"width": 4}, "train": {"epochs": 15}},
    "final_model": {"train": {"epochs": 3}},
    "selection": {"strategy": ["top"]},
    "training_state": {"every_minutes": 0},
}
FOLD0_LOG = "logs/seed0/train_fold_model/fold0.log"


def _job_processes(workdir: Path, marker: str = "") -> list[int]:
    """Pids of the python job processes running in ``workdir`` whose command line holds ``marker``.

    Matched by working directory too: other runs (other tests, other users) have job processes
    with the same relative paths, and must never get this test's signals.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if argv and b"python" in Path(argv[0].decode(errors="replace")).name.encode() and any(
                marker.encode() in a for a in argv) and b"unseen" in argv \
                and Path(cwd) == workdir.resolve():
            pids.append(int(entry.name))
    return pids


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and text in path.read_text():
            return
        assert proc.poll() is None, f"snakemake ended before {path} said {text!r}"
        time.sleep(0.1)
    pytest.fail(f"{path} did not say {text!r} within {timeout} s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    from conftest import make_workdir, run_snakemake

    workdir = make_workdir(tmp_path_factory.mktemp("uninterrupted"), RESUMABLE_RUN)
    run_snakemake(workdir, "--cores", "2")
    return workdir


def _same_results(left: Path, right: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "unseen", "compare-runs", str(left / "results"),
                           str(right / "results")], capture_output=True, text=True)
    assert proc.returncode == 0 and " 0 different" in proc.stdout, proc.stdout + proc.stderr
    for path in sorted((left / "results").rglob("metrics.parquet")):
        a = io.read_table(path).drop(columns=["wall_seconds", "train_samples_per_s",
                                              "scoring_wall_seconds"])
        b = io.read_table(right / path.relative_to(left)).drop(
            columns=["wall_seconds", "train_samples_per_s", "scoring_wall_seconds"])
        assert a.equals(b), path


@pytest.mark.workflow
def test_a_training_job_stopped_by_sigterm_is_retried_and_continues(uninterrupted, tmp_path):
    """SLURM's time limit or scancel sends the job SIGTERM: the job saves its state and exits 75,
    Snakemake's retry runs it again, the rerun continues from the saved step, and the run's
    folds, scores, coresets and metrics are those of an uninterrupted run."""
    from conftest import job_environment, make_workdir, snakemake_command

    workdir = make_workdir(tmp_path / "run", RESUMABLE_RUN)
    proc = subprocess.Popen(snakemake_command(workdir, "--cores", "1", "--retries", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=job_environment())
    _wait_for(workdir / FOLD0_LOG, "epoch 3/", proc)
    pids = _job_processes(workdir, "folds/fold0/model.pt")
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGTERM)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    log = (workdir / FOLD0_LOG).read_text()
    assert "resuming from the training state" in log, log[-2000:]
    assert not list((workdir / "results").rglob("*.training-state.pt"))
    _same_results(uninterrupted, workdir)


@pytest.mark.workflow
def test_snakemake_stopped_by_sigterm_then_rerun_finishes_the_same_run(uninterrupted, tmp_path):
    """scancel of the snakemake process (or a local kill): Snakemake stops, a training job it ran
    saved its state on the SIGTERM Snakemake passed on; the same command again finishes the run,
    reruns nothing that had finished, and gives the uninterrupted run's outputs."""
    from conftest import job_environment, make_workdir, snakemake_command

    workdir = make_workdir(tmp_path / "run", RESUMABLE_RUN)
    proc = subprocess.Popen(snakemake_command(workdir, "--cores", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=job_environment(),
                            start_new_session=True)
    _wait_for(workdir / FOLD0_LOG, "epoch 3/", proc)
    finished = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output[-3000:]
    assert not _job_processes(workdir), "a job outlived snakemake"
    rerun = subprocess.run(snakemake_command(workdir, "--cores", "2", "--rerun-incomplete"),
                           capture_output=True, text=True, env=job_environment())
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    for path, mtime in finished.items():  # what had finished is kept, not made again
        assert path.stat().st_mtime_ns == mtime, path
    _same_results(uninterrupted, workdir)
    assert not list((workdir / "results").rglob("*.training-state.pt"))


@pytest.mark.workflow
def test_a_training_job_killed_after_a_periodic_state_continues_from_it(uninterrupted, tmp_path):
    """SIGKILL (the OOM killer, SLURM after KillWait, a lost node) gives no warning: the job dies
    at once and Snakemake fails it. The periodic state it wrote last (training_state.every_minutes;
    here every 0.12 s) survives the failed job; the user's rerun with --rerun-incomplete continues
    from that step, and the run's outputs are those of an uninterrupted run (which wrote no
    periodic states: the interval changes nothing)."""
    from conftest import deep_update, job_environment, make_workdir, snakemake_command

    workdir = make_workdir(tmp_path / "run", deep_update(
        RESUMABLE_RUN, {"training_state": {"every_minutes": 0.002}}))
    proc = subprocess.Popen(snakemake_command(workdir, "--cores", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=job_environment())
    # the first fold model (of three, one at a time) to write a periodic state is killed
    saved_line = "INFO unseen.resume: training state saved at SGD step"
    logs = [workdir / FOLD0_LOG.replace("fold0", f"fold{k}") for k in range(3)]
    end = time.monotonic() + 600
    while not (hit := [p for p in logs if p.is_file() and saved_line in p.read_text()]):
        assert proc.poll() is None and time.monotonic() < end, "no fold model wrote a state"
        time.sleep(0.02)
    log, fold = hit[0], hit[0].stem
    pids = _job_processes(workdir, f"folds/{fold}/model.pt")
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, output[-3000:]  # the job failed; nothing retried it
    killed = log.read_text()
    assert "stopped by" not in killed  # no signal handler ran: a state written before the kill
    total = int(re.search(r"for (\d+) iterations", killed).group(1))
    saved = [int(step) for step in re.findall(r"training state saved at SGD step (\d+)", killed)]
    state = workdir / f"results/seed0/folds/{fold}/.model.pt.training-state.pt"
    assert saved and saved[-1] < total and state.is_file()
    assert torch.load(state, weights_only=True)["step"] == saved[-1]
    assert not (workdir / f"results/seed0/folds/{fold}/predictions.npz").exists()
    rerun = subprocess.run(snakemake_command(workdir, "--cores", "2", "--rerun-incomplete"),
                           capture_output=True, text=True, env=job_environment())
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    resumed = log.read_text()
    assert (f"resuming from the training state {state.relative_to(workdir)} at SGD step"
            f" {saved[-1]}") in resumed, resumed[-2000:]
    assert not list((workdir / "results").rglob("*.training-state.pt"))
    _same_results(uninterrupted, workdir)
