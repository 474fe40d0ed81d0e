"""Helpers shared by the benchmark scripts: machine description, results files, GPU busy time.

Not a test and not part of the package; the scripts import it from this folder.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: torch.device) -> dict:
    """Where a benchmark ran: device type and name, CPU, torch and Python versions."""
    info = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
    }
    return info


def command_line(script: str | Path, argv: list[str] | None) -> str:
    """``python <script relative to the repository> <arguments>`` as one shell line.

    ``argv`` None means the process's own arguments (``sys.argv[1:]``).
    """
    script = Path(script).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return shlex.join(["python", str(shown), *(sys.argv[1:] if argv is None else argv)])


def write_result(name: str, device: torch.device, result: dict, command: str,
                 results_dir: str | Path = RESULTS_DIR) -> Path:
    """Write ``<results_dir>/<name>_<device type>.json`` with the machine, command and date."""
    out = Path(results_dir) / f"{name}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    full = {
        **result,
        "machine": machine(device),
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out.write_text(json.dumps(full, indent=2) + "\n")
    return out


def busy_fraction(intervals: list[tuple[float, float]]) -> float | None:
    """Fraction of the span from the first start to the last end covered by any interval.

    ``intervals``: (start, end) pairs in one time unit, e.g. GPU kernels in
    microseconds; overlapping intervals (kernels on several streams) count once.
    None for no intervals.
    """
    if not intervals:
        return None
    spans = sorted(intervals)
    covered, cur_start, cur_end = 0.0, spans[0][0], spans[0][1]
    for start, end in spans[1:]:
        if start > cur_end:
            covered += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    covered += cur_end - cur_start
    total = max(e for _, e in spans) - spans[0][0]
    return covered / total if total > 0 else 1.0


# Chrome-trace categories of work on the GPU in torch.profiler's export.
GPU_TRACE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def gpu_intervals_from_trace(trace: dict) -> list[tuple[float, float]]:
    """(start, end) in microseconds of every GPU kernel, copy and memset of a Chrome trace."""
    return [
        (float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)))
        for e in trace.get("traceEvents", [])
        if e.get("cat") in GPU_TRACE_CATEGORIES and "ts" in e
    ]


def profile_gpu_busy(run) -> float | None:
    """Run ``run()`` under torch.profiler (CUDA activity) and return the GPU busy fraction.

    Busy = union of kernel, copy and memset time over the span from the first to
    the last of them (the host-side launch gaps are what it exposes). None
    without CUDA.
    """
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    return busy_fraction(gpu_intervals_from_trace(trace))
