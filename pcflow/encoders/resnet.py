"""ResNet image encoders, with a built-in ResNet18 whose state dict matches torchvision's.

torchvision is used when it imports. Where it cannot (its builds are CUDA-only on some
machines), a built-in ResNet18 takes its place whose ``state_dict()`` has exactly the keys,
order and shapes of ``torchvision.models.resnet18()``, so ImageNet weights saved from torchvision
load into either. Weights are only ever read from a local file; nothing is downloaded.

The stored key list ``resnet18_state_dict_keys.json`` (next to this module) is torchvision's
``resnet18().state_dict()`` written as ``[name, shape]`` pairs; the tests check the built-in
network against it everywhere, and against torchvision itself where torchvision imports: on a
machine with torchvision, run ``pytest tests/encoders/test_resnet.py -k torchvision``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from importlib import resources

import torch
from torch import Tensor, nn

from pcflow._checks import check_finite

__all__ = [
    "MIN_IMAGE_SIZE",
    "ResNet18",
    "ResNetImageEncoder",
    "SmallResNet",
    "adapt_first_convolution",
    "check_images",
    "torchvision_resnet18_keys",
]

MIN_IMAGE_SIZE = 32
"""Smallest accepted image height and width: ResNets downsample by 32 before pooling."""

_ARCHS = ("resnet18", "small", "small_gn")
_BACKENDS = ("auto", "torchvision", "builtin")


def check_images(name: str, images: Tensor, channels: int, min_size: int = MIN_IMAGE_SIZE) -> int:
    """Check a batch of images shaped ``(B, channels, H, W)`` with ``H, W >= min_size``.

    Arguments:
        name: The argument's name, used in the message.
        images: The tensor to check.
        channels: The required number of channels.
        min_size: The smallest accepted height and width.

    Returns:
        The batch size ``B``.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (B, {channels}, H, W)")
    shape = "(" + ", ".join(str(s) for s in images.shape) + ")"
    if images.dim() != 4:
        raise ValueError(
            f"{name} must have shape (B, {channels}, H, W) (4 dimensions), got shape {shape}"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (e.g. RGB in [0, 1]), got dtype {images.dtype}"
        )
    if images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels, shape (B, {channels}, H, W), got shape {shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0), shape {shape}")
    if images.shape[2] < min_size or images.shape[3] < min_size:
        raise ValueError(
            f"{name} must be at least {min_size}x{min_size} pixels (H, W >= {min_size}), "
            f"got shape {shape}"
        )
    check_finite(name, images)
    return images.shape[0]


