"""Benchmark (not a test): our trainer against a plain PyTorch DataLoader loop.

Both train the same model on the same uint8 images with the same optimiser
(SGD, Nesterov momentum, weight decay, cosine schedule), batch size and
augmentation (random crop with padding and horizontal flip), and then predict
the test set. The plain loop is the usual recipe: a Dataset that turns each
sample into a PIL image and runs ``RandomCrop -> RandomHorizontalFlip ->
ToTensor -> Normalize`` per sample, a shuffling DataLoader with workers, and
``torch.optim.SGD``. Ours gathers batches from one uint8 tensor and augments
them on tensors (``unseen.train.train_model`` / ``predict_logits``).

Each measurement runs in its own process, so peak memory (max RSS of the
process plus its DataLoader workers; on CUDA also the peak allocated device
memory) is per method. Throughput is samples/s of the last epoch (steady
state: DataLoader workers and caches warm) and of inference on the test set.

    PYTHONPATH=. python benchmarks/trainer_throughput.py \\
        --dataset fashion_mnist --root /usr/share/datasets/fashion-mnist

writes ``benchmarks/results/trainer_throughput_<device>.json`` and rewrites the
table in ``docs/benchmarks.md`` from every results file there.

``--compile-modes`` adds a row per torch.compile mode of our trainer
(``TrainSettings.torch_compile``; its compilation falls in the first epoch, the
reported last epoch is steady state) and ``--cudnn-benchmark`` lets cuDNN pick
its algorithms, for every method. On CUDA each of our rows also gets
``gpu_busy_fraction_train``: after the measured training, ``--profile-steps``
more steps run under torch.profiler, and the union of GPU kernel, copy and
memset time is divided by the span from the first to the last of them
(``benchmarks/common.py``); on CPU it is null. ``speedup_vs_plain`` divides
each row's training samples/s by the best plain loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import command_line, profile_gpu_busy  # noqa: E402


def _data(args):
    from unseen.data import load_dataset

    spec = {"name": args.dataset, "root": args.root}
    if args.dataset == "imagefolder":
        spec["in_memory"] = True
    data = load_dataset(spec)
    rng = np.random.default_rng(0)
    train = np.sort(rng.permutation(len(data.train_y))[: args.n_train])
    test = np.arange(min(args.n_test, len(data.test_y)))
    return data, train, test


def _rss_mb(pid: int | str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _child_pids() -> list[str]:
    pids = []
    for task in Path("/proc/self/task").glob("*/children"):
        try:
            pids += task.read_text().split()
        except OSError:
            pass
    return pids


class _MemSampler(threading.Thread):
    """Peak resident memory (MB) of this process plus its live child processes
    (DataLoader workers), sampled every 20 ms. ``ru_maxrss`` of the children is
    no use here: importing torch already runs a short-lived 450 MB helper."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_total = 0.0
        self.peak_workers = 0.0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(0.02):
            workers = sum(_rss_mb(p) for p in _child_pids())
            self.peak_workers = max(self.peak_workers, workers)
            self.peak_total = max(self.peak_total, _rss_mb("self") + workers)


def _peak_memory(device: torch.device, sampler: _MemSampler) -> dict:
    sampler.halt.set()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"peak_rss_mb": round(own, 1), "peak_worker_rss_mb": round(sampler.peak_workers, 1),
           "peak_total_rss_mb": round(max(own, sampler.peak_total), 1)}
    if device.type == "cuda":
        out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


class _GpuSampler:
    """Samples GPU utilisation (%) every 50 ms while a method runs (CUDA only)."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.stop = device, [], threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(0.05):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # no pynvml: fall back to nvidia-smi
                q = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True)
                if q.returncode == 0:
                    self.samples.append(float(q.stdout.split()[0]))

    def __exit__(self, *exc):
        self.stop.set()

    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(args, device) -> dict:
    import dataclasses

    from unseen.models import build_model
    from unseen.train import TrainSettings, predict_logits, train_model

    data, train, test = _data(args)
    mean, std = data.channel_stats()
    torch.manual_seed(0)
    model = build_model(args.model, data.train_x.shape[1:], data.num_classes)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=0.05,
                             crop_padding=args.padding, flip=args.flip,
                             eval_batch_size=args.eval_batch_size,
                             torch_compile=args.torch_compile,
                             cudnn_benchmark=args.cudnn_benchmark)
    with _GpuSampler(device) as gpu:
        result = train_model(model, data.train_x[train], data.train_y[train], settings, 0,
                             device, mean, std)
    last = result.history[-1]
    # A few more steps of the same training under the profiler, after the
    # measurement so that the profiler's own cost does not slow it.
    more = dataclasses.replace(settings, iterations=args.profile_steps)
    busy = profile_gpu_busy(lambda: train_model(
        result.model, data.train_x[train], data.train_y[train], more, 1, device, mean, std))
    _sync(device)
    t0 = time.perf_counter()
    with _GpuSampler(device) as gpu_eval:
        logits = predict_logits(result.model, data.test_x[test], mean, std, device,
                                args.eval_batch_size)
    _sync(device)
    infer_s = time.perf_counter() - t0
    return {
        "train_samples_per_s": round(last["samples_per_s"], 1),
        "train_wall_s": round(result.wall_seconds, 2),
        "infer_samples_per_s": round(len(test) / infer_s, 1),
        "test_accuracy": round(float((logits.argmax(1) == data.test_y[test]).mean()), 4),
        "gpu_util_train_pct": gpu.mean(),
        "gpu_util_infer_pct": gpu_eval.mean(),
        "gpu_busy_fraction_train": None if busy is None else round(busy, 3),
    }


class _PilDataset(torch.utils.data.Dataset):
    """The usual pipeline: one PIL image per sample, torchvision transforms per sample."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = self.images[i]
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        return self.transform(pil), int(self.labels[i])


