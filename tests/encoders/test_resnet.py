"""ResNet18: torchvision state-dict compatibility, local weights, first-convolution rule, errors.

The built-in ResNet18 is checked everywhere against the stored key list and against a
functional forward pass written from torchvision's architecture. ``test_torchvision_*`` compare
with torchvision itself; they run only where torchvision imports (it cannot on the CPU machines
this project is developed on). On a machine with torchvision (e.g. a CUDA box):

    pip install torchvision && pytest tests/encoders/test_resnet.py -k torchvision
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pcflow.encoders import (
    PointNetEncoder,
    ResNet18,
    ResNetImageEncoder,
    adapt_first_convolution,
    torchvision_resnet18_keys,
)
from pcflow.encoders.resnet import _torchvision_resnet18

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _entries(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(value.shape)) for name, value in state.items()]


def _randomise_statistics(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)


def _reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ResNet18 in evaluation mode with functional ops, from torchvision/models/resnet.py."""

    def bn(prefix: str, h: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            h,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
            eps=1e-5,
        )

    h = F.conv2d(x, state["conv1.weight"], stride=2, padding=3)
    h = F.max_pool2d(F.relu(bn("bn1", h)), kernel_size=3, stride=2, padding=1)
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride = 2 if (layer > 1 and block == 0) else 1
            out = F.relu(
                bn(f"{p}.bn1", F.conv2d(h, state[f"{p}.conv1.weight"], stride=stride, padding=1))
            )
            out = bn(f"{p}.bn2", F.conv2d(out, state[f"{p}.conv2.weight"], padding=1))
            if f"{p}.downsample.0.weight" in state:
                h = bn(
                    f"{p}.downsample.1",
                    F.conv2d(h, state[f"{p}.downsample.0.weight"], stride=stride),
                )
            h = F.relu(out + h)
    h = h.mean(dim=(2, 3))
    return F.linear(h, state["fc.weight"], state["fc.bias"])


def test_stored_key_list_is_torchvisions_resnet18() -> None:
    entries = torchvision_resnet18_keys()
    assert len(entries) == 122
    assert entries[0] == ("conv1.weight", (64, 3, 7, 7))
    assert entries[-2:] == [("fc.weight", (1000, 512)), ("fc.bias", (1000,))]
    parameters = sum(math.prod(s) for n, s in entries if not n.endswith(BUFFERS))
    assert parameters == 11_689_512  # ResNet18's published parameter count


def test_builtin_state_dict_matches_stored_keys_and_shapes() -> None:
    model = ResNet18()
    assert _entries(model.state_dict()) == torchvision_resnet18_keys()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512


def test_builtin_forward_matches_functional_reference() -> None:
    model = ResNet18(num_classes=10).double().eval()
    _randomise_statistics(model)
    images = torch.rand(2, 3, 40, 33, dtype=torch.float64)
    torch.testing.assert_close(model(images), _reference_forward(model.state_dict(), images))


def test_torchvision_state_dict_and_outputs_match_builtin() -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18()
    assert _entries(reference.state_dict()) == torchvision_resnet18_keys()
    _randomise_statistics(reference)
    builtin = ResNet18()
    builtin.load_state_dict(reference.state_dict())
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(builtin.eval()(images), reference.eval()(images))
    encoder = ResNetImageEncoder(out_features=8, backend="torchvision")
    assert encoder.backend == "torchvision"
    assert _entries(encoder.backbone.state_dict())[:-2] == torchvision_resnet18_keys()[:-2]


def test_torchvision_backend_availability_is_reported() -> None:
    if _torchvision_resnet18() is None:
        with pytest.raises(ImportError, match="torchvision cannot import"):
            ResNetImageEncoder(backend="torchvision")
        assert ResNetImageEncoder(out_features=4).backend == "builtin"
    else:
        assert ResNetImageEncoder(out_features=4).backend == "torchvision"


