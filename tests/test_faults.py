"""Fault injection: bad input, damaged files and cluster mishaps against real workflow runs.

Each case asserts what docs/reliability.md promises: the run stops before any
job starts where it can, the message names the file or key and the fix, and
no finished output of another job is lost. One tiny run (digits, K=3, one
scorer, one rate, 3 epochs) is made once and copied for every case that
damages it.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import (
    DEFAULT_CONFIG, REPO, deep_update, job_environment, make_workdir, planned_jobs, run_snakemake,
    snakemake_command,
)
from unseen import io
from unseen.config import ConfigError, validate_config
from unseen.preflight import PreflightError, preflight

pytestmark = pytest.mark.workflow

TINY = {
    "folds": {"k": 3},
    "scorers": ["el2n"],
    "methods": ["random", "unseen_single"],
    "pruning_rates": [0.3],
    "record_epochs": [],
    "scoring_model": {"train": {"epochs": 3}},
    "final_model": {"train": {"epochs": 3}},
    "selection": {"strategy": ["top"]},
}
OOF = "results/seed0/scores/oof/el2n.parquet"
MODEL = "results/seed0/folds/fold0/model.pt"
PREDICTIONS = "results/seed0/folds/fold0/predictions.npz"
CACHE = "results/data/dataset.npz"
REPORT_PNG = "results/report/accuracy_vs_rate.png"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = make_workdir(tmp_path_factory.mktemp("finished"), TINY)
    run_snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A private copy of the finished run (mtimes kept, so nothing is out of date)."""
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


def outputs(workdir: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file under results/."""
    return {
        str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (workdir / "results").rglob("*")
        if p.is_file()
    }


def text(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def unseen_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "unseen", *args], capture_output=True, text=True,
        env={**job_environment(), "PYTHONPATH": str(REPO)}, cwd=cwd,
    )


def path_without(shadow: Path, *programs: str) -> str:
    """This PATH with ``programs`` hidden: a folder holding a program gets a shadow
    folder of links to everything else in it."""
    folders = []
    for i, folder in enumerate(os.environ["PATH"].split(os.pathsep)):
        if not any((Path(folder) / p).exists() for p in programs):
            folders.append(folder)
            continue
        copy = shadow / str(i)
        copy.mkdir(parents=True)
        for entry in Path(folder).iterdir():
            if entry.name not in programs:
                (copy / entry.name).symlink_to(entry)
        folders.append(str(copy))
    return os.pathsep.join([str(Path(sys.executable).parent), *folders])


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file of unsigned bytes (the MNIST format), gzip-compressed."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def digits_as_idx(root: Path) -> Path:
    """scikit-learn's digits written as the four MNIST idx files under ``root``."""
    from unseen.data import load_dataset

    data = load_dataset("digits")
    root.mkdir(parents=True)
    write_idx(root / "train-images-idx3-ubyte.gz", data.train_x[:, 0])
    write_idx(root / "train-labels-idx1-ubyte.gz", data.train_y)
    write_idx(root / "t10k-images-idx3-ubyte.gz", data.test_x[:, 0])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", data.test_y)
    return root


def image_folder(root: Path, per_class: dict[str, int], test_per_class: int = 2) -> Path:
    """train/<class>/*.png and test/<class>/*.png of 8x8 grey squares."""
    from PIL import Image

    for split, counts in (("train", per_class), ("test", dict.fromkeys(per_class, test_per_class))):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)).save(
                    root / split / cls / f"{i:03d}.png"
                )
    return root


# ---------------------------------------------------------------------------
# Issue 12, faults 2 and 3: the report command, damaged intermediate files


def test_report_command_writes_a_zip(run_copy):
    proc = run_snakemake(run_copy, "--report", "report.zip")
    assert proc.returncode == 0
    with zipfile.ZipFile(run_copy / "report.zip") as archive:
        names = archive.namelist()
    assert any(n.endswith("report.html") for n in names), names
    assert any(n.endswith("accuracy_vs_rate.png") for n in names), names


def test_truncated_score_table_stops_the_run_and_keeps_the_report(run_copy):
    before = outputs(run_copy)
    with open(run_copy / OOF, "r+b") as handle:
        handle.truncate(100)
    for _ in range(2):  # twice: the second run used to delete results/report/
        proc = run_snakemake(run_copy, "--cores", "2", check=False)
        assert proc.returncode != 0
        assert OOF in text(proc) and f"--forcerun {OOF}" in text(proc)
        assert "no job was started" in text(proc)
    after = outputs(run_copy)
    assert {k: v for k, v in after.items() if k != OOF} == {
        k: v for k, v in before.items() if k != OOF
    }
    # The fix the message names works: the file and everything after it is rebuilt.
    run_snakemake(run_copy, "--cores", "2", "--forcerun", OOF)
    assert io.damage(run_copy / OOF, io.AGGREGATE_SCHEMA) is None
    assert io.read_table(run_copy / OOF, io.AGGREGATE_SCHEMA)["score"].notna().all()
    assert (run_copy / REPORT_PNG).stat().st_mtime_ns > before[REPORT_PNG][1]


