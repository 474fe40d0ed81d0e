"""Benchmark (not a test): wall time of whole UNSEEN seeds through the real Snakemake workflow.

Runs ``snakemake`` on a fresh working directory with a given config (default
``config/matrix_cifar10_speed.yaml``) and the local GPU profile, in two timed
parts:

1. ``prepare_data`` alone (decoding the images into the shared cache, once per
   data set, shared by every seed): ``data_seconds``;
2. everything else for ``--seeds`` (folds, scoring, stages, baselines,
   retrains, summary and report): ``wall_seconds``, and
   ``wall_seconds_per_seed`` = ``wall_seconds`` / number of seeds.

It also measures the fixed cost every job pays before it does any work
(``job_startup_seconds``: a fresh Python importing the package's job modules
and torch, plus creating the CUDA context when there is a GPU; median of 3) and
reads back, per rule, how many jobs ran. The knobs that decide the wall time
are recorded with it: ``--cores`` (jobs at once) and ``--gpu-slots`` (how many
training jobs share the GPU: the profile gives each training rule ``gpu=1`` and
the pool holds ``gpu-slots`` of them).

    PYTHONPATH=. python benchmarks/pipeline.py --data-root data/cifar10-jpeg \\
        --workdir /tmp/unseen_pipeline --cores 16 --gpu-slots 6

writes ``benchmarks/results/pipeline_<device>.json``. The default run (digits, on
CPU; goal: 60 s for ``snakemake --cores 2`` on an idle 2-core machine)::

    python benchmarks/pipeline.py --config config/config.yaml --profile none \\
        --cores 2 --gpu-slots 0 --goal-seconds-per-seed 60 --workdir /tmp/unseen_default
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
from common import REPO, RESULTS_DIR, command_line, write_result  # noqa: E402

from unseen.train import resolve_device  # noqa: E402

SNAKEFILE = REPO / "workflow" / "Snakefile"
DATA_TARGET = "results/data/dataset.npz"
GOAL_SECONDS_PER_SEED = 180.0  # CIFAR-10 matrix on one H100 (--goal-seconds-per-seed)
# What a job does before its own work: the imports of `python -m unseen <job>`
# (the training jobs' modules) and, on a GPU, the CUDA context.
STARTUP_PROBE = (
    "import time; t=time.perf_counter(); import unseen.cli, unseen.jobs, unseen.train, torch;"
    " cuda=torch.cuda.is_available(); cuda and torch.zeros(1, device='cuda');"
    " cuda and torch.cuda.synchronize(); print(time.perf_counter()-t)"
)


def job_startup_seconds(repeats: int = 3) -> float:
    """Median wall seconds of a fresh interpreter's job imports (+ CUDA context), incl. start."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP_PROBE], check=True, cwd=REPO,
                       capture_output=True, env=_environment())
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def _environment() -> dict[str, str]:
    import os

    # Jobs run `python`: put this interpreter first so they use the same environment.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}


def _snakemake(workdir: Path, args, *extra: str) -> subprocess.CompletedProcess:
    profile = [] if args.profile == "none" else ["--profile", str(Path(args.profile).resolve())]
    command = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
        *profile, "--cores", str(args.cores),
        "--resources", f"gpu={args.gpu_slots}",
        "--configfile", str(workdir / "config" / "config.yaml"), "--replace-workflow-config",
        *extra,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=_environment())
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}"
                         for p in sorted((workdir / "logs").rglob("*.log"))
                         if "Error" in p.read_text())
        sys.exit(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}")
    return proc


def jobs_per_rule(output: str) -> dict[str, int]:
    """Rule -> jobs, from the job-count table Snakemake prints before it starts."""
    counts: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table, counts = True, {}
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(parts[0]) <= {"-"}:
                in_table = False
    return counts


def steps_done(output: str) -> int:
    """The last "N of M steps" count Snakemake reported."""
    found = re.findall(r"(\d+) of (\d+) steps", output)
    return int(found[-1][0]) if found else 0


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "config" / "matrix_cifar10_speed.yaml"))
    p.add_argument("--data-root", default=None,
                   help="dataset root to put into the config (made absolute)")
    p.add_argument("--workdir", required=True, help="fresh working directory (emptied first)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run seeds (default: the config's)")
    p.add_argument("--profile", default=str(REPO / "profiles" / "local-gpu"),
                   help="Snakemake profile folder, or none (Snakemake's defaults, as typed by hand)")
    p.add_argument("--cores", type=int, default=16, help="jobs (CPU cores) at once")
    p.add_argument("--gpu-slots", type=int, default=6,
                   help="training jobs that share the GPU at once (--resources gpu=N)")
    p.add_argument("--device", default="auto", help="device the results file is named after")
    p.add_argument("--goal-seconds-per-seed", type=float, default=GOAL_SECONDS_PER_SEED,
                   help="the wall time per seed (after data preparation) the run should meet")
    p.add_argument("--startup-repeats", type=int, default=3,
                   help="fresh interpreters timed for the job start-up figure (the median is kept)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    config = yaml.safe_load(Path(args.config).read_text())
    if args.seeds is not None:
        config["seeds"] = list(args.seeds)
    if args.data_root:
        config["dataset"]["root"] = str(Path(args.data_root).resolve())
    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    startup = job_startup_seconds(args.startup_repeats)
    print(f"job start-up (imports{' + CUDA context' if torch.cuda.is_available() else ''}):"
          f" {startup:.2f} s", flush=True)
    t0 = time.perf_counter()
    _snakemake(workdir, args, DATA_TARGET)
    data_seconds = time.perf_counter() - t0
    print(f"prepare_data: {data_seconds:.1f} s", flush=True)
    t0 = time.perf_counter()
    proc = _snakemake(workdir, args)
    wall = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    per_rule = jobs_per_rule(output)
    retrains = sorted(workdir.glob("results/seed*/retrain/**/metrics.json"))
    train_seconds = sum(json.loads(m.read_text())["wall_seconds"] for m in retrains)
    n_seeds = len(config["seeds"])
    result = {
        "benchmark": "pipeline",
        "config": str(Path(args.config).resolve().relative_to(REPO))
        if Path(args.config).resolve().is_relative_to(REPO) else args.config,
        "dataset": config["dataset"],
        "seeds": config["seeds"],
        "wall_seconds": round(wall, 1),
        "wall_seconds_per_seed": round(wall / n_seeds, 1),
        "data_seconds": round(data_seconds, 1),
        "jobs": steps_done(output),
        "jobs_per_rule": per_rule,
        "training_jobs": sum(per_rule.get(r, 0) for r in (
            "train_fold_model", "train_fitting_model", "train_stage_model", "choose_strategy",
            "retrain", "retrain_full")),
        "retrain_job_seconds_sum": round(train_seconds, 1),
        "job_startup_seconds": startup,
        "total_seconds": round(data_seconds + wall, 1),
        "knobs": {"profile": args.profile if args.profile == "none"
                  else str(Path(args.profile).resolve().relative_to(REPO))
                  if Path(args.profile).resolve().is_relative_to(REPO) else args.profile,
                  "cores": args.cores, "gpu_slots": args.gpu_slots},
        "goal": {"wall_seconds_per_seed": args.goal_seconds_per_seed},
        "meets_goal": wall / n_seeds <= args.goal_seconds_per_seed,
    }
    out = write_result("pipeline", device, result, command_line(__file__, argv), args.results_dir)
    print(f"{result['jobs']} jobs, {wall:.1f} s ({wall / n_seeds:.1f} s per seed) after "
          f"{data_seconds:.1f} s of data preparation; wrote {out}")
    return out


if __name__ == "__main__":
    main()
