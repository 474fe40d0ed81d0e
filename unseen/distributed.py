"""Data-parallel training across the GPUs of a node: one process (rank) per GPU, torch.distributed.

A training job runs as N ranks when it is launched by ``torchrun --nproc_per_node N``
(what the workflow does for ``resources.train.gpu: N`` > 1, :mod:`unseen.specs`) or as
N tasks of one ``srun`` on one node. :func:`init_from_environment` joins the ranks
into one process group (NCCL on GPUs, gloo on CPU) and :func:`unseen.train.train_model`
then trains data-parallel by itself; a job's only other change is that rank 0 alone
writes its outputs (:func:`unseen.jobs.writes_outputs`).

The protocol is the one of a single process, so one config means one protocol on
1 or N ranks: the global batch (``train.batch_size``), the number of SGD steps and
the budget rules are the config's. Every rank draws the same sample order and the
same augmentation for the whole global batch, takes its contiguous share (batch/N
samples, sizes differing by at most one), and the gradients are averaged across
ranks (DistributedDataParallel), each rank's loss weighted by its share, so a step
is the single-process step up to floating-point rounding. Recorded logits are
predicted on a share of the recorded samples per rank and gathered, so every sample
is recorded exactly once; every rank then holds the same record, and rank 0 alone
writes outputs and training states (:func:`is_main`).

BatchNorm: on CUDA the BatchNorm layers become SyncBatchNorm (statistics of the whole
global batch, as one process computes them). On CPU (gloo) PyTorch has no
SyncBatchNorm: each rank normalises with the statistics of its share and the running
statistics are rank 0's; models without BatchNorm (``mlp``) train as one process does
up to rounding, those with it differ more (the CPU path exists for tests and tools).

A rank that dies fails the job: the others fail in their next collective (gloo sees
the closed connection at once; tested) or, at the latest, after :data:`DEFAULT_TIMEOUT_S`
(environment ``UNSEEN_RANK_TIMEOUT_S``; a hung rank, tested on gloo; NCCL aborts its
collectives at the same timeout), never hang.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: a light job's start stays light
    import torch

log = logging.getLogger("unseen.distributed")

#: Seconds a collective waits for the other ranks before it fails (a dead or stuck rank).
DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "UNSEEN_RANK_TIMEOUT_S"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a data-parallel training.

    ``control`` is a gloo group for the small CPU-side agreements of the loop (whether
    to save the state now), so they never wait for the GPU; None for one rank.
    """

    rank: int = 0
    size: int = 1
    device: Any = "cpu"  # where the collectives of the training tensors run (cuda for NCCL)
    control: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (every rank must call it)."""
        if self.size == 1:
            return bool(flag)
        import torch
        import torch.distributed as dist

        value = torch.tensor([int(bool(flag))])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor (on the training device) over the ranks, in place."""
        if self.size == 1:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def stack(self, value: torch.Tensor) -> torch.Tensor:
        """Every rank's ``value``, stacked (size, ...) in rank order; ``value`` itself for one."""
        if self.size == 1:
            return value
        import torch
        import torch.distributed as dist

        parts = [torch.empty_like(value) for _ in range(self.size)]
        dist.all_gather(parts, value.contiguous())
        return torch.stack(parts)

    def own(self, saved, saved_ranks: int):
        """This rank's part of ``saved``, a :meth:`stack` made by ``saved_ranks`` ranks. Made by
        another number of ranks: rank 0 takes their total and the others zeros."""
        if saved_ranks == self.size:
            return saved if self.size == 1 else saved[self.rank]
        total = saved if saved_ranks == 1 else saved.sum(0)
        return total if self.is_main else total.new_zeros(total.shape)

    def gather_rows(self, local: np.ndarray, total: int) -> np.ndarray:
        """The rows of every rank's :meth:`share` of ``total`` rows, in rank order, on every rank.

        ``local`` is this rank's (share, ...) array; the result is (total, ...).
        """
        if self.size == 1:
            return local
        import torch
        import torch.distributed as dist

        widest = -(-total // self.size)
        padded = torch.zeros((widest, *local.shape[1:]), dtype=torch.from_numpy(local).dtype,
                             device=self.device)
        padded[: len(local)] = torch.from_numpy(local).to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        shares = [Ranks(r, self.size).share(total) for r in range(self.size)]
        return torch.cat([part[: s.stop - s.start] for part, s in zip(parts, shares)]).cpu().numpy()

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the training step calls: DistributedDataParallel around ``model`` (its
        BatchNorm synchronised on CUDA) across ranks; ``model`` itself for one rank."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.device] if cuda else None)


def current() -> Ranks:
    """The ranks of the process group this process belongs to (one rank if none)."""
    global _control
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return Ranks()

    size = dist.get_world_size()
    if size == 1:
        return Ranks()
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    if _control is None:
        _control = dist.new_group(backend="gloo", timeout=_timeout())
    return Ranks(dist.get_rank(), size, device, _control)


_control = None


def is_main() -> bool:
    """Whether this process writes the job's outputs (rank 0, or the only process)."""
    return current().is_main


def launched_ranks(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's or SLURM's environment; None for one."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:  # torchrun (also torch.multiprocessing tools)
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, size = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", rank))
    else:
        return None
    return (rank, size, local) if size > 1 else None


def init_from_environment(device_name: str = "auto") -> Ranks:
    """Join the ranks a launcher started (:func:`launched_ranks`); one rank if none.

    Each rank takes GPU ``LOCAL_RANK`` when training on CUDA. SLURM tasks rendezvous at
    ``MASTER_ADDR``:``MASTER_PORT`` (default: this node, port 29500 + the job id mod 1000).
    """
    launched = launched_ranks()
    if launched is None:
        return Ranks()
    import torch
    import torch.distributed as dist

    rank, size, local = launched
    if device_name.startswith("cuda:"):
        raise ValueError(
            f"config key 'device': {device_name!r} would put all {size} ranks on one GPU; with"
            " several GPUs per job (resources.train.gpu) set device: auto or cuda (rank i takes"
            " GPU i of the job's)")
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if torch.cuda.device_count() <= local:
            raise RuntimeError(
                f"rank {rank} of {size} needs GPU {local} but this node shows"
                f" {torch.cuda.device_count()}; request as many GPUs as ranks"
                " (resources.train.gpu) or train on CPU (device: cpu)")
        torch.cuda.set_device(local)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", 0)) % 1000))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size,
                            timeout=_timeout())
    log.info("rank %d of %d (local %d), backend %s", rank, size, local, dist.get_backend())
    return current()


def close() -> None:
    """Leave the process group (at the end of a job), if this process joined one."""
    global _control
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None


def _timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
