"""Model registry: every entry builds a classifier from (input shape, number of classes).

Models take float input of shape (B, C, H, W) (normalised pixels) and return
logits of shape (B, num_classes).
"""

from __future__ import annotations

from typing import Callable

from torch import nn


def mlp(in_shape: tuple[int, int, int], num_classes: int, width: int = 256) -> nn.Module:
    """Two hidden layers of ``width`` ReLU units on the flattened image."""
    c, h, w = in_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.ReLU(inplace=True),
        nn.Linear(width, num_classes),
    )


def small_cnn(
    in_shape: tuple[int, int, int], num_classes: int, width: int = 32
) -> nn.Module:
    """Three 3x3 conv blocks (width, 2*width, 4*width) with batch norm, then global pooling.

    Cheap enough for CPU runs on 8x8 to 32x32 images.
    """
    c = in_shape[0]

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    return nn.Sequential(
        *block(c, width, pool=True),
        *block(width, 2 * width, pool=True),
        *block(2 * width, 4 * width, pool=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "small_cnn": small_cnn,
}


def build_model(
    arch: str, in_shape: tuple[int, int, int], num_classes: int, **options: object
) -> nn.Module:
    """Build model ``arch`` for images of ``in_shape`` = (C, H, W)."""
    try:
        factory = MODELS[arch]
    except KeyError:
        raise KeyError(f"unknown model {arch!r}; choose one of {sorted(MODELS)}") from None
    return factory(tuple(in_shape), int(num_classes), **options)


def is_convolutional(model: nn.Module) -> bool:
    """True if the model has 2-d convolutions (then channels_last pays off on GPU)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters."""
    return sum(p.numel() for p in model.parameters())