def test_encoder_shapes_and_head() -> None:
    encoder = ResNetImageEncoder(out_features=32, in_channels=4, backend="builtin")
    assert tuple(encoder.backbone.conv1.weight.shape) == (64, 4, 7, 7)
    assert tuple(encoder.backbone.fc.weight.shape) == (32, 512)
    assert encoder(torch.rand(2, 4, 32, 40)).shape == (2, 32)


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ResNet18]:
    """A torchvision-layout state dict with non-trivial statistics, saved once per module."""
    source = ResNet18()
    _randomise_statistics(source)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(source.state_dict(), path)
    return path, source


def test_weights_from_a_local_file_round_trip(saved_weights: tuple[Path, ResNet18]) -> None:
    path, source = saved_weights
    encoder = ResNetImageEncoder(out_features=16, weights=path, backend="builtin")
    loaded = encoder.backbone.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], value), name
    # Same trunk: with the head set to the first 16 classifier rows the outputs agree.
    with torch.no_grad():
        encoder.backbone.fc.weight.copy_(source.fc.weight[:16])
        encoder.backbone.fc.bias.copy_(source.fc.bias[:16])
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(encoder.eval()(images), source.eval()(images)[:, :16])


def test_weights_wrapped_in_a_checkpoint_or_given_in_memory(
    tmp_path: Path, saved_weights: tuple[Path, ResNet18]
) -> None:
    _, source = saved_weights
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    from_file = ResNetImageEncoder(out_features=4, weights=path, backend="builtin")
    in_memory = ResNetImageEncoder(out_features=4, weights=source.state_dict(), backend="builtin")
    for encoder in (from_file, in_memory):
        assert torch.equal(encoder.backbone.bn1.running_var, source.bn1.running_var)


def test_first_convolution_rule_for_four_and_one_channels(
    saved_weights: tuple[Path, ResNet18],
) -> None:
    path, source = saved_weights
    rgb = source.conv1.weight.detach()
    four = ResNetImageEncoder(out_features=4, in_channels=4, weights=path, backend="builtin")
    expected = torch.stack([rgb[:, 0], rgb[:, 1], rgb[:, 2], rgb[:, 0]], dim=1) * 0.75
    torch.testing.assert_close(four.backbone.conv1.weight.detach(), expected)
    one = ResNetImageEncoder(out_features=4, in_channels=1, weights=path, backend="builtin")
    torch.testing.assert_close(one.backbone.conv1.weight.detach(), rgb.sum(1, keepdim=True))
    # A grey image gives the RGB response exactly for 1 channel or a multiple of 3.
    grey = torch.rand(1, 1, 32, 32)
    response = F.conv2d(grey.expand(-1, 3, -1, -1), rgb, stride=2, padding=3)
    for channels in (1, 3, 6):
        weight = adapt_first_convolution(rgb, channels)
        adapted = F.conv2d(grey.expand(-1, channels, -1, -1), weight, stride=2, padding=3)
        torch.testing.assert_close(adapted, response, rtol=1e-4, atol=1e-5)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth.*does not exist"):
        ResNetImageEncoder(weights=tmp_path / "nowhere.pth", backend="builtin")


def test_corrupt_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="could not be read as a torch state dict"):
        ResNetImageEncoder(weights=path, backend="builtin")


def test_weights_of_another_network(tmp_path: Path) -> None:
    path = tmp_path / "pointnet.pth"
    torch.save(PointNetEncoder().state_dict(), path)
    with pytest.raises(ValueError, match=r"missing keys \['bn1.bias'"):
        ResNetImageEncoder(weights=path, backend="builtin")


def test_weights_with_wrong_shapes(tmp_path: Path) -> None:
    state = ResNet18().state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1\.weight: expected \(128, 64, 3, 3\)"):
        ResNetImageEncoder(weights=state, backend="builtin")


def test_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="must be a state dict"):
        ResNetImageEncoder(weights=path, backend="builtin")


