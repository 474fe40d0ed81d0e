"""Model registry: every entry builds a classifier from (input shape, number of classes).

Models take float input of shape (B, C, H, W) (normalised pixels) and return
logits of shape (B, num_classes).
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import nn


def mlp(in_shape: tuple[int, int, int], num_classes: int, width: int = 128) -> nn.Module:
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


class _BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def cifar_resnet18(
    in_shape: tuple[int, int, int], num_classes: int, width: int = 64
) -> nn.Module:
    """ResNet-18 for 32x32 inputs (He et al. 2016 as used for CIFAR): 3x3 stem, no max-pool.

    Four stages of two basic blocks (width, 2w, 4w, 8w), stride 2 from stage 2
    on; 11.2 M parameters at width 64 and 10 classes.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    cin = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        cout = width * mult
        layers += [_BasicBlock(cin, cout, 1 if stage == 0 else 2), _BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def _torchvision_resnet(name: str) -> Callable[..., nn.Module]:
    def factory(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        # Imported here: torchvision costs seconds of start-up that the other models do not need.
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_shape[0] != 3:
            model.conv1 = nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False)
        return model

    factory.__doc__ = (
        f"torchvision's {name} (7x7 stem, max-pool; for ImageNet-size inputs), random init,"
        " no weights downloaded."
    )
    return factory


resnet18 = _torchvision_resnet("resnet18")
resnet50 = _torchvision_resnet("resnet50")

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "cifar_resnet18": cifar_resnet18,
    "resnet18": resnet18,
    "resnet50": resnet50,
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

