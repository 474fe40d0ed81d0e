"""Training state that outlives a job: a training that is stopped goes on where it stopped.

A training job on a cluster can be cut short: SLURM sends SIGTERM at a job's time
limit and on preemption (and SIGUSR1 a chosen time before the limit with
``sbatch --signal=USR1@SECONDS``). While :func:`unseen.train.train_model` runs with
a :class:`TrainingCheckpoint`, either signal makes it finish the SGD step it is in,
write its whole state (model, optimizer, Lookahead, step, the epoch's sample order,
every random generator, the records taken so far) to the checkpoint file and stop
with :class:`TrainingInterrupted`; the job then exits with :data:`EXIT_RESUMABLE`.
Run again (Snakemake's ``retries``, ``--rerun-incomplete``, or SLURM's requeue),
the same job finds the file and continues from that step; on CPU the finished
model, its records and everything computed from them are bit-identical to an
uninterrupted training's. The state is also written every
``every_seconds`` (config ``training_state.every_minutes``), so a job killed
without warning (SIGKILL, a node failure) loses at most that much.

The file sits next to the job's outputs, hidden (``.<output>.training-state.pt``),
is not an output (Snakemake does not delete it when the job fails), and is removed
by the job once its outputs are complete. It records what it was made for
(:attr:`TrainingCheckpoint.key`: model, settings, seed, samples, records); a file
made for anything else, or one that cannot be read, is named in the log and
ignored (the training starts from step 0), never trusted. It is read with
``torch.load(weights_only=True)``: plain tensors and containers, no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("unseen.resume")

#: The exit status of a job that saved its training state on a stop signal
#: (EX_TEMPFAIL, "try again"): running the job again continues the training.
EXIT_RESUMABLE = 75
#: What SLURM sends at a time limit or on preemption (SIGTERM) and before a time
#: limit when asked to (``--signal=USR1@SECONDS``).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: The default of config ``training_state.every_minutes``.
DEFAULT_EVERY_MINUTES = 10.0
#: Version of the state layout (unseen.train.TrainingState.state_dict); a file of another
#: version is ignored, never misread.
_FORMAT = 2


class TrainingInterrupted(RuntimeError):
    """A stop signal arrived; the training state was saved to ``path`` at SGD step ``step``."""

    def __init__(self, name: str, path: Path, step: int, total: int, signal_name: str):
        super().__init__(
            f"{name}: stopped by {signal_name} after SGD step {step} of {total}; its training"
            f" state is in {path}. Run the same job again (snakemake: the same command; SLURM:"
            " requeue) and it continues from that step"
        )
        self.path, self.step = path, step


def state_path(output: str | Path, label: str = "") -> Path:
    """The hidden training-state file of a job whose first output is ``output``.

    ``label`` tells several trainings of one job apart (e.g. the ``validated``
    strategy's candidates).
    """
    output = Path(output)
    suffix = f".{label}" if label else ""
    return output.with_name(f".{output.name}{suffix}.training-state.pt")


def training_key(**what: Any) -> str:
    """A short digest of what a training is (model, settings, seed, sample ids, records).

    Arrays are hashed by their bytes; everything else by its sorted JSON.
    """
    digest = hashlib.sha256()
    for name in sorted(what):
        value = what[name]
        digest.update(name.encode())
        if isinstance(value, np.ndarray):
            digest.update(str(value.dtype).encode() + str(value.shape).encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


class _StopFlag:
    """Set by a stop signal; read by the training loop after each SGD step."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            log.warning("%s received: the training stops after this SGD step and saves its state",
                        self.signal_name)


@dataclass
class TrainingCheckpoint:
    """Where one training keeps its state, what it is for, and how often it is written.

    Attributes:
        path: the state file (:func:`state_path`).
        key: :func:`training_key` of the training; a file with another key is ignored.
        every_seconds: write the state after the first SGD step that ends this long
            after the last write (None or <= 0: only on a stop signal).
        keep_final: also write the state when the training has finished (a job of
            several trainings, so a rerun does not train the finished ones again).
    """

    path: Path
    key: str
    every_seconds: float | None = DEFAULT_EVERY_MINUTES * 60
    keep_final: bool = False
    stop: _StopFlag = field(default_factory=_StopFlag, repr=False)
    _last_write: float = field(default=0.0, repr=False)  # set by load(), at the training's start

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (no file; a damaged file or one made for another training
        is named in the log and ignored). Called when the training starts: the first periodic
        write comes ``every_seconds`` after this call."""
        import torch

        # the interval counts from the training's start (this call), not from the first step
        self._last_write = time.monotonic()
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged file must never stop the job, nor be trusted
            log.warning("ignoring the training state %s: it cannot be read (%s: %s); training"
                        " starts from step 0", self.path, type(err).__name__, err)
            return None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            log.warning("ignoring the training state %s: not a training state of this version;"
                        " training starts from step 0", self.path)
            return None
        if state.get("key") != self.key:
            log.warning("ignoring the training state %s: it was made for another training (other"
                        " settings, seed or samples); training starts from step 0", self.path)
            return None
        log.info("resuming from the training state %s at SGD step %d", self.path, state["step"])
        return state

    def due(self) -> bool:
        """Whether the state is to be written now: a stop signal, or ``every_seconds`` passed."""
        if self.stop.signal_name is not None:
            return True
        return bool(self.every_seconds and self.every_seconds > 0
                    and time.monotonic() - self._last_write >= self.every_seconds)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors and plain containers) atomically."""
        import torch

        from unseen.io import atomic_path

        t0 = time.monotonic()
        with atomic_path(self.path) as tmp:
            torch.save({**state, "format": _FORMAT, "key": self.key}, tmp)
        self._last_write = time.monotonic()
        log.info("training state saved at SGD step %d to %s (%.2f s)", state["step"], self.path,
                 self._last_write - t0)

    def written_elsewhere(self) -> None:
        """Another data-parallel rank (rank 0) wrote the state now: restart the clock."""
        self._last_write = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextmanager
    def stop_signals(self) -> Iterator[None]:
        """Catch :data:`STOP_SIGNALS` while the training runs (main thread only); restore after."""
        if not _in_main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