@pytest.mark.parametrize(
    "path, damage",
    [
        (MODEL, "truncate"),  # nothing reads model.pt for el2n: the run used to end "successfully"
        (PREDICTIONS, "truncate"),
        ("results/seed0/split/folds.parquet", "empty"),  # a full disk on NFS leaves 0 bytes
        ("results/seed0/retrain/full_steps/random/rate0.3/metrics.json", "truncate"),
        (REPORT_PNG, "truncate"),
    ],
)
def test_damaged_output_stops_before_any_job(run_copy, path, damage):
    before = outputs(run_copy)
    size = (run_copy / path).stat().st_size
    with open(run_copy / path, "r+b") as handle:
        handle.truncate(0 if damage == "empty" else size // 2)
    proc = run_snakemake(run_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    assert path in text(proc) and f"--forcerun {path}" in text(proc)
    after = outputs(run_copy)
    assert {k: v for k, v in after.items() if k != path} == {
        k: v for k, v in before.items() if k != path
    }


def test_jobs_name_a_damaged_input_and_the_fix(run_copy):
    """A file damaged after the Snakefile's check (or read by hand) is named by the job."""
    with open(run_copy / MODEL, "r+b") as handle:
        handle.truncate(200)
    out = run_copy / "shard.parquet"
    proc = unseen_cli("score", "--predictions", str(run_copy / PREDICTIONS), "--checkpoint",
                      str(run_copy / MODEL), "--scorer", "el2n", "--output", str(out))
    assert proc.returncode != 0
    assert f"{run_copy / MODEL} is damaged" in proc.stderr
    assert f"--forcerun {run_copy / MODEL}" in proc.stderr
    assert not out.exists()

    (run_copy / PREDICTIONS).write_bytes(b"\x00" * 64)
    proc = unseen_cli("score", "--predictions", str(run_copy / PREDICTIONS), "--scorer", "el2n",
                      "--output", str(out))
    assert f"{run_copy / PREDICTIONS} is damaged" in proc.stderr
    assert "pickled" not in proc.stderr.splitlines()[-1]


class _RunsAShellCommand:
    """Pickles to ``os.system(command)``: what a planted ``model.pt`` would run when unpickled."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_checkpoint_that_could_run_code_is_refused_and_runs_nothing(tmp_path):
    """model.pt holds plain tensors and values only (read with weights_only=True); a GraNd job
    refuses a crafted pickle or an old-style checkpoint, naming the file and the fix, and runs nothing."""
    import torch

    from unseen import jobs
    from unseen.data import load_dataset, save_cached

    cache, model, predictions = tmp_path / "dataset.npz", tmp_path / "model.pt", tmp_path / "predictions.npz"
    save_cached(load_dataset("digits"), cache)
    job = jobs.ScoringModelJob(str(cache), {"arch": "mlp", "options": {"width": 16}},
                               {"epochs": 2, "batch_size": 64, "lr": 0.05}, [], 0, "cpu", 1,
                               str(model), str(predictions))
    jobs.train_scoring_model(job, np.arange(0, 1347, 2), np.arange(1, 1347, 2), "fold0")
    saved = torch.load(model, weights_only=True)  # the format: nothing but tensors and plain values
    assert saved["train_ids"].tolist() == list(range(0, 1347, 2)) and saved["model_name"] == "fold0"

    def grand_last(checkpoint, output):
        return unseen_cli("score", "--predictions", str(predictions), "--checkpoint", str(checkpoint),
                          "--dataset-cache", str(cache), "--scorer", "grand_last", "--device", "cpu",
                          "--output", str(output))

    proc = grand_last(model, tmp_path / "shard.parquet")
    assert proc.returncode == 0, proc.stderr
    assert len(pq.read_table(tmp_path / "shard.parquet")) == 673

    marker = tmp_path / "code-ran"
    crafted, old_style = tmp_path / "crafted" / "model.pt", tmp_path / "old" / "model.pt"
    crafted.parent.mkdir(), old_style.parent.mkdir()
    torch.save({**saved, "payload": _RunsAShellCommand(f"touch '{marker}'")}, crafted)
    torch.save({**saved, "train_ids": saved["train_ids"].numpy()}, old_style)  # NumPy arrays, as before
    for checkpoint, found in [(crafted, "it refers to posix.system"), (old_style, "numpy")]:
        out = checkpoint.parent / "shard.parquet"
        proc = grand_last(checkpoint, out)
        assert proc.returncode != 0
        message = proc.stderr.strip().splitlines()[-1]
        assert f"{checkpoint} was not loaded" in message and found in message, proc.stderr
        assert f"--forcerun {checkpoint}" in message and "retrain that model" in message
        assert "weights_only=False" not in proc.stderr  # torch's advice to load it anyway is not passed on
        assert not marker.exists() and not out.exists()
    torch.load(crafted, weights_only=False)  # the payload is live: the old loading ran it
    assert marker.exists()


def test_damaged_dataset_cache_is_rebuilt(run_copy):
    (run_copy / CACHE).write_bytes(b"garbage, not an npz archive" * 10)
    dry = run_snakemake(run_copy, "-n", check=False)
    assert "a real run removes and rebuilds it" in text(dry)
    assert (run_copy / CACHE).read_bytes().startswith(b"garbage")  # a dry run changes nothing
    proc = run_snakemake(run_copy, "--cores", "2")  # nothing to do: removed, not yet rebuilt
    assert "removing it: prepare_data rebuilds it" in text(proc)
    assert not (run_copy / CACHE).exists()
    run_snakemake(run_copy, "--cores", "2", CACHE)  # the next run that needs it rebuilds it
    assert io.load_npz(run_copy / CACHE)["train_y"].shape == (1347,)


# ---------------------------------------------------------------------------
# Fault 4: rates that do not survive the path, fault 6: impossible splits,
# fault 7: YAML errors and device: cuda. All stop at parse time (dry run).


IMPOSSIBLE = {
    "collide": ({"pruning_rates": [0.3, 0.30000001]}, ["pruning_rates[1]", "rate0.3", "at most 6"]),
    "exponent": ({"pruning_rates": [0.00001]}, ["pruning_rates[0]", "rate1e-05", "at least 0.0001"]),
    "digits-lost": ({"pruning_rates": [0.1234567]}, ["pruning_rates[0]", "0.123457"]),
    "prunes-nothing": ({"pruning_rates": [0.0003]}, ["pruning_rates[0]", "removes no sample", "0.0004"]),
    "k-over-class": ({"folds": {"k": 140}}, ["folds.k", "class '8' has 131", "at most 131"]),
    "class-balanced": (
        {"selection": {"strategy": ["top", "class_balanced"]}, "pruning_rates": [0.995]},
        ["pruning_rates[0]", "keeps 7 of 1347", "'class_balanced'", "at most 0.9929"],
    ),
    "hard-class-priority": (
        {"extra_selections": ["unseen_single-el2n-hard_class_priority"], "pruning_rates": [0.996]},
        ["pruning_rates[0]", "'hard_class_priority'", "at most 0.9929"],
    ),
    # issue 24, item 7: TINY's fold models train on 449 samples for ceil(126 / 14) = 9 epochs
    "record-epochs-late": (
        {"record_epochs": [5, 10]},
        ["record_epochs", "[10] come after the end of training", "449 samples for 9 epochs",
         "between 1 and 9"],
    ),
}


@pytest.mark.parametrize("changes, expected", IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_impossible_config_is_named_with_key_and_fix(tmp_path, changes, expected):
    # what rules/common.smk runs when Snakemake parses the workflow (the config
    # check, then the preflight checks); the test below shows a real run stop there
    with pytest.raises((ConfigError, PreflightError)) as err:
        config = validate_config(deep_update(DEFAULT_CONFIG, {**TINY, **changes}))
        preflight(config, tmp_path / "results", ["snakemake", "-n"])
    for fragment in expected:
        assert fragment in str(err.value), (fragment, str(err.value))


# one check of the config itself and one that needs the dataset's class sizes
@pytest.mark.parametrize("case", ["collide", "k-over-class"])
def test_impossible_config_stops_at_parse_time(tmp_path, case):
    changes, expected = IMPOSSIBLE[case]
    workdir = make_workdir(tmp_path, {**TINY, **changes})
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    for fragment in expected:
        assert fragment in text(proc), (fragment, text(proc)[-1500:])
    assert not (workdir / "results").exists()


def test_imagefolder_class_smaller_than_k_is_named(tmp_path):
    root = image_folder(tmp_path / "images", {"cat": 6, "dog": 6, "newt": 2})
    workdir = make_workdir(tmp_path / "run", {**TINY, "dataset": {"name": "imagefolder",
                                                                   "root": str(root)}})
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    assert "class 'newt' has 2" in text(proc) and "folds.k" in text(proc)


DEGENERATE_FOLDERS = {
    # one class: every score 0, every accuracy 1.0, and the run used to end "successfully"
    "one-class": ({"cat": 6}, ["dataset 'imagefolder' has 1 class ('cat')", "at least 2 classes"]),
    "empty-class-folder": ({"cat": 6, "dog": 6, "newt": 0},
                           ["folds.k", "class 'newt' has 0", "remove its folder"]),
}


@pytest.mark.parametrize("case", DEGENERATE_FOLDERS)
def test_degenerate_imagefolder_stops_at_parse_time(tmp_path, case):
    per_class, expected = DEGENERATE_FOLDERS[case]
    root = image_folder(tmp_path / "images", per_class)
    workdir = make_workdir(tmp_path / "run", {**TINY, "dataset": {"name": "imagefolder",
                                                                   "root": str(root)}})
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    for part in expected:
        assert part in text(proc), text(proc)
    assert not (workdir / "results").exists() or not any((workdir / "results").rglob("*.parquet"))


def test_every_macos_appledouble_file_is_named_at_parse_time(tmp_path):
    """Issue 24, item 9: ``._*`` files (a copy from macOS) used to fail prepare_data one per
    run, each as an image that cannot be decoded."""
    root = image_folder(tmp_path / "images", {"cat": 6, "dog": 6, "newt": 6})
    doubles = ["train/cat/._000.png", "train/newt/._003.png", "test/dog/._001.png"]
    for name in doubles:
        (root / name).write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X" + bytes(40))
    workdir = make_workdir(tmp_path / "run", {**TINY, "dataset": {"name": "imagefolder",
                                                                   "root": str(root)}})
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    assert f"{root}: 3 macOS AppleDouble file(s)" in text(proc), text(proc)[-2000:]
    for name in doubles:
        assert name in text(proc), text(proc)[-2000:]
    assert f"find {root} -name '._*' -delete" in text(proc)
    assert not (workdir / "results").exists() or not any((workdir / "results").rglob("*.parquet"))


def test_images_of_different_sizes_name_the_odd_file(tmp_path):
    from PIL import Image

    root = image_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    odd = root / "train" / "dog" / "001.png"
    Image.fromarray(np.zeros((16, 12), dtype=np.uint8)).save(odd)  # 12 wide, 16 high
    out = tmp_path / "dataset.npz"
    proc = unseen_cli("prepare-data", "--dataset", f'{{"name": "imagefolder", "root": "{root}"}}',
                      "--output", str(out))
    assert proc.returncode != 0
    assert f"{odd} is 12 x 16 pixels, but {root / 'train/cat/000.png'}" in proc.stderr, proc.stderr
    assert "set dataset.image_size" in proc.stderr and not out.exists()


def test_paths_with_spaces_quotes_and_non_ascii_characters(tmp_path):
    """A working directory and a data root such as "Masterarbeit Jürgen/d'Artagnan data" run to the end."""
    awkward = "dossier d'été ü ñ"
    root = image_folder(tmp_path / f"{awkward} data" / "images", {"cat": 6, "dog": 6, "newt": 6})
    workdir = make_workdir(tmp_path / f"{awkward} run", {**TINY, "dataset": {"name": "imagefolder",
                                                                           "root": str(root)}})
    run_snakemake(workdir, "--cores", "2")
    coreset = pq.read_table(workdir / "results/seed0/coresets/unseen_single-el2n-top/rate0.3/coreset.parquet")
    assert len(coreset) == 13  # round(18 * 0.7)
    assert (workdir / "results/summary.parquet").exists()
    assert "Nothing to be done" in text(run_snakemake(workdir, "--cores", "2"))


def test_corrupt_image_is_named(tmp_path):
    root = image_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    bad = root / "train" / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:40])  # cut short, as by an interrupted copy
    proc = unseen_cli("prepare-data", "--dataset", f'{{"name": "imagefolder", "root": "{root}"}}',
                      "--output", str(tmp_path / "dataset.npz"))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert str(bad) in last and "replace it" in last
    assert not (tmp_path / "dataset.npz").exists()


def test_yaml_error_names_file_and_line(tmp_path):
    workdir = make_workdir(tmp_path, TINY)
    config = workdir / "config" / "config.yaml"
    config.write_text(config.read_text().replace("k: 3", "k: [3"))
    proc = run_snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    line = next(i for i, l in enumerate(config.read_text().splitlines(), 1) if "k: [3" in l)
    assert f"config/config.yaml:{line + 1}:" in text(proc)  # the parser notices on the next line
    assert f"that starts at line {line}" in text(proc)


def test_yaml_error_in_a_configfile_option(tmp_path):
    """Snakemake reads --configfile before the workflow: its message has no line, so it is
    documented, and `unseen check-config` gives the line."""
    workdir = make_workdir(tmp_path, TINY)
    bad = tmp_path / "my.yaml"
    bad.write_text("folds:\n  k: 3\n\tmode: paper\n")
    proc = run_snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0 and "not valid JSON or YAML" in text(proc)
    check = unseen_cli("check-config", str(bad))
    assert check.returncode != 0 and f"{bad}:3:" in check.stderr


CHECK_CONFIG_CASES = {
    # a typo in a key: named, with the keys that exist
    "key-typo": ("prunning_rates: [0.3]\n", ["'prunning_rates' was unexpected", "allowed keys"]),
    # a budget name from another tool's spelling
    "retrain-budget-name": ("budget: {retrain: [full-steps]}\n",
                            ["budget.retrain[0]", "'full_steps', 'epochs'"]),
    "scoring-budget-zero": ("budget: {scoring: 0}\n", ["budget.scoring", "a number > 0"]),
    # a model option the model does not take (issue 24, item 9): used to fail only when
    # the first training job built the model
    "model-option-typo": ("scoring_model: {arch: small_cnn, options: {widht: 16}}\n",
                          ["scoring_model.options.widht", "has no option 'widht'",
                           "allowed options of 'small_cnn': width (default 32)"]),
    # a data root on a node that does not mount it
    "missing-data-root": ("dataset: {name: mnist, root: /nonexistent/mnist}\n",
                          ["dataset 'mnist'", "/nonexistent/mnist does not exist", "To obtain the data"]),
}


def _check_config_file(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    text_of_file, expected = CHECK_CONFIG_CASES[case]
    config = tmp_path / "mine.yaml"
    config.write_text(text_of_file)
    return config, expected


@pytest.mark.parametrize("case", CHECK_CONFIG_CASES)
def test_check_config_names_the_key_or_file_without_a_traceback(tmp_path, case):
    config, expected = _check_config_file(tmp_path, case)
    proc = unseen_cli("check-config", str(config))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{config}:") or f"\n{config}:" in proc.stderr, proc.stderr
    for part in expected:
        assert part in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# a schema error, a check after the schema (model options) and a missing data root
@pytest.mark.parametrize("case", ["key-typo", "model-option-typo", "missing-data-root"])
def test_a_config_that_check_config_refuses_stops_snakemake_at_parse_time(tmp_path, case):
    config, expected = _check_config_file(tmp_path, case)
    workdir = make_workdir(tmp_path / "run", TINY)
    run = run_snakemake(workdir, "-n", "--configfile", str(config), check=False)
    assert run.returncode != 0 and expected[0] in text(run)
    assert not (workdir / "results").exists()


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine without CUDA"
)
def test_cuda_without_cuda_stops_locally_and_warns_on_a_slurm_login_node(tmp_path):
    workdir = make_workdir(tmp_path, {**TINY, "device": "cuda"})
    # Not a login node: no sbatch on PATH, even where this machine has SLURM installed.
    local_env = {**job_environment(), "PATH": path_without(tmp_path / "no_slurm", "sbatch")}
    proc = subprocess.run(snakemake_command(workdir, "-n"), capture_output=True, text=True,
                          env=local_env)
    assert proc.returncode != 0 and "config key 'device'" in text(proc)
    assert "device: auto" in text(proc)
    # A SLURM login node: sbatch on PATH. Only a warning; the plan is made.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {**job_environment()}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(snakemake_command(workdir, "-n"), capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, text(proc)[-2000:]
    assert "no CUDA (a SLURM login node?)" in text(proc)


# ---------------------------------------------------------------------------
# Cases of a shared cluster


def test_full_disk_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "scores.parquet"
    table = io.pd.DataFrame({"sample_id": [1, 2], "label": [0, 1], "fold": [0, 1]})
    io.write_table(table, path, io.FOLDS_SCHEMA)
    before = path.read_bytes()

    def disk_full(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left on device while writing") as err:
        io.write_table(table.assign(fold=[1, 0]), path, io.FOLDS_SCHEMA)
    assert str(path) in str(err.value) and "df -h" in str(err.value)
    assert path.read_bytes() == before  # the finished file is untouched
    assert io.partial_files(tmp_path) == []  # and no temporary is left


def test_sigkill_mid_write_never_leaves_a_complete_looking_file(tmp_path):
    """The scheduler's memory limit kills with SIGKILL: no cleanup code runs."""
    target = tmp_path / "predictions.npz"
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import numpy as np
            from unseen import io
            big = np.zeros((64, 1024, 1024), dtype=np.float32)  # 256 MiB: takes a while
            io.save_npz({str(target)!r}, logits=big)
        """)],
        env={**job_environment(), "PYTHONPATH": str(REPO)},
    )
    deadline = time.time() + 60
    while not io.partial_files(tmp_path) and time.time() < deadline:
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert not target.exists()
    leftovers = io.partial_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".predictions.npz.")
    # The rerun of the job writes the output and removes the dead job's temporary.
    os.utime(leftovers[0], (time.time() - 60, time.time() - 60))
    io.save_npz(target, logits=np.zeros(3))
    assert io.load_npz(target)["logits"].shape == (3,)
    assert io.partial_files(tmp_path) == []


def test_leftover_partial_files_are_ignored_by_the_run(run_copy):
    leftover = run_copy / "results/seed0/folds/fold0/.model.pt.abc123.partial"
    leftover.write_bytes(b"half a checkpoint")
    proc = run_snakemake(run_copy, "--cores", "2")
    assert "Nothing to be done" in text(proc)
    assert "temporary file(s) of killed jobs" in text(proc)


def test_two_runs_in_one_directory(run_copy):
    """The second run is refused by Snakemake's lock; the first finishes untouched."""
    first = subprocess.Popen(
        snakemake_command(run_copy, "--cores", "1", "--forcerun", "retrain"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=job_environment(),
    )
    locks = run_copy / ".snakemake" / "locks"
    deadline = time.time() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and time.time() < deadline:
        time.sleep(0.1)
    second = run_snakemake(run_copy, "--cores", "1", "--forcerun", "summarize", check=False)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:]
    assert second.returncode != 0
    # Which refusal comes first depends on timing: the lock, or the files the first run
    # has marked incomplete (--rerun-incomplete would then still meet the lock).
    assert ("Directory cannot be locked" in text(second) and "--unlock" in text(second)) or (
        "Incomplete files" in text(second)), text(second)[-2000:]
    assert not [p for p in outputs(run_copy) if p.endswith(".partial")]


def test_dataset_changed_under_a_finished_run(tmp_path):
    root = digits_as_idx(tmp_path / "mnist_like")
    workdir = make_workdir(tmp_path / "run", {**TINY, "dataset": {"name": "mnist",
                                                                   "root": str(root)}})
    run_snakemake(workdir, "--cores", "2", "results/seed0/split/folds.parquet")
    assert "Nothing to be done" in text(run_snakemake(workdir, "-n",
                                                      "results/seed0/split/folds.parquet"))
    labels = root / "train-labels-idx1-ubyte.gz"
    relabelled = io.load_npz(workdir / CACHE)["train_y"].copy()
    relabelled[:10] = (relabelled[:10] + 1) % 10  # someone fixed ten labels
    write_idx(labels, relabelled)
    plan = run_snakemake(workdir, "-n", "results/seed0/split/folds.parquet")
    assert "prepare_data" in text(plan) and "split_folds" in text(plan)
    run_snakemake(workdir, "--cores", "2", "results/seed0/split/folds.parquet")
    assert (io.read_table(workdir / "results/seed0/split/folds.parquet")["label"][:10]
            == relabelled[:10]).all()


def test_hand_edited_table_with_a_wrong_column(run_copy):
    table = pq.read_table(run_copy / OOF).rename_columns(
        ["sample_id", "label", "scores", "score_std", "n_scores"]
    )
    pq.write_table(table, run_copy / OOF)
    proc = run_snakemake(run_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    assert OOF in text(proc) and "lacks the column(s) ['score']" in text(proc)
    assert (run_copy / REPORT_PNG).exists()


def test_nan_scores_are_named_by_the_selecting_job(run_copy):
    before = outputs(run_copy)
    table = pq.read_table(run_copy / OOF).to_pandas()
    table.loc[[3, 5], "score"] = np.nan
    io.write_table(table, run_copy / OOF, io.AGGREGATE_SCHEMA)
    proc = run_snakemake(run_copy, "--cores", "1", check=False)
    assert proc.returncode != 0
    log = (run_copy / "logs/seed0/select_stage/unseen_single-el2n-top_rate0.3_stage1.log")
    assert f"{OOF}: 2 of 1347 scores are NaN" in log.read_text()
    assert f"--forcerun {OOF}" in log.read_text()
    # Outputs of other jobs (the random baseline, the report) are kept.
    for kept in (REPORT_PNG, "results/seed0/retrain/full_steps/random/rate0.3/metrics.parquet"):
        assert outputs(run_copy)[kept] == before[kept]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="reads as another user through setpriv (root only)")
def test_unreadable_file_names_the_owner_fix(run_copy):
    """Another user's results directory: a file that is not readable by us."""
    run_copy.chmod(0o755)
    for parent in [run_copy, *run_copy.parents]:
        parent.chmod(parent.stat().st_mode | 0o005)
    (run_copy / OOF).chmod(0o600)
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         f"from unseen import io; io.read_table({str(run_copy / OOF)!r})"],
        capture_output=True, text=True, env={**job_environment(), "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode != 0
    assert f"{run_copy / OOF} cannot be read by user" in proc.stderr
    assert "chmod a+r" in proc.stderr


# ---------------------------------------------------------------------------
# Issue 24: runs that used to end "successfully" with a wrong or meaningless result


DIVERGED = {
    # section whose lr is raised, a target, its log, what the message names
    "scoring-model": ("scoring_model", PREDICTIONS, "logs/seed0/train_fold_model/fold0.log",
                      ["scoring model fold0", PREDICTIONS, "scoring_model.train.lr"]),
    "final-model": ("final_model", "results/seed0/retrain/full/metrics.parquet",
                    "logs/seed0/retrain/full.log",
                    ["retrain for results/seed0/retrain/full/metrics.parquet",
                     "final_model.train.lr"]),
}


@pytest.mark.parametrize("case", DIVERGED)
def test_diverged_training_fails_its_job(tmp_path, case):
    section, target, log, expected = DIVERGED[case]
    workdir = make_workdir(tmp_path, {**TINY, "methods": ["full", "random", "unseen_single"],
                                      section: {"train": {"lr": 1e6}}})
    proc = run_snakemake(workdir, "--cores", "1", target, check=False)
    assert proc.returncode != 0
    message = (workdir / log).read_text()
    assert "training diverged: the loss is nan at SGD step" in message, message[-2000:]
    for fragment in expected + ["Fix: lower", "to 100000"]:
        assert fragment in message, (fragment, message[-2000:])
    assert not (workdir / target).exists()


def test_nan_logits_in_a_predictions_file_are_named(run_copy):
    """A model that diverged before this check (or a hand edit): no scores from NaN logits."""
    before = outputs(run_copy)
    arrays = io.load_npz(run_copy / PREDICTIONS)
    arrays["logits"][-1, :4] = np.nan
    io.save_npz(run_copy / PREDICTIONS, **arrays)
    proc = run_snakemake(run_copy, "--cores", "1", check=False)
    assert proc.returncode != 0
    log = (run_copy / "logs/seed0/score_fold/fold0_el2n.log").read_text()
    assert f"{PREDICTIONS} is damaged: logits holds NaN or infinite values" in log, log[-1500:]
    assert "scoring_model.train.lr" in log and f"--forcerun {PREDICTIONS}" in log
    after = outputs(run_copy)
    assert after[REPORT_PNG] == before[REPORT_PNG]
    assert not [p for p in after if p.startswith("results/seed0/coresets/unseen_single")
                and after[p] != before[p]]


FOLDS = "results/seed0/split/folds.parquet"
CORESET = "results/seed0/coresets/unseen_single-el2n-top/rate0.3/coreset.parquet"


def drop_row(position):
    def edit(table):
        return table.drop(index=table.index[position])
    return edit


HAND_EDITS = {
    # file, edit of its table, what the message says
    "folds-missing-a-sample": (FOLDS, drop_row(100),
                               ["lists 1346 samples but the dataset has 1347",
                                "sample id(s) [100] are missing"]),
    "folds-missing-the-last-sample": (FOLDS, drop_row(-1),
                                      ["lists 1346 samples but the dataset has 1347",
                                       "sample id(s) [1346] are missing"]),
    "coreset-duplicate-rows": (CORESET, lambda t: io.pd.concat([t, t.iloc[:100]]),
                               ["appear more than once"]),
    "coreset-id-out-of-range": (CORESET, lambda t: t.assign(sample_id=t["sample_id"] + 5000),
                                ["are outside 0..1346", "1347 training samples"]),
}


@pytest.mark.parametrize("case", HAND_EDITS)
def test_hand_edited_intermediate_stops_before_any_job(run_copy, case):
    path, edit, expected = HAND_EDITS[case]
    table = pq.read_table(run_copy / path).to_pandas()
    edit(table).to_parquet(run_copy / path, index=False)
    before = outputs(run_copy)
    proc = run_snakemake(run_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    for fragment in [path, f"--forcerun {path}", "no job was started"] + expected:
        assert fragment in text(proc), (fragment, text(proc)[-2000:])
    assert outputs(run_copy) == before  # nothing rerun, nothing deleted


def test_predictions_copied_from_another_fold_are_named(run_copy):
    fold1 = PREDICTIONS.replace("fold0", "fold1")
    shutil.copy(run_copy / fold1, run_copy / PREDICTIONS)  # fold 0's file is now fold 1's
    proc = run_snakemake(run_copy, "--cores", "1", check=False)
    assert proc.returncode != 0
    log = (run_copy / "logs/seed0/aggregate_scores/el2n.log").read_text()
    assert "holds scores of scoring model(s) ['fold1'], not of 'fold0'" in log, log[-1500:]
    assert f"--forcerun {PREDICTIONS}" in log
    # the fix the message names works
    run_snakemake(run_copy, "--cores", "2", "--forcerun", PREDICTIONS)
    assert (io.read_table(run_copy / OOF, io.AGGREGATE_SCHEMA)["n_scores"] == 2).all()


def set_config(workdir: Path, changes: dict) -> None:
    config = workdir / "config" / "config.yaml"
    config.write_text(yaml.safe_dump(deep_update(yaml.safe_load(config.read_text()), changes),
                                     sort_keys=False))


FOLD_PREDICTIONS = [f"results/seed0/folds/fold{k}/predictions.npz" for k in range(3)]
SETTINGS_CHANGES = {
    # config change, the outputs named, what the message says they were made with
    "folds-k": ({"folds": {"k": 4}}, [FOLDS], ["made with folds.k = 3, 1347 samples",
                                               "the config says folds.k = 4, 1347 samples"]),
    "scoring-lr": ({"scoring_model": {"train": {"lr": 0.02}}}, FOLD_PREDICTIONS,
                   ['"lr":0.05', '"lr":0.02']),
}


@pytest.mark.parametrize("case", SETTINGS_CHANGES)
def test_settings_changed_after_snakemake_metadata_was_lost(run_copy, case):
    """.snakemake/ removed (a lock fix) or results/ copied to a new experiment, then a config
    change: Snakemake alone says "Nothing to be done"."""
    changes, named, expected = SETTINGS_CHANGES[case]
    shutil.rmtree(run_copy / ".snakemake")
    set_config(run_copy, changes)
    before = outputs(run_copy)
    proc = run_snakemake(run_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    forcerun = "--forcerun " + " ".join(named)
    for fragment in named + expected + [forcerun, "no job was started", "end any job left over"]:
        assert fragment in text(proc), (fragment, text(proc)[-2000:])
    assert outputs(run_copy) == before
    # the fix the message names: the plan reruns those jobs and the jobs after them
    plan = run_snakemake(run_copy, "-n", "--forcerun", *named)
    assert "split_folds" in text(plan) if case == "folds-k" else "train_fold_model" in text(plan)


@pytest.mark.parametrize("change, rules", [
    ({"final_model": {"train": {"lr": 0.02}}}, {"retrain": 2}),
    ({"selection": {"keep": "lowest"}}, {"select_first_stage": 1, "retrain": 1}),
])
def test_a_changed_setting_reruns_the_jobs_that_read_it(run_copy, change, rules):
    """Snakemake's params trigger sees the settings of the jobs whose command a typed spec builds
    (a params function of input or output is "derived", which the trigger leaves out)."""
    assert planned_jobs(run_copy) == {}
    set_config(run_copy, change)
    plan = planned_jobs(run_copy)
    assert {rule: plan.get(rule, 0) for rule in rules} == rules, plan


@pytest.mark.parametrize("change, planned, kept", [
    # a scorer more: its shards, aggregate, coreset and retrain; the fold models are reused
    ({"scorers": ["el2n", "margin"]},
     {"score_fold": 3, "aggregate_scores": 1, "select_first_stage": 1, "retrain": 1},
     ["train_fold_model", "split_folds", "select_random_coreset"]),
    # a seed more: that seed's jobs only
    ({"seeds": [0, 1]}, {"split_folds": 1, "train_fold_model": 3, "retrain": 2},
     ["prepare_data"]),
    # K 3 -> 4: new folds, so every fold model, score and coreset of the seed, none kept stale
    ({"folds": {"k": 4}}, {"split_folds": 1, "train_fold_model": 4, "score_fold": 4, "retrain": 2},
     ["prepare_data"]),
    # another subset of the data: everything
    ({"dataset": {"subset": 1000}}, {"prepare_data": 1, "split_folds": 1, "train_fold_model": 3,
                                      "retrain": 2}, []),
])
def test_a_config_changed_between_two_runs_reruns_what_it_changes(run_copy, change, planned, kept):
    """The same directory, the config changed between two runs: exactly the jobs whose inputs or
    settings changed are planned (nothing stale reused); the rest is kept (nothing valid redone)."""
    set_config(run_copy, change)
    plan = planned_jobs(run_copy)
    assert {rule: plan.get(rule, 0) for rule in planned} == planned, plan
    assert not set(kept) & set(plan), plan


def test_output_replaced_by_a_job_left_over_from_a_killed_run(run_copy):
    """The README's local resume after a SIGKILL of snakemake, without ending its jobs: the
    leftover job of the old config renames its output into place after the rerun made it."""
    old = (run_copy / PREDICTIONS).read_bytes()
    set_config(run_copy, {"scoring_model": {"train": {"lr": 0.02}}})
    # a config change alone is Snakemake's to handle (its params trigger): not refused
    assert "train_fold_model" in text(run_snakemake(run_copy, "-n"))
    run_snakemake(run_copy, "--cores", "1", PREDICTIONS)  # the rerun makes fold 0 anew
    time.sleep(0.05)
    orphan = run_copy / "results/seed0/folds/fold0/.predictions.npz.orphan.partial"
    orphan.write_bytes(old)  # the leftover job finishes last and renames its file into place
    os.replace(orphan, run_copy / PREDICTIONS)
    proc = run_snakemake(run_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    for fragment in [PREDICTIONS, '"lr":0.05', '"lr":0.02', f"--forcerun {PREDICTIONS}",
                     "end any job left over", "no job was started"]:
        assert fragment in text(proc), (fragment, text(proc)[-2000:])


def test_imagefolder_fingerprint_follows_the_images_not_the_root(tmp_path):
    """An image overwritten in place is a change; the same tree moved elsewhere is not."""
    root = image_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    workdir = make_workdir(tmp_path / "run", {**TINY, "dataset": {"name": "imagefolder",
                                                                   "root": str(root)}})
    run_snakemake(workdir, "--cores", "1", FOLDS)
    moved = tmp_path / "moved" / "images"
    moved.parent.mkdir()
    root.rename(moved)  # mtimes kept, as by mv, cp -a or rsync -a
    set_config(workdir, {"dataset": {"root": str(moved)}})
    assert "Nothing to be done" in text(run_snakemake(workdir, "-n", FOLDS))
    image = moved / "train" / "dog" / "002.png"
    folder_mtime = image.parent.stat().st_mtime_ns
    from PIL import Image

    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(image)  # fixed in place
    assert image.parent.stat().st_mtime_ns == folder_mtime  # the folder does not show it
    plan = run_snakemake(workdir, "-n", FOLDS)
    assert "prepare_data" in text(plan) and "split_folds" in text(plan)


@pytest.mark.parametrize("forcing", [["--forcerun=" + OOF], ["-F"], ["--forceall"]])
def test_every_form_of_forcerun_lets_a_damaged_file_be_rebuilt(run_copy, monkeypatch, forcing):
    """Issue 24, item 9: `--forcerun=FILE`, `-F` and `--forceall` rebuild the damaged file."""
    with open(run_copy / OOF, "r+b") as handle:
        handle.truncate(100)
    monkeypatch.chdir(run_copy)  # where Snakemake parses the workflow
    config = validate_config(yaml.safe_load((run_copy / "config/config.yaml").read_text()))
    with pytest.raises(PreflightError, match="damaged"):
        preflight(config, "results", ["snakemake", "--cores", "2"])
    preflight(config, "results", ["snakemake", "--cores", "2", *forcing])  # what common.smk calls
