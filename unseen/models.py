"""Model registry: every entry builds a classifier from (input shape, number of classes).

Models take float input of shape (B, C, H, W) (normalised pixels) and return
logits of shape (B, num_classes).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import torch
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


class _WhiteningConv(nn.Conv2d):
    """First layer of :func:`airbench`: a frozen patch-whitening convolution with a learnable bias.

    ``initialise_from_data`` sets its 2 * C * k * k filters to the eigenvectors of
    the covariance of the training images' k x k patches, each scaled by
    1 / sqrt(eigenvalue + eps), and their negatives (so the following GELU keeps
    both signs). The filters are never trained afterwards.
    """

    def __init__(self, channels: int, kernel: int):
        super().__init__(channels, 2 * channels * kernel * kernel, kernel, bias=True)
        self.weight.requires_grad_(False)
        with torch.no_grad():
            self.bias.zero_()

    @torch.no_grad()
    def initialise_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """``images``: float (N, C, H, W), normalised as the trainer feeds them."""
        c, (kh, kw) = self.in_channels, self.kernel_size
        # (N, C*kh*kw, L) -> (N*L, C*kh*kw): every kh x kw patch as one row, channel-major
        # like the conv weight, so an eigenvector reshapes straight into a filter.
        patches = F.unfold(images.float(), (kh, kw)).transpose(1, 2).reshape(-1, c * kh * kw)
        # float64 for the covariance: 5,000 CIFAR images give 4.8 M patches, and
        # eigh of a near-singular matrix in float32 loses the small eigenvalues.
        patches = patches.double()
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        order = eigenvalues.argsort(descending=True)
        filters = (eigenvectors[:, order] / torch.sqrt(eigenvalues[order] + eps)).T
        filters = filters.reshape(-1, c, kh, kw).to(self.weight.dtype)
        self.weight.copy_(torch.cat([filters, -filters]))


class _Conv3x3(nn.Conv2d):
    """3x3 same-padding convolution, no bias, whose first ``in`` filters start as the identity.

    The identity (Dirac) start makes each block begin close to a residual
    pass-through, which lets the plain (non-residual) network train fast at a high lr.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, padding=1, bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(cin, cout)])


def _frozen_scale_batchnorm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with a learnable shift only: the scale stays 1 (the next layer can rescale)."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)
    return norm


class _AirbenchBlock(nn.Sequential):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU; halves H and W."""

    def __init__(self, cin: int, cout: int, bn_momentum: float):
        super().__init__(
            _Conv3x3(cin, cout), nn.MaxPool2d(2),
            _frozen_scale_batchnorm(cout, bn_momentum), nn.GELU(),
            _Conv3x3(cout, cout),
            _frozen_scale_batchnorm(cout, bn_momentum), nn.GELU(),
        )


class AirbenchNet(nn.Sequential):
    """Airbench-class CIFAR network (after Jordan 2024, "94% on CIFAR-10 in 3.29 seconds").

    Layers: a frozen 2x2 patch-whitening conv (3 -> 24 channels, no padding:
    32 -> 31 px) + GELU, three blocks of :class:`_AirbenchBlock` with widths
    (w, 4w, 4w) (31 -> 15 -> 7 -> 3 px), a 3x3 max-pool to 1x1, and a linear
    classifier without bias whose logits are scaled by ``logit_scale``. About
    1.97 M parameters at w = 64 and 10 classes.

    The whitening filters need the training images: the trainer calls
    :meth:`initialise_from_data` with the first :attr:`data_init_samples`
    normalised training images before the first step.
    """

    data_init_samples = 5000

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int = 64,
                 whiten_kernel: int = 2, bn_momentum: float = 0.4, logit_scale: float = 1 / 9):
        c = in_shape[0]
        whiten = _WhiteningConv(c, whiten_kernel)
        widths = (width, 4 * width, 4 * width)
        super().__init__(
            whiten, nn.GELU(),
            _AirbenchBlock(whiten.out_channels, widths[0], bn_momentum),
            _AirbenchBlock(widths[0], widths[1], bn_momentum),
            _AirbenchBlock(widths[1], widths[2], bn_momentum),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(widths[2], num_classes, bias=False),
        )
        self.logit_scale = float(logit_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.logit_scale

    def initialise_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from float (N, C, H, W) normalised training images."""
        self[0].initialise_from_data(images)


