"""Data-parallel training (unseen.distributed): 2 ranks on CPU (gloo), launched by torchrun or by
hand, against one process; a stopped 2-rank training resumes; a dead or hung rank fails the job.

Tolerance of 2 ranks against 1 (documented in docs/datasets_and_training.md): the ranks
average their gradients, so the weights differ from one process's by float32 rounding
(about 1e-8 after 40 steps of the mlp here), the float16 recorded logits by at most 2e-3,
the epoch losses by 1e-6 relative; the samples scored are the same and so is the coreset.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unseen import distributed
from unseen.scorers import el2n, softmax
from unseen.selection import select_top

WORKER = Path(__file__).with_name("ddp_worker.py")
LOGIT_ATOL = 2e-3  # float16 logits (one float16 step near 2 is 2e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update({"OMP_NUM_THREADS": "1", **extra})
    return env


def _one(out: Path, arch: str = "mlp", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), str(out), arch, *args],
                          capture_output=True, text=True, env=_env(), timeout=600)


def _torchrun(out: Path, arch: str = "mlp", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(WORKER), str(out), arch, *args],
        capture_output=True, text=True, env=_env(), timeout=600)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _coreset(logits: np.ndarray, labels: np.ndarray) -> set[int]:
    scores = el2n(softmax(logits[-1].astype(np.float32)), labels)
    ids = np.arange(len(labels))
    return set(select_top(ids, scores, len(ids) // 2).tolist())


def _trained(tmp_path_factory, name: str, launch) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp(name) / f"{name}.npz"
    proc = launch(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _load(out)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, np.ndarray]:
    return _trained(tmp_path_factory, "one", _one)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> dict[str, np.ndarray]:
    return _trained(tmp_path_factory, "two", _torchrun)


def test_two_ranks_train_score_and_select_as_one_process(single, two):
    from unseen.data import load_dataset

    assert int(single["ranks"]) == 1 and int(two["ranks"]) == 2
    assert int(single["steps"]) == int(two["steps"]) == 40  # the config's steps, not halved
    assert single["samples"].tolist() == two["samples"].tolist()  # the global batch
    # every recorded sample once, in the same order
    assert two["logits"].shape == single["logits"].shape == (3, 673, 10)
    assert two["epochs"].tolist() == single["epochs"].tolist() == [1, 2, 4]
    np.testing.assert_allclose(two["losses"], single["losses"], rtol=1e-6)
    assert single["losses"][-1] < single["losses"][0] - 0.3  # it learns: the check means something
    for key in single:
        if key.startswith("w/"):
            np.testing.assert_allclose(two[key], single[key], rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(two["logits"].astype(np.float32),
                               single["logits"].astype(np.float32), rtol=0, atol=LOGIT_ATOL)
    labels = load_dataset("digits").train_y[1::2]
    assert _coreset(two["logits"], labels) == _coreset(single["logits"], labels)


def test_a_stopped_two_rank_training_resumes_bit_identically(two, tmp_path):
    """SIGTERM to both ranks (torchrun passes a job's SIGTERM on to them): rank 0 writes the
    state, both stop; the rerun's ranks load it and finish as the uninterrupted ranks did."""
    state, out = tmp_path / "state.pt", tmp_path / "resumed.npz"
    stopped = _torchrun(out, "mlp", "--state", str(state), "--stop-at", "13")
    assert stopped.returncode != 0 and "stopped by SIGTERM after SGD step 13 of 40" in stopped.stderr
    assert state.is_file() and not out.exists()
    saved = torch.load(state, weights_only=True)
    assert saved["ranks"] == 2 and saved["loss_sum"].shape == (2,)  # each rank's sums
    again = _torchrun(out, "mlp", "--state", str(state))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("resuming from the training state") == 2  # both ranks load it
    resumed = _load(out)
    for key in two:
        assert np.array_equal(resumed[key], two[key]), key


def test_a_bn_model_trains_on_two_ranks_and_records_every_sample_once(tmp_path):
    """small_cnn has BatchNorm: on CPU each rank normalises by its share's statistics (no
    SyncBatchNorm in gloo), so it is not the 1-process training, but the protocol is."""
    out = tmp_path / "cnn.npz"
    proc = _torchrun(out, "small_cnn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _load(out)
    assert int(result["steps"]) == 40 and result["logits"].shape == (3, 673, 10)
    assert np.isfinite(result["logits"].astype(np.float32)).all()


def _by_hand(tmp_path: Path, *args: str, timeout_s: float) -> tuple[list[subprocess.Popen], float]:
    """Two ranks started by hand (torchrun's environment, no agent that would end the others)."""
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp_path / "out.npz"), "mlp",
         "--state", str(tmp_path / "state.pt"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=port, **{distributed.TIMEOUT_ENV: str(timeout_s)}))
        for r in (0, 1)]
    return procs, time.monotonic()


