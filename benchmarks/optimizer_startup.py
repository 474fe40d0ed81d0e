"""Benchmark (not a test): what ``torch.optim.SGD`` adds to a training job's start.

Our trainer's SGD step is written out with foreach ops (:class:`unseen.optim.NesterovSGD`,
checked against ``torch.optim.SGD`` in tests/test_speed_recipe.py) because
building a ``torch.optim`` optimizer imports TorchDynamo on its first use. Every
training job pays that once, and the default run has 23 of them.

Each sample is a fresh interpreter that imports torch, builds a small MLP and
takes one SGD step with either optimizer; rounds alternate the two, and the
median wall time per optimizer is reported (start-up included)::

    python benchmarks/optimizer_startup.py --repeats 7

writes ``benchmarks/results/optimizer_startup_cpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import REPO, RESULTS_DIR, command_line, write_result  # noqa: E402

ONE_STEP = {
    "unseen NesterovSGD": (
        "from unseen.optim import NesterovSGD\n"
        "opt = NesterovSGD(list(model.parameters()), momentum=0.9, weight_decay=5e-4)\n"
        "loss.backward(); opt.step(0.05)\n"
    ),
    "torch.optim.SGD": (
        "opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,"
        " weight_decay=5e-4)\n"
        "loss.backward(); opt.step()\n"
    ),
}
SETUP = (
    "import torch\n"
    "torch.manual_seed(0)\n"
    "model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))\n"
    "loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 64)), torch.arange(8))\n"
)


def seconds_to_first_step(optimizer: str) -> float:
    """Wall seconds of a fresh interpreter that takes one step with ``optimizer``."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", SETUP + ONE_STEP[optimizer]], check=True, cwd=REPO,
                   capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="fresh interpreters per optimizer")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)

    samples: dict[str, list[float]] = {name: [] for name in ONE_STEP}
    for _ in range(args.repeats):
        for name in ONE_STEP:  # interleaved, so drift in machine load hits both alike
            samples[name].append(round(seconds_to_first_step(name), 3))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    result = {
        "benchmark": "optimizer_startup",
        "median_seconds_to_first_step": medians,
        "torch_optim_extra_seconds": round(
            medians["torch.optim.SGD"] - medians["unseen NesterovSGD"], 3),
        "samples": samples,
        "repeats": args.repeats,
    }
    out = write_result("optimizer_startup", torch.device("cpu"), result,
                       command_line(__file__, argv), args.results_dir)
    print(f"first step: {medians}; torch.optim adds {result['torch_optim_extra_seconds']:.2f} s"
          f" per job start; wrote {out}")
    return out


if __name__ == "__main__":
    main()