def run_plain(args, device) -> dict:
    import math

    import torchvision.transforms as T

    from unseen.models import build_model

    data, train, test = _data(args)
    mean, std = data.channel_stats()
    h = data.train_x.shape[2]
    augment = [T.RandomCrop(h, padding=args.padding)] if args.padding else []
    augment += [T.RandomHorizontalFlip()] if args.flip else []
    norm = [T.ToTensor(), T.Normalize(mean.tolist(), std.tolist())]
    cuda = device.type == "cuda"
    loader_kw = dict(num_workers=args.plain_workers, pin_memory=cuda,
                     persistent_workers=args.plain_workers > 0)
    train_set = _PilDataset(data.train_x[train], data.train_y[train], T.Compose(augment + norm))
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                         drop_last=True, **loader_kw)
    torch.manual_seed(0)
    model = build_model(args.model, data.train_x.shape[1:], data.num_classes).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    total = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    loss_fn = torch.nn.CrossEntropyLoss()
    t_all = time.perf_counter()
    with _GpuSampler(device) as gpu:
        for _ in range(args.epochs):
            model.train()
            t0, seen = time.perf_counter(), 0
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = loss_fn(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                seen += len(y)
            _sync(device)
            epoch_rate = seen / (time.perf_counter() - t0)
    train_wall = time.perf_counter() - t_all
    test_set = _PilDataset(data.test_x[test], data.test_y[test], T.Compose(norm))
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=args.eval_batch_size,
                                              **loader_kw)
    model.eval()
    t0, correct = time.perf_counter(), 0
    with _GpuSampler(device) as gpu_eval, torch.no_grad():
        for x, y in test_loader:
            x = x.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                correct += int((model(x).float().argmax(1).cpu() == y).sum())
    _sync(device)
    infer_s = time.perf_counter() - t0
    return {
        "train_samples_per_s": round(epoch_rate, 1),
        "train_wall_s": round(train_wall, 2),
        "infer_samples_per_s": round(len(test) / infer_s, 1),
        "test_accuracy": round(correct / len(test), 4),
        "gpu_util_train_pct": gpu.mean(),
        "gpu_util_infer_pct": gpu_eval.mean(),
    }


def _child(args) -> None:
    from unseen.train import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sampler = _MemSampler()
    sampler.start()
    fn = run_ours if args.method == "ours" else run_plain
    out = fn(args, device)
    out.update(_peak_memory(device, sampler))
    print("RESULT " + json.dumps(out), flush=True)


def _machine(device_name: str) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name,
    }
    if device_name.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


GENERATED_END = "<!-- end of the generated table; text below is kept -->"