def test_a_dead_rank_fails_the_others_at_once(tmp_path):
    procs, t0 = _by_hand(tmp_path, "--die-at", "5", timeout_s=300)
    try:
        assert procs[1].wait(timeout=120) == 3
        assert procs[0].wait(timeout=120) != 0  # well before the 300 s timeout
    finally:
        for p in procs:
            p.kill()
    assert time.monotonic() - t0 < 120
    said = procs[0].stderr.read()  # gloo: "Connection closed by peer" or "... reset by peer"
    assert "RuntimeError" in said and "by peer" in said, said[-2000:]
    assert not (tmp_path / "out.npz").exists()


def test_a_hung_rank_fails_the_others_after_the_timeout(tmp_path):
    procs, t0 = _by_hand(tmp_path, "--hang-at", "5", timeout_s=15)
    try:
        assert procs[0].wait(timeout=180) != 0
        waited = time.monotonic() - t0
        assert procs[1].poll() is None  # still hanging: the timeout, not its death, ended rank 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert waited >= 15
    assert not (tmp_path / "out.npz").exists()


def test_shares_cover_every_row_once():
    for n in (7, 64, 65):
        for size in (1, 2, 3, 4):
            rows = [list(range(n))[distributed.Ranks(r, size).share(n)] for r in range(size)]
            assert sum(rows, []) == list(range(n))
            assert max(map(len, rows)) - min(map(len, rows)) <= 1


def test_saved_sums_go_back_to_their_ranks_or_to_rank_0():
    stacked = torch.tensor([1.0, 2.0])
    assert distributed.Ranks(1, 2).own(stacked, 2) == 2.0
    assert distributed.Ranks(0, 4).own(stacked, 2) == 3.0  # resumed on another number of ranks
    assert distributed.Ranks(3, 4).own(stacked, 2) == 0.0
    assert distributed.Ranks(0, 1).own(torch.tensor(5.0), 1) == 5.0


