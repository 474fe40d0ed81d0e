"""One trainer for every training job: fold models, stage models, the fitting model, retrains.

Data stay as one uint8 tensor in memory (on the GPU when training there); each
step gathers a batch by index, converts and normalises it, and augments it on
tensors, so there is no per-sample Python in the loop. On CUDA the trainer
uses channels_last for convolutional models and bf16 autocast. Data too big
for memory (:class:`unseen.images.ImageFiles`) are decoded by DataLoader workers
in the same batch order; normalisation and augmentation stay batched
(:mod:`unseen.batches`). The optimizer and the learning-rate schedules are in
:mod:`unseen.optim`.

The length of training is a fixed epoch budget or, for the CCS protocol, a
fixed iteration budget (every coreset gets the same number of SGD steps).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unseen.batches import (
    _first_images,
    _flip_where,
    _is_streamed,
    _Normalizer,
    _place_data,
    _random_flip,
    _random_translate,
    _streamed_batches,
)
from unseen.budget import steps_per_epoch as count_steps_per_epoch
from unseen.models import data_init_samples, is_convolutional
from unseen.optim import Lookahead, NesterovSGD, _lr_factor
from unseen.resume import TrainingCheckpoint, TrainingInterrupted

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
      pulled to a slow copy that follows them (:class:`unseen.optim.Lookahead`);
      training ends on the slow copy.
    - ``torch_compile``: a :data:`COMPILE_MODES` mode of ``torch.compile`` for
      the forward pass and loss (compiled on the first step; pays off on GPU).
    - ``cudnn_benchmark``: let cuDNN time its convolution algorithms on the
      first batch and keep the fastest (GPU only; shapes are fixed in training).
    """

    epochs: int = 20
    batch_size: int = 64
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


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names the model, the step and the fix."""


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


def training_length(settings: TrainSettings, steps_per_epoch: int) -> tuple[int, int]:
    """(total SGD steps, number of epochs, the last possibly partial) under ``settings``."""
    if settings.iterations > 0:
        return settings.iterations, math.ceil(settings.iterations / steps_per_epoch)
    return steps_per_epoch * settings.epochs, settings.epochs


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
    name: str = "model",
    lr_key: str = "train.lr",
    checkpoint: TrainingCheckpoint | None = None,
) -> TrainResult:
    """Train ``model`` in place on uint8 ``images`` (N, C, H, W) with int ``labels`` (N,).

    ``images`` may also be an :class:`unseen.images.ImageFiles` (streamed).

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
        name, lr_key: the model and the config key of its learning rate, for the
            message of :class:`TrainingDiverged`.
        checkpoint: where the training keeps its state (:mod:`unseen.resume`): it
            continues from a saved state made for the same training, writes its
            state every ``checkpoint.every_seconds`` and, on SIGTERM or SIGUSR1,
            after the SGD step in progress, then raises
            :class:`unseen.resume.TrainingInterrupted`. ``on_record`` must then
            have ``state_dict``/``load_state_dict`` (a StatisticsRecorder does).

    Returns:
        A :class:`TrainResult`; ``recorded_logits`` is float16 (E, R, C).

    Raises:
        TrainingDiverged: at the end of the first epoch whose loss is NaN or
            infinite (checked once per epoch, where the loss is read anyway);
            nothing is recorded from a diverged model.
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
    first_epoch, resumed = 1, None
    if checkpoint is not None:
        resumed = checkpoint.load()
    if resumed is not None:
        first_epoch, step = _restore(resumed, model, optimizer, lookahead, gen, on_record,
                                     recorded, history)
        start_all -= resumed["wall_seconds"]
    stopping = contextlib.nullcontext() if checkpoint is None else checkpoint.stop_signals()
    with stopping:
        for epoch in range(first_epoch, epochs + 1):
            model.train()
            t0 = time.perf_counter()
            if resumed is not None:
                # the epoch the state was saved in: its order and sums so far, its next batch
                position, steps = resumed["position"], resumed["steps_in_epoch"]
                order = resumed["order"]
                loss_sum = resumed["loss_sum"].to(device)
                step_losses = resumed["step_losses"].to(device)
                correct = resumed["correct"].to(device)
                t0 -= resumed["epoch_seconds"]
            else:
                position, steps = 0, min(steps_per_epoch, total_steps - step)
                order = torch.randperm(n, generator=gen)
                loss_sum = torch.zeros((), device=device)
                step_losses = torch.empty(steps, device=device)  # to name the first non-finite step
                correct = torch.zeros((), device=device, dtype=torch.long)
            resumed = None
            if streamed:
                spans = [order[i * batch_size : (i + 1) * batch_size].tolist()
                         for i in range(position, steps)]
                raw_batches = _streamed_batches(images, spans, device, settings.workers)
            else:
                on_data = order.to(data.device)
                raw_batches = (
                    data[on_data[i * batch_size : (i + 1) * batch_size]].to(device, non_blocking=True)
                    for i in range(position, steps)
                )
            order_on_device = order.to(device)
            for i, raw in enumerate(raw_batches, start=position):
                index = order_on_device[i * batch_size : (i + 1) * batch_size]
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
                step_losses[i] = loss.detach()
                correct += (out.argmax(1) == targets[index]).sum()
                step += 1
                if lookahead is not None:
                    lookahead.after_step(step)
                if checkpoint is not None and checkpoint.due():
                    checkpoint.save(_state(
                        model, optimizer, lookahead, gen, on_record, recorded, history, step, epoch,
                        i + 1, steps, order, loss_sum, step_losses, correct,
                        time.perf_counter() - t0, time.perf_counter() - start_all))
                    if checkpoint.stop.signal_name is not None:
                        if hasattr(raw_batches, "close"):
                            raw_batches.close()
                        raise TrainingInterrupted(name, checkpoint.path, step, total_steps,
                                                  checkpoint.stop.signal_name)
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
            if not math.isfinite(row["loss"]):
                bad = int(torch.nonzero(~torch.isfinite(step_losses))[0])
                first = step - steps + bad + 1
                raise TrainingDiverged(
                    f"{name}: training diverged: the loss is {float(step_losses[bad])} at SGD step"
                    f" {first} of {total_steps} (epoch {epoch}), learning rate"
                    f" {settings.lr * _lr_factor(settings.schedule, first - 1, total_steps):g} at"
                    f" that step ({lr_key}: {settings.lr:g}); its outputs would be meaningless."
                    f" Fix: lower {lr_key} (e.g. to {settings.lr / 10:g}) and rerun"
                )
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
                epoch, epochs, step, total_steps, row["loss"], row["accuracy"],
                row["samples_per_s"], eta,
            )
    if checkpoint is not None and checkpoint.keep_final and first_epoch <= epochs:
        checkpoint.save(_state(model, optimizer, lookahead, gen, on_record, recorded, history,
                               step, epochs + 1, 0, 0, torch.zeros(0, dtype=torch.long),
                               None, None, None, 0.0, time.perf_counter() - start_all))
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


