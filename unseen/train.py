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

In a process group of several ranks (:mod:`unseen.distributed`: ``torchrun``, one
process per GPU) the same call trains data-parallel under the same protocol: each
rank takes its share of every global batch and the gradients are averaged.
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
from unseen.distributed import Ranks
from unseen.distributed import current as current_ranks
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
        checkpoint: where the training keeps its :class:`TrainingState`
            (:mod:`unseen.resume`): it continues from a saved state made for the
            same training, writes its state every ``checkpoint.every_seconds`` and,
            on SIGTERM or SIGUSR1, after the SGD step in progress, then raises
            :class:`unseen.resume.TrainingInterrupted`. ``on_record`` must then
            have ``state_dict``/``load_state_dict`` (a StatisticsRecorder does).

    Returns:
        A :class:`TrainResult`; ``recorded_logits`` is float16 (E, R, C).

    Data-parallel (a process group of N ranks, :mod:`unseen.distributed`): every rank
    calls this with the same arguments; the global batch, steps and records are
    those of one process, every rank returns the same result, and rank 0 alone
    writes the training state.

    Raises:
        TrainingDiverged: at the end of the first epoch whose loss is NaN or
            infinite (checked once per epoch, where the loss is read anyway);
            nothing is recorded from a diverged model.
    """
    if len(images) == 0:
        raise ValueError("cannot train on an empty set")
    state, feed = _start(model, images, labels, settings, seed, device, mean, std, on_record,
                         current_ranks())
    epochs, total_steps, ranks = feed.epochs, feed.total_steps, state.ranks
    model = state.model  # with SyncBatchNorm layers across GPU ranks
    wanted = sorted({e for e in (record_epochs or []) if 1 <= e <= epochs})
    if record_images is not None:
        wanted = sorted(set(wanted) | {epochs})
    if checkpoint is not None and (saved := checkpoint.load()) is not None:
        state.load_state_dict(saved)
    trains = state.epoch <= epochs  # False: a saved state of a finished training
    stopping = contextlib.nullcontext() if checkpoint is None else checkpoint.stop_signals()
    with stopping:
        while state.epoch <= epochs:
            epoch = state.epoch
            if not state.in_epoch:
                state.begin_epoch(feed.n, min(feed.steps_per_epoch, total_steps - state.step),
                                  device)
            model.train()
            batches = feed.batches(state)
            for index, batch in batches:
                lr = settings.lr * _lr_factor(settings.schedule, state.step, total_steps)
                loss, out = feed.step_loss(state.net, batch, feed.targets[index],
                                           settings.label_smoothing, feed.autocast)
                state.optimizer.zero_grad()
                feed.weighted(loss).backward()
                state.optimizer.step(lr)
                state.took_step(loss, out, feed.targets[index], feed.batch_size)
                if state.lookahead is not None:
                    state.lookahead.after_step(state.step)
                # per-step callbacks (a metric, a probe) go here: the step is complete
                if checkpoint is not None and ranks.any(checkpoint.due()):
                    _save(checkpoint, state)
                    if ranks.any(checkpoint.stop.signal_name is not None):
                        batches.close()
                        raise TrainingInterrupted(
                            name, checkpoint.path, state.step, total_steps,
                            checkpoint.stop.signal_name or "a stop signal to another rank")
            ranks.broadcast_buffers(model)  # one model on every rank for recording and saving
            row = state.epoch_row(feed.batch_size)
            if not math.isfinite(row["loss"]):
                raise _diverged(state, settings, name, lr_key, total_steps)
            state.end_epoch(row)
            if epoch in wanted:
                state.record(epoch, _record_logits(model, record_images, mean, std, device,
                                                   settings, ranks))
            eta = state.wall_seconds() / state.step * (total_steps - state.step)
            log.info("epoch %d/%d step %d/%d loss %.4f acc %.4f %.0f samples/s eta %.1fs",
                     epoch, epochs, state.step, total_steps, row["loss"], row["accuracy"],
                     row["samples_per_s"], eta)
    if checkpoint is not None and checkpoint.keep_final and trains:
        _save(checkpoint, state)
    model.eval()
    return TrainResult(
        model=model,
        recorded_epochs=np.array(wanted if record_images is not None else [], dtype=np.int64),
        recorded_logits=np.stack(state.recorded) if state.recorded else None,
        history=state.history,
        wall_seconds=state.wall_seconds(),
        steps=state.step,
    )


@dataclass
class TrainingState:
    """Everything a training carries from one SGD step to the next; what a checkpoint holds.

    :func:`train_model` builds it (:func:`_start`), advances it one SGD step at a
    time (:meth:`took_step`) and one epoch at a time (:meth:`begin_epoch`,
    :meth:`end_epoch`, :meth:`record`). :meth:`state_dict` / :meth:`load_state_dict`
    turn it into plain tensors and containers and back (what
    :class:`unseen.resume.TrainingCheckpoint` writes): a training continued from a
    restored state is bit-identical on CPU to one that was never stopped. The
    process-wide random generators (torch, CUDA, numpy) are part of the state
    dict too, though not fields here.

    Across data-parallel ranks each rank holds one, identical but for the epoch's sums,
    which count the rank's own share (their sum over the ranks is the epoch's); the
    state dict holds every rank's, stacked (N, ...), and each rank takes its own back
    (resumed on another number of ranks: rank 0 takes their sum).

    Attributes:
        model: the model being trained (its weights and BatchNorm statistics).
        net: what the training step calls: ``model``, or DistributedDataParallel
            around it across ranks (``ranks``).
        optimizer: the :class:`unseen.optim.NesterovSGD` (its momentum buffers).
        lookahead: the :class:`unseen.optim.Lookahead` (its slow copy), or None.
        generator: the CPU generator of the batch order and the augmentation.
        recorder: ``on_record`` of :func:`train_model` (what it has collected), or None.
        recorded: float16 (R, C) logits of each epoch recorded so far (no ``recorder``).
        history: one :class:`TrainResult` history row per finished epoch.
        step: SGD steps taken.
        epoch: the 1-based epoch in progress or next (``epochs + 1``: finished).
        position: batches of the epoch in progress taken.
        steps_in_epoch: batches of the epoch in progress (an iteration budget cuts the last short).
        order: int64 (N,) sample order of the epoch in progress; None between epochs.
        loss_sum: float32 () summed training loss of the epoch's samples so far (None between epochs).
        step_losses: float32 (steps_in_epoch,) mean loss of each step (a rank: its samples'
            share of it), to name the first non-finite.
        correct: int64 () training samples of the epoch classified correctly so far.
        epoch_started, started: ``time.perf_counter()`` at the start of the epoch and of
            the training, moved back by the seconds spent before a restored state was saved.
        ranks: the data-parallel ranks (:mod:`unseen.distributed`); one by default.
    """

    model: nn.Module
    net: nn.Module
    optimizer: NesterovSGD
    lookahead: Lookahead | None
    generator: torch.Generator
    recorder: Any = None
    ranks: Ranks = field(default_factory=Ranks)
    recorded: list[np.ndarray] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    epoch: int = 1
    position: int = 0
    steps_in_epoch: int = 0
    order: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None
    step_losses: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    epoch_started: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def in_epoch(self) -> bool:
        return self.order is not None

    def begin_epoch(self, n: int, steps: int, device: torch.device) -> None:
        """Start epoch :attr:`epoch` of ``steps`` batches over ``n`` samples: draw its order."""
        self.position, self.steps_in_epoch = 0, steps
        self.order = torch.randperm(n, generator=self.generator)
        self.loss_sum = torch.zeros((), device=device)
        self.step_losses = torch.empty(steps, device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.epoch_started = time.perf_counter()

    def took_step(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                  batch_size: int) -> None:
        """Count one SGD step: the mean ``loss`` (scalar), ``logits`` (b, C) and ``target`` (b,)
        of this rank's b samples of a global batch of ``batch_size`` (b = batch_size: one rank).

        The sums stay on the device (no host sync per step); epoch metrics go here.
        """
        loss = loss.detach()
        self.loss_sum += loss * len(target)
        self.step_losses[self.position] = loss * (len(target) / batch_size)
        self.correct += (logits.argmax(1) == target).sum()
        self.position += 1
        self.step += 1

    def epoch_row(self, batch_size: int) -> dict[str, float]:
        """The history row of the epoch in progress: loss and accuracy per sample, throughput.

        Sums the ranks' counts first (every rank must call it).
        """
        self.ranks.sum_([self.loss_sum, self.step_losses, self.correct])
        seen = self.steps_in_epoch * batch_size
        seconds = time.perf_counter() - self.epoch_started
        return {
            "epoch": self.epoch,
            "loss": float(self.loss_sum) / seen,
            "accuracy": float(self.correct) / seen,
            "samples": seen,
            "seconds": seconds,
            "samples_per_s": seen / seconds if seconds > 0 else float("nan"),
        }

    def end_epoch(self, row: dict[str, float]) -> None:
        """Close the epoch in progress with its history ``row``; the next one is due."""
        self.history.append(row)
        self.epoch += 1
        self.position = self.steps_in_epoch = 0
        self.order = self.loss_sum = self.step_losses = self.correct = None

    def record(self, epoch: int, logits: np.ndarray) -> None:
        """Keep float32 (R, C) ``logits`` of ``epoch``: as float16, or through the recorder."""
        if self.recorder is None:
            self.recorded.append(logits.astype(np.float16))
        else:
            self.recorder(epoch, logits)

    def wall_seconds(self) -> float:
        """Seconds of training so far, those before a restored state included."""
        return time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and containers (``torch.load(weights_only=True)`` reads them back).

        Across ranks every rank must call it (the epoch's sums are gathered from them).
        """
        now = time.perf_counter()
        np_state = np.random.get_state()
        loss_sum, step_losses, correct = (
            None if t is None else self.ranks.stack(t.detach()).cpu()
            for t in (self.loss_sum, self.step_losses, self.correct))
        return {
            "step": self.step, "epoch": self.epoch, "position": self.position,
            "steps_in_epoch": self.steps_in_epoch,
            "order": None if self.order is None else self.order.cpu(), "loss_sum": loss_sum,
            "step_losses": step_losses, "correct": correct, "ranks": self.ranks.size,
            "epoch_seconds": now - self.epoch_started if self.in_epoch else 0.0,
            "wall_seconds": now - self.started,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "lookahead": None if self.lookahead is None else self.lookahead.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy_rng": [torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                          int(np_state[3]), float(np_state[4])],
            "recorded": [torch.from_numpy(r) for r in self.recorded],
            "recorder": None if self.recorder is None else self.recorder.state_dict(),
            "history": [dict(row) for row in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a :meth:`state_dict` back (tensors onto the model's device)."""
        device = next(iter(self.model.state_dict().values())).device
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        self.recorded = [r.numpy() for r in state["recorded"]]
        if self.recorder is not None:
            self.recorder.load_state_dict(state["recorder"])
        self.history = [dict(row) for row in state["history"]]
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.position, self.steps_in_epoch = int(state["position"]), int(state["steps_in_epoch"])
        saved_ranks = state.get("ranks", 1)
        on_device = {k: None if state[k] is None else self.ranks.own(state[k], saved_ranks).to(device)
                     for k in ("loss_sum", "step_losses", "correct")}
        self.loss_sum, self.step_losses, self.correct = on_device.values()
        self.order = state["order"] if self.loss_sum is not None else None
        now = time.perf_counter()
        self.epoch_started = now - state["epoch_seconds"]
        self.started = now - state["wall_seconds"]


@dataclass
class _Feed:
    """The training's data and fixed plan: which batches, normalised and augmented how.

    ``data`` is the uint8 (N, C, H, W) tensor of in-memory images (None when
    streamed from ``images``), ``targets`` the int64 (N,) labels on the device,
    ``flip_start`` the bool (N,) first flip of each sample (``alternating_flip``),
    ``share`` the rows of each global batch of ``batch_size`` this rank takes (all of
    them for one rank).
    """

    images: Any
    data: torch.Tensor | None
    targets: torch.Tensor
    normalize: _Normalizer
    settings: TrainSettings
    device: torch.device
    channels_last: bool
    flip_start: torch.Tensor | None
    step_loss: Callable
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    share: slice
    world: int

    @property
    def n(self) -> int:
        return len(self.targets)

    @property
    def autocast(self) -> bool:
        return self.device.type == "cuda"

    def weighted(self, loss: torch.Tensor) -> torch.Tensor:
        """This rank's mean ``loss`` weighted by its share of the global batch, so that the
        average of the ranks' gradients (DistributedDataParallel) is the global batch's."""
        weight = self.world * (self.share.stop - self.share.start) / self.batch_size
        return loss if weight == 1.0 else loss * weight

    def batches(self, state: TrainingState):
        """The batches of ``state``'s epoch not yet taken, in its order, as pairs of the
        sample indices (b,) on the device and the normalised, augmented float batch
        (b, C, H, W) of this rank's b samples of each global batch; augmentation draws
        from ``state.generator`` for the whole global batch as each is taken."""
        settings, size, order, share = self.settings, self.batch_size, state.order, self.share
        spans = range(state.position, state.steps_in_epoch)
        if self.data is None:
            raw_batches = _streamed_batches(
                self.images, [order[i * size : (i + 1) * size][share].tolist() for i in spans],
                self.device, settings.workers)
        else:
            on_data = order.to(self.data.device)
            raw_batches = (self.data[on_data[i * size : (i + 1) * size][share]].to(
                self.device, non_blocking=True) for i in spans)
        order_on_device = order.to(self.device)
        try:
            for i, raw in zip(spans, raw_batches):
                index = order_on_device[i * size : (i + 1) * size][share]
                batch = self.normalize(raw)
                if settings.crop_padding > 0:
                    batch = _random_translate(batch, settings.crop_padding, state.generator,
                                              share, size)
                if self.flip_start is not None:
                    batch = _flip_where(batch, self.flip_start[index] ^ (state.epoch % 2 == 0))
                elif settings.flip:
                    batch = _random_flip(batch, state.generator, share, size)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                yield index, batch
        finally:
            if hasattr(raw_batches, "close"):  # stops a streamed epoch's DataLoader workers
                raw_batches.close()


def _start(model, images, labels, settings, seed, device, mean, std, on_record,
           ranks: Ranks):
    """The fresh :class:`TrainingState` and the :class:`_Feed` of a training (the model is
    moved to ``device`` and, if it wants, initialised from the first images)."""
    if min(settings.batch_size, len(images)) < ranks.size:
        raise ValueError(
            f"a batch of {min(settings.batch_size, len(images))} samples cannot be shared by"
            f" {ranks.size} ranks: raise train.batch_size to at least {ranks.size} or train on"
            " fewer GPUs (resources.train.gpu)")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    model.to(device)
    channels_last = device.type == "cuda" and is_convolutional(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    data = None if _is_streamed(images) else _place_data(images, device)
    normalize = _Normalizer(mean, std, device)
    n = len(images)
    init_count = min(data_init_samples(model), n)
    if init_count:
        model.initialise_from_data(normalize(_first_images(images, data, init_count, device)))
    if ranks.size > 1 and device.type == "cuda":
        # BatchNorm over the global batch, as one process normalises it
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = ranks.wrap(model)
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
    batch_size = min(settings.batch_size, n)
    steps_per_epoch = count_steps_per_epoch(n, batch_size)
    total_steps, epochs = training_length(settings, steps_per_epoch)
    lookahead = Lookahead(model, total_steps) if settings.lookahead else None
    flip_start = None
    if settings.alternating_flip:
        # drawn only here, so the default random stream is unchanged
        flip_start = (torch.rand(n, generator=gen) < 0.5).to(device)
    feed = _Feed(images, data, torch.as_tensor(labels, dtype=torch.long).to(device), normalize,
                 settings, device, channels_last, flip_start, step_loss, batch_size,
                 steps_per_epoch, total_steps, epochs, ranks.share(batch_size), ranks.size)
    return TrainingState(model, net, optimizer, lookahead, gen, on_record, ranks=ranks), feed


def _save(checkpoint: TrainingCheckpoint, state: TrainingState) -> None:
    """Write ``state`` to ``checkpoint`` (across ranks: every rank calls it, rank 0 writes)."""
    saved = state.state_dict()
    if state.ranks.is_main:
        checkpoint.save(saved)
    else:
        checkpoint.written_elsewhere()


def _record_logits(model, record_images, mean, std, device, settings, ranks: Ranks) -> np.ndarray:
    """float32 (R, C) logits of the R ``record_images``; across ranks each rank predicts its
    share and every rank gets all of them, each sample predicted once."""
    share = np.arange(len(record_images))[ranks.share(len(record_images))]
    logits = predict_logits(
        model, record_images if ranks.size == 1 else record_images[share], mean, std, device,
        settings.eval_batch_size, settings.workers, flip=settings.test_time_flip)
    return ranks.gather_rows(logits, len(record_images))


def _diverged(state: TrainingState, settings: TrainSettings, name: str, lr_key: str,
              total_steps: int) -> TrainingDiverged:
    """The error of an epoch whose loss is not finite: the first bad step, its learning rate."""
    bad = int(torch.nonzero(~torch.isfinite(state.step_losses))[0])
    first = state.step - state.steps_in_epoch + bad + 1
    return TrainingDiverged(
        f"{name}: training diverged: the loss is {float(state.step_losses[bad])} at SGD step"
        f" {first} of {total_steps} (epoch {state.epoch}), learning rate"
        f" {settings.lr * _lr_factor(settings.schedule, first - 1, total_steps):g} at"
        f" that step ({lr_key}: {settings.lr:g}); its outputs would be meaningless."
        f" Fix: lower {lr_key} (e.g. to {settings.lr / 10:g}) and rerun"
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