def test_the_launch_environment_names_the_ranks():
    assert distributed.launched_ranks({}) is None
    assert distributed.launched_ranks({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (1, 4, 1)
    assert distributed.launched_ranks({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert distributed.launched_ranks(
        {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}) == (1, 2, 1)
    assert distributed.launched_ranks({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


def test_one_gpu_for_every_rank_is_refused_naming_the_key(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"config key 'device': 'cuda:1' would put all 2 ranks"):
        distributed.init_from_environment("cuda:1")


def test_a_batch_smaller_than_the_ranks_is_refused_naming_the_key(monkeypatch):
    """The check in the trainer, with a pretend group of 4 ranks (no collective is reached)."""
    from unseen.models import build_model
    from unseen.train import TrainSettings, train_model

    monkeypatch.setattr("unseen.train.current_ranks", lambda: distributed.Ranks(0, 4))
    images = np.zeros((3, 1, 8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"raise train.batch_size to at least 4"):
        train_model(build_model("mlp", (1, 8, 8), 2), images, np.array([0, 1, 0]),
                    TrainSettings(batch_size=2), 0, torch.device("cpu"),
                    np.zeros(1), np.ones(1))


# --------------------------------------------------------------------------- #
# The workflow's training job on 2 ranks, and its command line
# --------------------------------------------------------------------------- #


def _job_spec(tmp_path: Path, out: Path):
    """A fold model's training job (the spec the rule builds) on the digits data."""
    import pandas as pd

    from unseen import io
    from unseen.data import load_dataset, save_cached
    from unseen.folds import assign_folds
    from unseen.specs import TrainScoringModel

    cache, folds = tmp_path / "dataset.npz", tmp_path / "folds.parquet"
    if not cache.exists():
        data = load_dataset("digits")
        save_cached(data, cache)
        io.write_table(pd.DataFrame({
            "sample_id": np.arange(len(data.train_y), dtype=np.int64),
            "label": data.train_y.astype(np.int64),
            "fold": assign_folds(data.train_y, 2, 0).astype(np.int64)}), folds, io.FOLDS_SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    return TrainScoringModel(
        dataset_cache=str(cache), folds_table=str(folds), fold=0,
        model={"arch": "mlp", "options": {"width": 16}},
        train={"epochs": 3, "batch_size": 64, "lr": 0.2, "crop_padding": 1, "flip": True},
        record_epochs=[1, 2], seed=0, device="cpu", threads=1, state_every_minutes=0,
        checkpoint=str(out / "model.pt"), predictions=str(out / "predictions.npz"))


def test_a_training_job_on_two_ranks_writes_what_one_process_writes(tmp_path):
    """The rule's command with resources gpu: 2 (torchrun, 2 gloo ranks on CPU): rank 0 alone
    writes the model and the record, of the same samples, the same scores up to the
    tolerance, and the same coreset."""
    import shlex

    from unseen.predictions import read_predictions

    runs = {}
    for ranks in (1, 2):
        spec = _job_spec(tmp_path, tmp_path / f"ranks{ranks}")
        command = spec.command(ranks=ranks)
        assert ("torch.distributed.run" in command) == (ranks > 1)
        proc = subprocess.run(shlex.split(command), capture_output=True, text=True, env=_env(),
                              cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if ranks == 2:
            assert "rank 1/2" in proc.stderr and "rank 0 of 2" in proc.stderr
        runs[ranks] = read_predictions(str(tmp_path / f"ranks{ranks}" / "predictions.npz"))
        assert not list((tmp_path / f"ranks{ranks}").glob(".*training-state.pt"))
    one, two = runs[1], runs[2]
    assert np.array_equal(one["sample_ids"], two["sample_ids"])  # each scored sample once
    assert len(np.unique(two["sample_ids"])) == len(two["sample_ids"]) == two["logits"].shape[1]
    assert np.array_equal(one["epochs"], two["epochs"])
    np.testing.assert_allclose(two["logits"].astype(np.float32),
                               one["logits"].astype(np.float32), rtol=0, atol=LOGIT_ATOL)
    assert _coreset(two["logits"], two["labels"]) == _coreset(one["logits"], one["labels"])


def test_resources_train_gpu_makes_every_training_job_data_parallel(tmp_path):
    """resources.train.gpu: 2 launches every training rule's job on 2 ranks (torchrun), and no
    other job; gpu: 1 (one GPU per job) keeps one process."""
    from conftest import make_workdir, run_snakemake

    for gpu, launched in ((2, True), (1, False)):
        workdir = make_workdir(tmp_path / f"gpu{gpu}", {"resources": {"train": {"gpu": gpu}}})
        out = run_snakemake(workdir, "-n", "-p", "--cores", "2").stdout
        commands = [line for line in out.splitlines() if "-m unseen " in line]
        training = [c for c in commands if any(
            f"unseen {job} " in c for job in ("train-scoring-model", "retrain", "choose-strategy"))]
        assert training and len(training) < len(commands)
        for command in commands:
            assert ("--nproc_per_node 2 -m unseen" in command) == (launched and command in training)
