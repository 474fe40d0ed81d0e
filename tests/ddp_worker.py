"""One rank of a data-parallel training on the digits data (tests/test_distributed.py runs it).

    python tests/ddp_worker.py OUT.npz ARCH [--state PATH] [--stop-at | --die-at | --hang-at STEP]

Under torchrun (or with RANK/WORLD_SIZE/MASTER_* set) it joins the ranks, trains
``ARCH`` on every other digits sample while recording the logits of the others, and
rank 0 writes OUT.npz (weights, recorded logits, epoch losses); alone it trains as one
process. ``--stop-at`` sends this process SIGTERM after that SGD step (the training
saves its state to ``--state`` and exits 75); ``--die-at`` makes rank 1 exit at once
after that step, without a word to the others; ``--hang-at`` makes rank 1 sleep forever.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unseen import distributed  # noqa: E402
from unseen.data import load_dataset  # noqa: E402
from unseen.resume import EXIT_RESUMABLE, TrainingCheckpoint, TrainingInterrupted  # noqa: E402
from unseen.subset_training import train_on_subset  # noqa: E402

TRAIN = {"epochs": 4, "batch_size": 64, "lr": 0.2, "crop_padding": 1, "flip": True}


class _Hook(TrainingCheckpoint):
    """A checkpoint that acts after SGD step ``at``: SIGTERM to itself, or (rank 1) death."""

    def __init__(self, path, at, action):
        super().__init__(Path(path), key="", every_seconds=None)
        self.at, self.action, self.steps = at, action, 0

    def due(self) -> bool:
        self.steps += 1
        if self.steps == self.at:
            if self.action == "stop":
                os.kill(os.getpid(), signal.SIGTERM)
            elif distributed.current().rank == 1:
                if self.action == "die":
                    os._exit(3)
                time.sleep(3600)
        return super().due()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("arch")
    p.add_argument("--stop-at", type=int, default=0)
    p.add_argument("--die-at", type=int, default=0)
    p.add_argument("--hang-at", type=int, default=0)
    p.add_argument("--state", default="")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    ranks = distributed.init_from_environment("cpu")
    data = load_dataset("digits")
    checkpoint = None
    if args.state:
        action = "die" if args.die_at else "hang" if args.hang_at else "stop"
        checkpoint = _Hook(args.state, args.stop_at or args.die_at or args.hang_at, action)
    try:
        result, _, _, _ = train_on_subset(
            data, np.arange(0, len(data.train_y), 2), np.arange(1, len(data.train_y), 2),
            {"arch": args.arch, "options": {"width": 16}}, TRAIN, [1, 2], 3, "cpu", 1,
            checkpoint=checkpoint)
    except TrainingInterrupted as stopped:
        print(stopped, file=sys.stderr)
        return EXIT_RESUMABLE
    if ranks.is_main:
        weights = {f"w/{k}": v.numpy() for k, v in result.model.state_dict().items()}
        np.savez(args.out, logits=result.recorded_logits, epochs=result.recorded_epochs,
                 losses=np.array([h["loss"] for h in result.history]),
                 samples=np.array([h["samples"] for h in result.history]), steps=result.steps,
                 ranks=ranks.size, **weights)
    distributed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
