"""One trainer for every training job: fold models, stage models, the fitting model, retrains.

Data stay as one uint8 tensor in memory (on the GPU when training there); each
step gathers a batch by index, converts and normalises it, and augments it on
tensors, so there is no per-sample Python in the loop. On CUDA the trainer
uses channels_last for convolutional models and bf16 autocast. Data too big
for memory (:class:`unseen.data.ImageFiles`) are decoded by DataLoader workers
in the same batch order; normalisation and augmentation stay batched.

The length of training is a fixed epoch budget or, for the CCS protocol, a
fixed iteration budget (every coreset gets the same number of SGD steps).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unseen.budget import steps_per_epoch as count_steps_per_epoch
from unseen.models import data_init_samples, is_convolutional

log = logging.getLogger("unseen.train")

SCHEDULES = ("cosine", "onecycle", "constant")
# "none" trains eagerly (the default); the others are torch.compile's modes.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; units are epochs, steps and samples.

    SGD with (Nesterov) momentum and L2 weight decay on weight matrices (not on
    biases or norm parameters), a learning-rate schedule over all steps,
    optional label smoothing, and augmentation by random translation
    (``crop_padding`` pixels, 0 = off) and horizontal flips.

    ``iterations`` > 0 replaces the epoch budget by a fixed number of SGD steps
    (the last epoch may be partial), so coresets of any size get the same
    compute; 0 trains for ``epochs`` full passes. ``workers`` is the number of
    DataLoader processes decoding streamed (not in-memory) images.

    Options of the speed recipe (``config/cifar10_speed.yaml``); each is off by
    default and then changes nothing:

    - ``alternating_flip``: with ``flip``, each sample is flipped in a random
      half of the epochs, alternating: mirrored in every other epoch, starting
      from a per-sample coin toss (more distinct views than independent flips).
    - ``test_time_flip``: predictions (recorded logits, test accuracy) are the
      mean of the logits of the image and of its mirror image.
    - ``norm_lr_scale``: learning-rate multiplier for normalisation-layer
      parameters (BatchNorm shifts and scales).
    - ``lookahead``: every 5 steps the weights and BatchNorm statistics are
      pulled to a slow copy that follows them (:class:`Lookahead`); training
      ends on the slow copy.
    - ``torch_compile``: a :data:`COMPILE_MODES` mode of ``torch.compile`` for
      the forward pass and loss (compiled on the first step; pays off on GPU).
    - ``cudnn_benchmark``: let cuDNN time its convolution algorithms on the
      first batch and keep the fastest (GPU only; shapes are fixed in training).
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    crop_padding: int = 0
    flip: bool = False
    eval_batch_size: int = 1024
    iterations: int = 0
    workers: int = 4
    alternating_flip: bool = False
    test_time_flip: bool = False
    norm_lr_scale: float = 1.0
    lookahead: bool = False
    torch_compile: str = "none"
    cudnn_benchmark: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainSettings":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        if settings.iterations < 0 or settings.epochs < 1:
            raise ValueError("epochs must be >= 1 and iterations >= 0")
        if settings.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {settings.schedule!r}")
        if settings.torch_compile not in COMPILE_MODES:
            raise ValueError(
                f"torch_compile must be one of {COMPILE_MODES}, got {settings.torch_compile!r}")
        if settings.alternating_flip and not settings.flip:
            raise ValueError("alternating_flip needs flip: true")
        if settings.norm_lr_scale <= 0:
            raise ValueError("norm_lr_scale must be > 0")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        model: the trained model (in eval mode).
        recorded_epochs: int64 (E,), 1-based epochs at which ``recorded_logits`` were taken.
        recorded_logits: float16 (E, R, C) logits on the record set, or None.
        history: one dict per epoch: epoch, loss, accuracy, seconds, samples_per_s.
        wall_seconds: time spent in the training loop, recording included.
        steps: SGD steps taken.
    """

    model: nn.Module
    recorded_epochs: np.ndarray
    recorded_logits: np.ndarray | None
    history: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    steps: int = 0

    @property
    def samples_seen(self) -> int:
        """Training samples processed, in sample-epochs.

        An epoch drops the last incomplete batch, so N samples for E epochs at
        batch size B count ``(N // B) * B * E`` (at most N * E).
        """
        return int(sum(h["samples"] for h in self.history))

    @property
    def samples_per_second(self) -> float:
        train_seconds = sum(h["seconds"] for h in self.history)
        return self.samples_seen / train_seconds if train_seconds > 0 else float("nan")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; set device: cpu")
    return device