def airbench(in_shape: tuple[int, int, int], num_classes: int, width: int = 64,
             whiten_kernel: int = 2, bn_momentum: float = 0.4,
             logit_scale: float = 1 / 9) -> nn.Module:
    """The speed recipe's network, :class:`AirbenchNet`; ``bn_momentum`` in torch's convention
    (weight of the new batch in the running statistics)."""
    return AirbenchNet(in_shape, num_classes, width, whiten_kernel, bn_momentum, logit_scale)


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
    "airbench": airbench,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def _factory(arch: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[arch]
    except KeyError:
        raise KeyError(f"unknown model {arch!r}; choose one of {sorted(MODELS)}") from None


def model_options(arch: str) -> dict[str, Any]:
    """The keyword options model ``arch`` takes, name -> default, in signature order.

    Read from its factory's signature (every parameter after ``in_shape`` and
    ``num_classes``), so a new option needs no second list anywhere: the
    config check (:func:`model_option_problems`) follows it.
    """
    params = list(inspect.signature(_factory(arch)).parameters.values())[2:]
    return {
        p.name: p.default for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _wanted_type(default: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """(type name, test) for an option whose default is ``default``; None: not checked."""
    if isinstance(default, bool):
        return "a boolean", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    return None


def _value(default: Any) -> str:
    return f"{default:g}" if isinstance(default, float) else repr(default)


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} (required)" if default is inspect.Parameter.empty
        else f"{name} (default {_value(default)})"
        for name, default in options.items()
    )


def model_option_problems(arch: str, options: dict[str, Any], key: str = "options") -> list[str]:
    """Each option in ``options`` that model ``arch`` does not take, or of the wrong type.

    Args:
        arch: a name in :data:`MODELS`.
        options: the keyword options for its factory (config ``<model>.options``).
        key: how the messages name ``options`` (e.g. ``scoring_model.options``).

    Returns:
        One message per problem, each starting with ``'<key>.<option>'`` and naming
        the model, the options it takes (from :func:`model_options`) and the fix;
        empty when every option is fine.
    """
    accepted = model_options(arch)
    problems = []
    for name, value in options.items():
        where = f"'{key}.{name}'"
        if name not in accepted:
            if not accepted:
                problems.append(
                    f"{where}: model {arch!r} takes no options; fix: remove {key}"
                    f" (leave it empty)")
                continue
            close = difflib.get_close_matches(str(name), accepted, n=1, cutoff=0.7)
            problems.append(
                f"{where}: model {arch!r} has no option {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; allowed options of {arch!r}: {_describe(accepted)}; fix: rename or"
                f" remove {name!r} in {key}"
            )
            continue
        wanted = _wanted_type(accepted[name])
        if wanted is not None and not wanted[1](value):
            problems.append(
                f"{where}: {value!r} is not {wanted[0]}; model {arch!r} takes {name} as"
                f" {wanted[0]} (default {_value(accepted[name])}); fix: e.g."
                f" {name}: {_value(accepted[name])}"
            )
    return problems


def build_model(
    arch: str, in_shape: tuple[int, int, int], num_classes: int, **options: object
) -> nn.Module:
    """Build model ``arch`` for images of ``in_shape`` = (C, H, W).

    Raises:
        KeyError: ``arch`` is not in :data:`MODELS`.
        TypeError: an option the model does not take, or of the wrong type
            (:func:`model_option_problems`).
    """
    factory = _factory(arch)
    problems = model_option_problems(arch, options)
    if problems:
        raise TypeError("invalid model options: " + "; ".join(problems))
    return factory(tuple(in_shape), int(num_classes), **options)


def data_init_samples(model: nn.Module) -> int:
    """How many training images ``model`` needs before training (0: none).

    A model that needs them (e.g. :class:`AirbenchNet`'s whitening layer) has a
    ``data_init_samples`` attribute and an ``initialise_from_data(images)``
    method, which :func:`unseen.train.train_model` calls with the first that
    many normalised training images.
    """
    return int(getattr(model, "data_init_samples", 0)) if hasattr(
        model, "initialise_from_data") else 0


def is_convolutional(model: nn.Module) -> bool:
    """True if the model has 2-d convolutions (then channels_last pays off on GPU)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters."""
    return sum(p.numel() for p in model.parameters())