def torchvision_resnet18_keys() -> list[tuple[str, tuple[int, ...]]]:
    """Return torchvision's ``resnet18().state_dict()`` entries as stored with pcflow.

    Returns:
        ``[(name, shape), ...]`` in state-dict order (122 entries, ``fc`` with 1000 classes).
    """
    text = resources.files("pcflow.encoders").joinpath("resnet18_state_dict_keys.json").read_text()
    return [(name, tuple(shape)) for name, shape in json.loads(text)["entries"]]


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (torchvision's ``BasicBlock`` names)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, norm: Callable[[int], nn.Module]
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                norm(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet18 with torchvision's parameter names, shapes and initialisation.

    ``ResNet18().state_dict()`` has exactly the keys and shapes of
    ``torchvision.models.resnet18().state_dict()`` (checked in the tests against a stored list
    and against torchvision), so the same weight files load into both.

    References:
        He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.

    Arguments:
        num_classes: Output size of the final linear layer ``fc``.

    Example:
        >>> import torch
        >>> from pcflow.encoders import ResNet18
        >>> ResNet18(num_classes=10).eval()(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for index, planes in enumerate((64, 128, 256, 512), start=1):
            stride = 1 if index == 1 else 2
            layer = nn.Sequential(
                _BasicBlock(in_planes, planes, stride, nn.BatchNorm2d),
                _BasicBlock(planes, planes, 1, nn.BatchNorm2d),
            )
            self.add_module(f"layer{index}", layer)
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """Map images ``(B, C, H, W)`` to ``(B, num_classes)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _group_norm(channels: int) -> nn.Module:
    groups = 8 if channels % 8 == 0 else 1
    return nn.GroupNorm(groups, channels)


_NORMS: dict[str, Callable[[int], nn.Module]] = {"batch": nn.BatchNorm2d, "group": _group_norm}


class SmallResNet(nn.Module):
    """A narrow, shallow ResNet for CPU presets: one basic block per stage, widths 16-128.

    A 3x3 stem of ``widths[0]`` channels with stride 2, then one `ResNet18`-style basic block
    per width, the first at stride 1 and the others at stride 2, a global average pool and a
    linear layer ``fc``. With the default widths it has about 1/35 of ResNet18's parameters
    and, on 64 x 64 images, about 1/20 of its multiply-adds (measured by the FlowGAN example:
    `examples/flowgan/README.md`). It downsamples by 16 instead of 32.

    Arguments:
        num_classes: Output size of ``fc``.
        in_channels: Image channels.
        widths: Channels of the stages.
        norm: ``"batch"`` (BatchNorm, as ResNet18) or ``"group"`` (GroupNorm with 8 groups, or
            one per channel below 8 channels): no running statistics, so the network computes
            the same function in training and evaluation mode.

    Example:
        >>> import torch
        >>> from pcflow.encoders import SmallResNet
        >>> SmallResNet(10, in_channels=4).eval()(torch.rand(1, 4, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 512,
        in_channels: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be positive channel counts, got {widths!r}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
        make_norm = _NORMS[norm]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = make_norm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        blocks, in_planes = [], widths[0]
        for index, planes in enumerate(widths):
            blocks.append(_BasicBlock(in_planes, planes, 1 if index == 0 else 2, make_norm))
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        """Map images ``(B, in_channels, H, W)`` to ``(B, num_classes)``."""
        x = self.layers(self.relu(self.bn1(self.conv1(images))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _torchvision_resnet18() -> nn.Module | None:
    try:
        from torchvision.models import resnet18
    except Exception:  # ImportError, or a CUDA-only build failing to load its libraries
        return None
    return resnet18()


def _read_state_dict(weights: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(weights, Mapping):
        state = dict(weights)
    else:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file {path!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"weights file {path!r} could not be read as a torch state dict "
                f"(torch.load(weights_only=True) failed: {type(error).__name__}: {error})"
            ) from error
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]  # a training checkpoint wrapping the state dict
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError(
            "weights must be a state dict mapping parameter names to tensors "
            f"(torchvision resnet18 layout), got {type(state).__name__}"
        )
    return dict(state)


def _load_backbone_weights(
    backbone: nn.Module, weights: str | os.PathLike | Mapping[str, Tensor]
) -> None:
    """Load every entry but ``fc`` (replaced by the encoder's head), checking names and shapes."""
    state = {k: v for k, v in _read_state_dict(weights).items() if not k.startswith("fc.")}
    expected = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            "weights do not match torchvision's resnet18 layout: "
            f"{len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    wrong = [
        f"{k}: expected {tuple(v.shape)}, got {tuple(state[k].shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"weights have wrong shapes for resnet18: {wrong[:5]}")
    backbone.load_state_dict(state, strict=False)


def adapt_first_convolution(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt RGB filters ``(64, 3, k, k)`` to ``in_channels`` input channels.

    The rule of timm's ``adapt_input_conv``: one channel gets the sum of the RGB filters; any
    other number repeats the RGB filters cyclically (R, G, B, R, ...) and scales them by
    ``3 / in_channels``, which keeps the scale of the first layer's activations. For one
    channel, or a multiple of three, an image whose channels all hold the same grey value
    gives exactly the response of the RGB image of that grey; for other numbers (FlowGAN's
    four, grey + RGB) approximately.

    Arguments:
        weight: Pretrained filters, ``(out_channels, 3, kH, kW)``.
        in_channels: The new number of input channels.

    Returns:
        Filters ``(out_channels, in_channels, kH, kW)``.
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels, device=weight.device) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


class ResNetImageEncoder(nn.Module):
    """Encode images ``(B, in_channels, H, W)`` to features ``(B, out_features)`` with a ResNet.

    The ResNet18 trunk (torchvision's when it imports, else `ResNet18`, identical state
    dict) with its classifier ``fc`` replaced by a linear head to ``out_features``, or, with
    ``arch="small"``, the much cheaper `SmallResNet` for CPU budgets (no pretrained weights).
    FlowGAN uses ``in_channels=4`` (grey + RGB) and 512 features for the generator's image
    encoder, 128 for the critic's image branch.

    Pretrained weights come from a local file only (never downloaded): ``weights`` is the path
    of a torchvision ``resnet18`` state dict (e.g. ImageNet weights saved with
    ``torch.save(resnet18(weights="IMAGENET1K_V1").state_dict(), path)`` on a machine with
    internet), read with ``torch.load(weights_only=True)``. Its ``fc`` entries are ignored (the
    head is new). With ``in_channels != 3`` the first convolution is adapted by
    `adapt_first_convolution`. A missing file, an unreadable file, or a state dict with
    other names or shapes raises an error that says which.

    Images must be at least ``MIN_IMAGE_SIZE`` (32) pixels high and wide: the trunk
    downsamples by 32 before its global average pool. The trunk holds BatchNorm layers; in
    training mode they couple the images of a batch.

    References:
        He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.

    Arguments:
        arch: Architecture; ``"resnet18"``, ``"small"`` (`SmallResNet`) or ``"small_gn"``
            (`SmallResNet` with GroupNorm: the same function in training and evaluation mode).
        out_features: Size of the output features.
        in_channels: Number of image channels.
        weights: ``None`` (random initialisation), a path to a local state-dict file, or a
            state dict already in memory.
        backend: ``"auto"`` (torchvision if it imports, else built-in), ``"torchvision"`` or
            ``"builtin"``.

    Example:
        >>> import torch
        >>> from pcflow.encoders import ResNetImageEncoder
        >>> encoder = ResNetImageEncoder(out_features=512, in_channels=4).eval()
        >>> encoder(torch.rand(2, 4, 64, 64)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        arch: str = "resnet18",
        out_features: int = 512,
        in_channels: int = 3,
        weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"arch must be one of {_ARCHS}, got {arch!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if in_channels < 1 or out_features < 1:
            raise ValueError(
                f"in_channels and out_features must be positive, got {in_channels}, {out_features}"
            )
        if arch in ("small", "small_gn"):
            if weights is not None:
                raise ValueError(
                    f"weights are torchvision resnet18 state dicts; arch={arch!r} has none, "
                    "give arch='resnet18' to load them"
                )
            self.backend = "builtin"
            norm = "group" if arch == "small_gn" else "batch"
            self.backbone = SmallResNet(out_features, in_channels, norm=norm)
            self.arch, self.in_channels, self.out_features = arch, in_channels, out_features
            return
        backbone = None if backend == "builtin" else _torchvision_resnet18()
        if backbone is None and backend == "torchvision":
            raise ImportError("backend='torchvision' was asked for but torchvision cannot import")
        self.backend = "builtin" if backbone is None else "torchvision"
        if backbone is None:
            backbone = ResNet18()
        if weights is not None:
            _load_backbone_weights(backbone, weights)
        if in_channels != 3:
            old = backbone.conv1
            new = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            if weights is None:
                nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            else:
                with torch.no_grad():
                    new.weight.copy_(adapt_first_convolution(old.weight, in_channels))
            backbone.conv1 = new
        backbone.fc = nn.Linear(512, out_features)
        self.backbone = backbone
        self.arch = arch
        self.in_channels = in_channels
        self.out_features = out_features

    def forward(self, images: Tensor) -> Tensor:
        """Encode a batch of images.

        Arguments:
            images: Images ``(B, in_channels, H, W)`` with ``H, W >= 32``, normalised as the
                weights expect.

        Returns:
            Features ``(B, out_features)``.
        """
        check_images("images", images, self.in_channels)
        return self.backbone(images)

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, in_channels={self.in_channels}, "
            f"out_features={self.out_features}, backend={self.backend!r}"
        )
