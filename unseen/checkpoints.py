"""Scoring-model checkpoints (``model.pt``): their layout and their one safe reader.

A checkpoint holds plain tensors, ints, strings, lists and dicts only, so it
is read with ``torch.load(weights_only=True)``, which builds nothing else: a
``model.pt`` planted in a shared results directory cannot run code when a job
loads it. :mod:`unseen.predictions` writes it; :mod:`unseen.grand` reads it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from unseen import io


def checkpoint_contents(model, model_spec, train_ids, seed, model_name, norm) -> dict[str, Any]:
    """What ``model.pt`` holds, in types that ``torch.load(weights_only=True)`` reads.

    Returns a dict: state_dict (the model's tensors), model_spec (``{"arch",
    "options"}``, plain JSON-like values), train_ids (int64 tensor (T,)), seed
    (int), model_name (str), mean and std (float32 tensors (C,), per-channel
    normalisation on the 0..1 scale). No NumPy arrays or other objects: those
    would need the full unpickler to read.
    """
    import torch

    return {
        "state_dict": model.state_dict(),
        "model_spec": model_spec,
        "train_ids": torch.as_tensor(np.asarray(train_ids, dtype=np.int64)),
        "seed": int(seed),
        "model_name": str(model_name),
        "mean": torch.as_tensor(np.asarray(norm[0], dtype=np.float32)),
        "std": torch.as_tensor(np.asarray(norm[1], dtype=np.float32)),
    }


class UnsafeCheckpointError(RuntimeError):
    """A ``model.pt`` holds more than plain tensors and values, so it was not loaded."""

    def __init__(self, path, reason: str):
        self.path = path
        super().__init__(
            f"{path} was not loaded: it holds objects other than plain tensors, numbers,"
            f" strings, lists and dicts ({reason}), and loading those could run code stored in"
            " the file. It was written by an older version of unseen, or by someone else (check"
            f" ls -l {path}). Nothing in it was run. Fix: retrain that model: rerun the same"
            f" snakemake command with --forcerun {path} (or delete the file, then rerun)"
        )


def load_checkpoint(path) -> dict[str, Any]:
    """The dict of a ``model.pt`` (:func:`checkpoint_contents`), read with ``weights_only=True``.

    The file is first checked complete (:func:`unseen.io.check_checkpoint`,
    :class:`~unseen.io.DamagedFileError` when not). Tensors are loaded to the CPU.
    Raises :class:`UnsafeCheckpointError` when the file holds any other object
    (an older checkpoint with NumPy arrays, or a crafted pickle); nothing in it
    is built or run.
    """
    import pickle

    import torch

    io.check_checkpoint(path)
    try:
        with io.reading(path):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message advises weights_only=False, the very thing not to do: name only the object
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        raise UnsafeCheckpointError(
            path, f"it refers to {found[1]}" if found else "torch.load(weights_only=True) refused it"
        ) from None