@pytest.mark.parametrize(
    ("images", "error", "pattern"),
    [
        (torch.rand(2, 3, 32, 32), ValueError, r"4 channels.*got shape \(2, 3, 32, 32\)"),
        (torch.rand(4, 32, 32), ValueError, r"4 dimensions.*got shape \(4, 32, 32\)"),
        (torch.rand(2, 4, 16, 64), ValueError, r"at least 32x32.*got shape \(2, 4, 16, 64\)"),
        (torch.zeros(2, 4, 32, 32, dtype=torch.uint8), TypeError, "floating-point"),
        (torch.full((1, 4, 32, 32), float("nan")), ValueError, "NaN"),
        (torch.rand(0, 4, 32, 32), ValueError, "empty batch"),
    ],
)
def test_bad_images_are_rejected(images: torch.Tensor, error: type, pattern: str) -> None:
    encoder = ResNetImageEncoder(out_features=4, in_channels=4, backend="builtin")
    with pytest.raises(error, match=pattern):
        encoder(images)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="arch must be one of"):
        ResNetImageEncoder("resnet50")
    with pytest.raises(ValueError, match="backend must be one of"):
        ResNetImageEncoder(backend="timm")


def _small_reference(net, images: torch.Tensor) -> torch.Tensor:
    """SmallResNet written out functionally (eval mode): stem, one basic block per stage."""

    def bn(x: torch.Tensor, layer: torch.nn.BatchNorm2d) -> torch.Tensor:
        return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias)

    x = F.relu(bn(F.conv2d(images, net.conv1.weight, stride=2, padding=1), net.bn1))
    for index, block in enumerate(net.layers):
        stride = 1 if index == 0 else 2
        out = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1))
        out = bn(F.conv2d(out, block.conv2.weight, padding=1), block.bn2)
        if block.downsample is not None:
            x = bn(F.conv2d(x, block.downsample[0].weight, stride=stride), block.downsample[1])
        x = F.relu(out + x)
    return F.linear(x.mean(dim=(2, 3)), net.fc.weight, net.fc.bias)


def test_small_encoder_for_cpu_presets() -> None:
    from pcflow.encoders import SmallResNet

    torch.manual_seed(0)
    encoder = ResNetImageEncoder("small", out_features=32, in_channels=4).eval()
    assert isinstance(encoder.backbone, SmallResNet) and encoder.backend == "builtin"
    images = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        features = encoder(images)
        torch.testing.assert_close(features, _small_reference(encoder.backbone, images))
    assert features.shape == (2, 32)
    small = sum(p.numel() for p in encoder.parameters())
    full = sum(p.numel() for p in ResNetImageEncoder("resnet18", 32, in_channels=4).parameters())
    assert small * 20 < full
    with pytest.raises(ValueError, match="arch='small' has none"):
        ResNetImageEncoder("small", weights={"conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="arch must be one of"):
        ResNetImageEncoder("resnet50")
    with pytest.raises(ValueError, match="widths must be positive"):
        SmallResNet(widths=(16, 0))


def test_group_norm_small_encoder_is_the_same_function_in_training_and_evaluation() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 4, 32, 32)
    group = ResNetImageEncoder("small_gn", out_features=8, in_channels=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in group.modules())
    batch = ResNetImageEncoder("small", out_features=8, in_channels=4)
    with torch.no_grad():
        torch.testing.assert_close(group.train()(images), group.eval()(images))
        # BatchNorm, the default, is not: batch statistics against running statistics.
        assert not torch.allclose(batch.train()(images), batch.eval()(images), atol=1e-3)
        # A sample's features do not depend on the rest of the batch.
        torch.testing.assert_close(group.train()(images)[:1], group.train()(images[:1]))
    with pytest.raises(ValueError, match="norm must be one of"):
        from pcflow.encoders import SmallResNet

        SmallResNet(norm="layer")