def _state(model, optimizer, lookahead, gen, on_record, recorded, history, step, epoch, position,
           steps_in_epoch, order, loss_sum, step_losses, correct, epoch_seconds, wall_seconds):
    """Everything :func:`train_model` needs to continue after SGD step ``step`` exactly.

    ``epoch`` is the epoch in progress (``epochs + 1``: finished), ``position`` the
    batches of it already taken, ``order`` its sample order.
    """
    np_state = np.random.get_state()
    return {
        "step": int(step), "epoch": int(epoch), "position": int(position),
        "steps_in_epoch": int(steps_in_epoch), "order": order.detach().cpu(),
        "loss_sum": None if loss_sum is None else loss_sum.detach().cpu(),
        "step_losses": None if step_losses is None else step_losses.detach().cpu(),
        "correct": None if correct is None else correct.detach().cpu(),
        "epoch_seconds": float(epoch_seconds), "wall_seconds": float(wall_seconds),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "lookahead": None if lookahead is None else lookahead.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy_rng": [torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                      int(np_state[3]), float(np_state[4])],
        "recorded": [torch.from_numpy(r) for r in recorded],
        "recorder": None if on_record is None else on_record.state_dict(),
        "history": [dict(row) for row in history],
    }


def _restore(state, model, optimizer, lookahead, gen, on_record, recorded, history) -> tuple[int, int]:
    """Put a :func:`_state` back; returns (epoch to continue, SGD steps already taken)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if lookahead is not None:
        lookahead.load_state_dict(state["lookahead"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    keys, pos, has_gauss, cached = state["numpy_rng"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    recorded.extend(r.numpy() for r in state["recorded"])
    if on_record is not None:
        on_record.load_state_dict(state["recorder"])
    history.extend(state["history"])
    return state["epoch"], state["step"]


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