class _Normalizer:
    def __init__(self, mean: np.ndarray, std: np.ndarray, device: torch.device):
        self.scale = torch.as_tensor(1.0 / (255.0 * std), device=device).view(1, -1, 1, 1)
        self.shift = torch.as_tensor(mean / std, device=device).view(1, -1, 1, 1)

    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        return batch_uint8.float() * self.scale - self.shift


def _to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor (per-step random draws) to ``device`` without a host sync.

    A copy from pageable host memory to a GPU waits for the GPU to finish its
    queued work; from pinned memory it is asynchronous, so the Python loop keeps
    running ahead of the GPU. On the CPU nothing is copied.
    """
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def _random_translate(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch: (B, C, H, W) -> (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = _to_device(torch.randint(0, 2 * padding + 1, (b,), generator=gen, device="cpu"), x.device)
    dx = _to_device(torch.randint(0, 2 * padding + 1, (b,), generator=gen, device="cpu"), x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch_index = torch.arange(b, device=x.device)[:, None, None, None]
    chan_index = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch_index, chan_index, rows, cols]


def _random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = _to_device(torch.rand(x.shape[0], generator=gen, device="cpu"), x.device) < 0.5
    return _flip_where(x, mask)


def _flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images of batch ``x`` (B, C, H, W) where bool ``mask`` (B,) is set."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)


class NesterovSGD:
    """SGD with (Nesterov) momentum and L2 weight decay, as ``torch.optim.SGD`` computes it.

    Weight decay applies to weight matrices and kernels only, not to biases or
    norm parameters. Written out with foreach ops because constructing a
    ``torch.optim`` optimizer imports TorchDynamo, which adds about a second to
    every job's start; with dozens of short jobs per run that dominates on a CPU.

    ``scaled`` parameters (a subset of ``params``) take ``lr * scale`` instead
    of ``lr``; the default (none) is one update for all parameters.
    """

    def __init__(self, params: list[torch.Tensor], momentum: float, weight_decay: float,
                 nesterov: bool = True, scaled: list[torch.Tensor] = (), scale: float = 1.0):
        self.params = [p for p in params if p.requires_grad]
        self.decay = [p for p in self.params if p.ndim > 1]
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov and momentum > 0
        self.buffers: list[torch.Tensor] | None = None
        scaled_ids = {id(p) for p in scaled}
        self.scaled_positions = [i for i, p in enumerate(self.params) if id(p) in scaled_ids]
        self.plain_positions = [i for i, p in enumerate(self.params) if id(p) not in scaled_ids]
        self.scale = float(scale)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        with_grad = [p for p in self.params if p.grad is not None]
        if len(with_grad) != len(self.params):
            raise RuntimeError("every trainable parameter needs a gradient")
        if self.weight_decay and self.decay:
            torch._foreach_add_([p.grad for p in self.decay], self.decay, alpha=self.weight_decay)
        grads = [p.grad for p in self.params]
        if self.momentum > 0:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            if self.nesterov:
                torch._foreach_add_(grads, self.buffers, alpha=self.momentum)
            else:
                grads = self.buffers
        if not self.scaled_positions or self.scale == 1.0:
            torch._foreach_add_(self.params, grads, alpha=-lr)
            return
        for positions, step_lr in ((self.plain_positions, lr),
                                   (self.scaled_positions, lr * self.scale)):
            if positions:
                torch._foreach_add_([self.params[i] for i in positions],
                                    [grads[i] for i in positions], alpha=-step_lr)


class Lookahead:
    """Lookahead on the weights and BatchNorm statistics (floating-point state of the model).

    A slow copy follows the model: every ``period`` steps it moves to
    ``decay * slow + (1 - decay) * current`` and the model is reset to it, with
    ``decay = base**period * (step / total_steps)**3``, so it is a no-op early
    and averages more towards the end. After the last step the model takes the
    slow copy.
    """

    def __init__(self, model: nn.Module, total_steps: int, period: int = 5, base: float = 0.95):
        self.state = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.state]
        self.total_steps, self.period, self.base = total_steps, period, base

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after SGD step ``step`` (1-based)."""
        if step == self.total_steps:
            torch._foreach_copy_(self.state, self.slow)
        elif step % self.period == 0:
            decay = self.base**self.period * (step / self.total_steps) ** 3
            torch._foreach_lerp_(self.slow, self.state, 1.0 - decay)
            torch._foreach_copy_(self.state, self.slow)


def training_length(settings: TrainSettings, steps_per_epoch: int) -> tuple[int, int]:
    """(total SGD steps, number of epochs, the last possibly partial) under ``settings``."""
    if settings.iterations > 0:
        return settings.iterations, math.ceil(settings.iterations / steps_per_epoch)
    return steps_per_epoch * settings.epochs, settings.epochs


