"""GraNd (Paul et al., NeurIPS 2021): norm of the per-sample loss gradient.

``GraNd(x, y) = || d/d theta  CE(f_theta(x), y) ||_2`` at a trained checkpoint.
Higher = the sample still pushes the weights hard = keep first. Paul et al.
average it over several models early in training; here each scoring model
(fold, stage or fitting) contributes the score at its final checkpoint and
UNSEEN averages over the fold models, as for every other score.

Two versions:

* full network (``last_layer=False``): per-sample gradients of all trainable
  parameters with ``torch.func`` (``vmap`` over ``grad``), in batches;
* last layer (``last_layer=True``): closed form for the final ``nn.Linear``
  with input features ``h`` and softmax output ``p``. The gradient of the
  cross-entropy with respect to its weight is ``(p - onehot(y)) h^T`` and with
  respect to its bias ``p - onehot(y)``, so

      ||grad||_2 = ||p - onehot(y)||_2 * sqrt(||h||_2^2 + 1)

  (without the ``+ 1`` when the layer has no bias): one forward pass, no
  backward pass.

Models are evaluated in eval mode (batch norm uses running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ScoringModel:
    """A trained model plus the inputs of the samples it scores.

    Attributes:
        model: the classifier; maps float (B, C, H, W) to logits (B, K).
        images: uint8 (N, C, H, W), row i = the record's sample i.
        mean, std: float32 (C,) per-channel normalisation on the 0..1 scale.
        device: where to compute.
    """

    model: nn.Module
    images: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    device: torch.device

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Normalised float32 inputs of samples ``start:stop``."""
        x = torch.as_tensor(self.images[start:stop]).to(self.device).float() / 255.0
        mean = torch.as_tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, device=self.device).view(1, -1, 1, 1)
        return (x - mean) / std


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's final ``nn.Linear`` (the classifier head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("last-layer GraNd needs a model whose output layer is nn.Linear")
    return linears[-1]


@torch.no_grad()
def grand_last_layer(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Closed-form last-layer GraNd of a batch; float64 (B,).

    Args:
        model: classifier whose output comes from its last ``nn.Linear``.
        inputs: float (B, ...) model inputs.
        labels: int64 (B,) true labels.
    """
    head = last_linear(model)
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda m, args, out: captured.update(h=args[0]))
    try:
        logits = model(inputs).double()
    finally:
        hook.remove()
    h = captured["h"].double().flatten(1)
    residual = torch.softmax(logits, dim=1) - F.one_hot(labels, logits.shape[1]).double()
    bias_term = 1.0 if head.bias is not None else 0.0
    return residual.norm(dim=1) * torch.sqrt((h**2).sum(dim=1) + bias_term)


def grand_full(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Full-network GraNd of a batch via per-sample autograd; float64 (B,)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out.float(), y.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, inputs, labels)
    squared = sum((g.double().flatten(1) ** 2).sum(dim=1) for g in grads.values())
    return torch.sqrt(squared)


def grand_scores(
    scoring: ScoringModel, labels: np.ndarray, last_layer: bool, batch_size: int = 128
) -> np.ndarray:
    """GraNd of every sample of ``scoring``; float64 (N,), higher = keep first."""
    model = scoring.model.to(scoring.device).eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # in-place ops break torch.func transforms
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=scoring.device)
    fn = grand_last_layer if last_layer else grand_full
    out = [
        fn(model, scoring.batch(start, start + batch_size), y[start : start + batch_size])
        for start in range(0, len(y), batch_size)
    ]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def load_scoring_model(
    checkpoint: str, images: np.ndarray, num_classes: int, device: str = "auto",
    mean: Any = None, std: Any = None,
) -> ScoringModel:
    """Rebuild the model saved by ``jobs.train_scoring_model``.

    ``images`` are the uint8 (N, C, H, W) images of the samples to score.
    ``mean``/``std`` default to the ones stored in the checkpoint. The file is
    read with ``torch.load(weights_only=True)`` only
    (:func:`unseen.checkpoints.load_checkpoint`): one that holds other objects
    is refused, and nothing in it runs.
    """
    from unseen.models import build_model
    from unseen.checkpoints import load_checkpoint
    from unseen.train import resolve_device

    state = load_checkpoint(checkpoint)
    spec = state["model_spec"]
    model = build_model(spec["arch"], images.shape[1:], num_classes, **spec.get("options", {}))
    model.load_state_dict(state["state_dict"])
    mean = state["mean"] if mean is None else mean
    std = state["std"] if std is None else std
    return ScoringModel(
        model=model,
        images=images,
        mean=np.asarray(mean, dtype=np.float32),
        std=np.asarray(std, dtype=np.float32),
        device=resolve_device(device),
    )
