"""The optimizer and the learning-rate schedule of the trainer.

:class:`NesterovSGD` (SGD with momentum and weight decay, written out with
foreach ops), :class:`Lookahead` (the ``lookahead`` training setting) and
:func:`_lr_factor`, the learning-rate multiplier of each schedule in
:data:`unseen.train.SCHEDULES`. Used by :func:`unseen.train.train_model`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class NesterovSGD:
    """SGD with (Nesterov) momentum and L2 weight decay, as ``torch.optim.SGD`` computes it.

    Weight decay applies to weight matrices and kernels only, not to biases or
    norm parameters. Written out with foreach ops because constructing a
    ``torch.optim`` optimizer imports TorchDynamo, which adds 1.5 s to every
    job's start on a 2-core CPU (benchmarks/optimizer_startup.py); with dozens
    of short jobs per run that dominates.

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

    def state_dict(self) -> list[torch.Tensor] | None:
        """The momentum buffers (None before the first step), for a training-state checkpoint."""
        return None if self.buffers is None else [b.detach().clone() for b in self.buffers]

    def load_state_dict(self, buffers: list[torch.Tensor] | None) -> None:
        """Take the momentum buffers of :meth:`state_dict` (onto the parameters' devices)."""
        self.buffers = None if buffers is None else [
            b.to(p.device, p.dtype) for b, p in zip(buffers, self.params)]

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

    def state_dict(self) -> list[torch.Tensor]:
        """The slow copy, for a training-state checkpoint."""
        return [t.detach().clone() for t in self.slow]

    @torch.no_grad()
    def load_state_dict(self, slow: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.slow, [t.to(s.device) for t, s in zip(slow, self.slow)])

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after SGD step ``step`` (1-based)."""
        if step == self.total_steps:
            torch._foreach_copy_(self.state, self.slow)
        elif step % self.period == 0:
            decay = self.base**self.period * (step / self.total_steps) ** 3
            torch._foreach_lerp_(self.slow, self.state, 1.0 - decay)
            torch._foreach_copy_(self.state, self.slow)


def _lr_factor(schedule: str, step: int, total: int) -> float:
    progress = step / max(1, total)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        warm = 0.15
        return progress / warm if progress < warm else (1.0 - progress) / (1.0 - warm)
    return 1.0
