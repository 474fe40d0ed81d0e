"""Batches for the trainer: images on the device, normalised and augmented as tensors.

In-memory images become one uint8 tensor (:func:`_place_data`: on the GPU when
they fit); streamed :class:`unseen.images.ImageFiles` are decoded by DataLoader
workers in the same batch order (:func:`_streamed_batches`). A
:class:`_Normalizer` turns a uint8 batch into normalised floats, and the
augmentations (random translation, flips) work on whole batches, drawing their
randomness from a CPU generator. Used by :func:`unseen.train.train_model` and
:func:`unseen.train.predict_logits`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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


def _random_translate(x: torch.Tensor, padding: int, gen: torch.Generator,
                      rows: slice = slice(None), total: int | None = None) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch: (B, C, H, W) -> (B, C, H, W).

    ``x`` may be the ``rows`` of a batch of ``total`` images (one data-parallel rank's
    share, :mod:`unseen.distributed`): the shifts are drawn for all ``total`` and the
    share's are used, so every rank augments a sample as a single process would.
    """
    b, _, h, w = x.shape
    drawn = b if total is None else total
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = _to_device(torch.randint(0, 2 * padding + 1, (drawn,), generator=gen, device="cpu")[rows],
                    x.device)
    dx = _to_device(torch.randint(0, 2 * padding + 1, (drawn,), generator=gen, device="cpu")[rows],
                    x.device)
    rows_index = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch_index = torch.arange(b, device=x.device)[:, None, None, None]
    chan_index = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch_index, chan_index, rows_index, cols]


def _random_flip(x: torch.Tensor, gen: torch.Generator, rows: slice = slice(None),
                 total: int | None = None) -> torch.Tensor:
    """Mirror each image of ``x`` (B, C, H, W) with probability 1/2 (``rows``, ``total``: as
    :func:`_random_translate`)."""
    drawn = x.shape[0] if total is None else total
    mask = _to_device(torch.rand(drawn, generator=gen, device="cpu")[rows], x.device) < 0.5
    return _flip_where(x, mask)


def _flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images of batch ``x`` (B, C, H, W) where bool ``mask`` (B,) is set."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def _is_streamed(images: object) -> bool:
    return hasattr(images, "load") and not isinstance(images, (np.ndarray, torch.Tensor))


class _FileImages(torch.utils.data.Dataset):
    """Map-style view of :class:`unseen.images.ImageFiles` for DataLoader workers; uint8 (C, H, W)."""

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


def _first_images(images, data: torch.Tensor | None, count: int, device: torch.device):
    """uint8 (count, C, H, W): the first ``count`` training images, on ``device``."""
    if data is not None:
        return data[:count].to(device)
    return torch.from_numpy(np.stack([images.load(i) for i in range(count)])).to(device)