def _is_streamed(images: object) -> bool:
    return hasattr(images, "load") and not isinstance(images, (np.ndarray, torch.Tensor))


class _FileImages(torch.utils.data.Dataset):
    """Map-style view of :class:`unseen.data.ImageFiles` for DataLoader workers; uint8 (C, H, W)."""

    def __init__(self, files):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.files.load(i))


def _streamed_batches(files, batches: list[list[int]], device: torch.device, workers: int):
    """Yield uint8 (B, C, H, W) batches of ``files`` on ``device``, in the order of ``batches``."""
    loader = torch.utils.data.DataLoader(
        _FileImages(files), batch_sampler=batches, num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
    )
    for batch in loader:
        yield batch.to(device, non_blocking=True)


def _place_data(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 images as a tensor on ``device`` if they fit in half its free memory.

    Otherwise (a big data set on a small GPU) they stay in pinned host memory and
    each gathered batch is copied over; half, to leave room for activations.
    """
    data = torch.as_tensor(images)
    if device.type != "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.to(device) if data.nbytes < free // 2 else data.pin_memory()


def _lr_factor(schedule: str, step: int, total: int) -> float:
    progress = step / max(1, total)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        warm = 0.15
        return progress / warm if progress < warm else (1.0 - progress) / (1.0 - warm)
    return 1.0


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    mean: np.ndarray,
    std: np.ndarray,
    device: torch.device,
    batch_size: int = 1024,
    workers: int = 4,
    flip: bool = False,
) -> np.ndarray:
    """Logits of ``model`` on uint8 images (N, C, H, W) or ImageFiles; float32 (N, num_classes).

    ``flip`` (test-time flip): the mean of the logits of each image and of its
    mirror image.
    """
    model.eval()
    normalize = _Normalizer(mean, std, device)
    use_cl = device.type == "cuda" and is_convolutional(model)
    starts = range(0, len(images), batch_size)
    if _is_streamed(images):
        spans = [list(range(s, min(s + batch_size, len(images)))) for s in starts]
        raw_batches = _streamed_batches(images, spans, device, workers)
    else:
        data = torch.as_tensor(images)
        raw_batches = (data[s : s + batch_size].to(device, non_blocking=True) for s in starts)
    outputs = []
    for raw in raw_batches:
        batch = normalize(raw)
        if use_cl:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(batch).float()
            if flip:
                logits = (logits + model(batch.flip(3)).float()) / 2
            outputs.append(logits.cpu())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


def forward_loss(
    model: nn.Module, batch: torch.Tensor, target: torch.Tensor, label_smoothing: float,
    autocast: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy loss (scalar float32), logits (B, classes)) of one training batch.

    ``autocast``: bf16 autocast (on CUDA). One function so that ``torch_compile``
    compiles exactly what the eager path runs.
    """
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(batch)
        loss = F.cross_entropy(out.float(), target, label_smoothing=label_smoothing)
    return loss, out


def _first_images(images, data: torch.Tensor | None, count: int, device: torch.device):
    """uint8 (count, C, H, W): the first ``count`` training images, on ``device``."""
    if data is not None:
        return data[:count].to(device)
    return torch.from_numpy(np.stack([images.load(i) for i in range(count)])).to(device)


def train_model(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    mean: np.ndarray,
    std: np.ndarray,
    record_images: np.ndarray | None = None,
    record_epochs: list[int] | None = None,
    on_record: Callable[[int, np.ndarray], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on uint8 ``images`` (N, C, H, W) with int ``labels`` (N,).

    ``images`` may also be an :class:`unseen.data.ImageFiles` (streamed).

    Args:
        settings: optimisation settings.
        seed: seeds batch order and augmentation; the caller seeds the model's
            initialisation before building it.
        device: where to train.
        mean, std: per-channel normalisation on the 0..1 scale, each (C,).
        record_images: uint8 (R, C, H, W) images whose logits are recorded.
        record_epochs: 1-based epochs after which to record; the final epoch is
            always recorded when ``record_images`` is given.
        on_record: if given, called as ``on_record(epoch, logits)`` with the
            float32 (R, C) logits of each recorded epoch instead of keeping
            them (then ``recorded_logits`` is None); lets the caller keep only
            per-sample statistics when R x C is too large to hold for every epoch.

    Returns:
        A :class:`TrainResult`; ``recorded_logits`` is float16 (E, R, C).
    """
    if len(images) == 0:
        raise ValueError("cannot train on an empty set")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    model.to(device)
    use_cl = device.type == "cuda" and is_convolutional(model)
    if use_cl:
        model.to(memory_format=torch.channels_last)
    streamed = _is_streamed(images)
    data = None if streamed else _place_data(images, device)
    targets = torch.as_tensor(labels, dtype=torch.long).to(device)
    normalize = _Normalizer(mean, std, device)
    n = len(images)
    init_count = min(data_init_samples(model), n)
    if init_count:
        model.initialise_from_data(normalize(_first_images(images, data, init_count, device)))
    norm_params = [p for m in model.modules() if isinstance(m, NORM_LAYERS)
                   for p in m.parameters(recurse=False)]
    optimizer = NesterovSGD(
        list(model.parameters()), settings.momentum, settings.weight_decay, settings.nesterov,
        scaled=norm_params if settings.norm_lr_scale != 1.0 else (),
        scale=settings.norm_lr_scale,
    )
    if settings.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    step_loss = forward_loss
    if settings.torch_compile != "none":
        step_loss = torch.compile(forward_loss, mode=settings.torch_compile)
    autocast = device.type == "cuda"
    batch_size = min(settings.batch_size, n)
    steps_per_epoch = count_steps_per_epoch(n, batch_size)
    total_steps, epochs = training_length(settings, steps_per_epoch)
    lookahead = Lookahead(model, total_steps) if settings.lookahead else None
    flip_start = None
    if settings.alternating_flip:
        # drawn only here, so the default random stream is unchanged
        flip_start = (torch.rand(n, generator=gen) < 0.5).to(device)
    wanted = sorted({e for e in (record_epochs or []) if 1 <= e <= epochs})
    if record_images is not None:
        wanted = sorted(set(wanted) | {epochs})
    recorded: list[np.ndarray] = []
    history: list[dict[str, float]] = []
    start_all = time.perf_counter()
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        steps = min(steps_per_epoch, total_steps - step)
        order = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        if streamed:
            spans = [order[i * batch_size : (i + 1) * batch_size].tolist() for i in range(steps)]
            raw_batches = _streamed_batches(images, spans, device, settings.workers)
        else:
            on_data = order.to(data.device)
            raw_batches = (
                data[on_data[i * batch_size : (i + 1) * batch_size]].to(device, non_blocking=True)
                for i in range(steps)
            )
        order = order.to(device)
        for i, raw in enumerate(raw_batches):
            index = order[i * batch_size : (i + 1) * batch_size]
            batch = normalize(raw)
            if settings.crop_padding > 0:
                batch = _random_translate(batch, settings.crop_padding, gen)
            if flip_start is not None:
                batch = _flip_where(batch, flip_start[index] ^ (epoch % 2 == 0))
            elif settings.flip:
                batch = _random_flip(batch, gen)
            if use_cl:
                batch = batch.contiguous(memory_format=torch.channels_last)
            lr = settings.lr * _lr_factor(settings.schedule, step, total_steps)
            loss, out = step_loss(model, batch, targets[index], settings.label_smoothing, autocast)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(lr)
            loss_sum += loss.detach() * len(index)
            correct += (out.argmax(1) == targets[index]).sum()
            step += 1
            if lookahead is not None:
                lookahead.after_step(step)
        seen = steps * batch_size
        seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch,
            "loss": float(loss_sum) / seen,
            "accuracy": float(correct) / seen,
            "samples": seen,
            "seconds": seconds,
            "samples_per_s": seen / seconds if seconds > 0 else float("nan"),
        }
        history.append(row)
        if epoch in wanted:
            logits_now = predict_logits(
                model, record_images, mean, std, device, settings.eval_batch_size,
                settings.workers, flip=settings.test_time_flip,
            )
            if on_record is None:
                recorded.append(logits_now.astype(np.float16))
            else:
                on_record(epoch, logits_now)
        elapsed = time.perf_counter() - start_all
        eta = elapsed / step * (total_steps - step)
        log.info(
            "epoch %d/%d step %d/%d loss %.4f acc %.4f %.0f samples/s eta %.1fs",
            epoch, epochs, step, total_steps, row["loss"], row["accuracy"], row["samples_per_s"], eta,
        )
    model.eval()
    logits = np.stack(recorded) if recorded else None
    return TrainResult(
        model=model,
        recorded_epochs=np.array(wanted if record_images is not None else [], dtype=np.int64),
        recorded_logits=logits,
        history=history,
        wall_seconds=time.perf_counter() - start_all,
        steps=step,
    )


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed torch and numpy and fix the CPU thread count.

    CPU training is bitwise reproducible for a given seed and thread count. GPU
    kernels (cuDNN, atomics) may differ in the last bits between runs; we do not
    force deterministic algorithms there because it costs speed (and importing
    the switch costs every job a second of start-up).
    """
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    if threads:
        torch.set_num_threads(int(threads))