def _write_markdown(results_dir: Path, out: Path) -> None:
    """One table over every results file: the figures the README links to."""
    rows = []
    for path in sorted(results_dir.glob("trainer_throughput_*.json")):
        r = json.loads(path.read_text())
        m, s = r["machine"], r["settings"]
        hw = m.get("gpu") or f"{m['cpu_model']} ({m['cpu_cores']} cores, {s['threads']} threads)"
        for name, res in r["methods"].items():
            util = res.get("gpu_util_train_pct")
            busy = res.get("gpu_busy_fraction_train")
            busy = f"{100 * busy:.1f}" if busy is not None else "-"
            rows.append(
                f"| {hw} | {s['dataset']} {s['n_train']} / {s['model']} | {name} | "
                f"{res['train_samples_per_s']:.0f} | {res['infer_samples_per_s']:.0f} | "
                f"{res['peak_rss_mb']:.0f} + {res['peak_worker_rss_mb']:.0f} | "
                f"{res.get('peak_cuda_allocated_mb', '-')} | {util if util is not None else '-'} | "
                f"{busy} | "
                f"{res['test_accuracy']:.3f} | [{path.name}](../benchmarks/results/{path.name}) |"
            )
    header = (
        "# Trainer throughput\n\n"
        "Written by `benchmarks/trainer_throughput.py` (see its docstring and\n"
        "[datasets_and_training.md](datasets_and_training.md#benchmark)); do not edit the table\n"
        "by hand.\n"
        "Same model, data, optimiser, batch size and augmentation for every row of a block.\n"
        "Train samples/s: steady state (last epoch); best of the interleaved rounds (raw file\n"
        "has each round). Memory: peak RSS of the process + peak summed\n"
        "RSS of its DataLoader workers (MB; workers share pages with the parent, so this\n"
        "overstates them); CUDA: peak allocated device memory (MB). GPU util: nvidia-smi's\n"
        "sampled utilisation; GPU busy: kernel time over wall time of profiled steps.\n\n"
        "| hardware | data / model | method | train samples/s | inference samples/s "
        "| peak RSS MB | peak CUDA MB | GPU util % (train) | GPU busy % (profiler) "
        "| test acc | raw |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    # Hand-written text below the marker (the GPU session checklist) is kept.
    kept = ""
    if out.exists() and GENERATED_END in out.read_text():
        kept = out.read_text().split(GENERATED_END, 1)[1]
    out.write_text(header + "\n".join(rows) + "\n\n" + GENERATED_END + kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--padding", type=int, default=2)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1, as the workflow's CPU jobs use)")
    p.add_argument("--plain-workers", type=int, nargs="+", default=[0, 1],
                   help="DataLoader workers of the plain loop; one run per value")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved repetitions; the fastest round of each method is kept")
    p.add_argument("--compile-modes", nargs="*", default=[],
                   help="torch.compile modes of our trainer to add as rows (e.g. default)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark for every method (GPU)")
    p.add_argument("--profile-steps", type=int, default=40,
                   help="steps profiled for the GPU busy fraction (CUDA only)")
    p.add_argument("--method", choices=["ours", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--torch-compile", default="none", help=argparse.SUPPRESS)
    p.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--markdown", default=str(REPO / "docs" / "benchmarks.md"))
    args = p.parse_args()
    if args.method:
        args.plain_workers = args.plain_workers[0]
        return _child(args)

    from unseen.train import resolve_device

    device = resolve_device(args.device)
    base = [sys.executable, __file__, *sys.argv[1:]]
    runs = {"unseen trainer": ["--method", "ours"]}
    for mode in args.compile_modes:
        runs[f"unseen trainer (torch.compile {mode})"] = [
            "--method", "ours", "--torch-compile", mode]
    for w in args.plain_workers:
        runs[f"plain DataLoader loop ({w} workers)"] = ["--method", "plain", "--plain-workers", str(w)]
    # Rounds interleave the methods and each keeps its fastest round, so a burst
    # of load from other processes on a shared machine does not decide the result.
    methods: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for rnd in range(args.rounds):
        for name, extra in runs.items():
            t0 = time.perf_counter()
            proc = subprocess.run(base + extra, capture_output=True, text=True, cwd=REPO)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                if "torch.compile" not in name:
                    sys.exit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
                # an optional compiled row must not cost the measured ones
                failed[name] = (proc.stdout + proc.stderr)[-3000:]
                print(f"round {rnd + 1} {name}: FAILED, kept in 'failed'", flush=True)
                continue
            res = json.loads(line[-1][7:])
            print(f"round {rnd + 1} {name}: {res} ({time.perf_counter() - t0:.0f} s)", flush=True)
            best = methods.setdefault(name, res)
            for key in ("train_samples_per_s", "infer_samples_per_s"):
                best[key] = max(best[key], res[key])
            best["rounds"] = [*best.get("rounds", []), {k: res[k] for k in (
                "train_samples_per_s", "infer_samples_per_s", "train_wall_s")}]
    settings = {k: v for k, v in vars(args).items()
                if k not in ("method", "results_dir", "markdown", "torch_compile")}
    best_plain = max((r["train_samples_per_s"] for name, r in methods.items()
                      if name.startswith("plain")), default=None)
    for res in methods.values():
        res["speedup_vs_plain"] = (round(res["train_samples_per_s"] / best_plain, 2)
                                   if best_plain else None)
    dev = device.type
    result = {"machine": _machine(str(device)), "settings": settings, "methods": methods,
              "failed": failed,
              "goal": {"speedup_vs_plain": 3.0, "gpu_busy_fraction_train": 0.8},
              "command": command_line(__file__, None),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"trainer_throughput_{dev}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    _write_markdown(results_dir, Path(args.markdown))
    print(f"wrote {out} and {args.markdown}")


if __name__ == "__main__":
    main()
