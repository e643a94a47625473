"""CrossModalCritic: the paper's layout, gradients to generated points, coupling, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pcflow.critics import CrossModalCritic, generator_loss


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def test_default_layout_is_the_papers() -> None:
    critic = CrossModalCritic()
    mlp = [tuple(m.weight.shape) for m in critic.mlp if isinstance(m, nn.Linear)]
    assert mlp == [(128, 256), (64, 128), (32, 64), (16, 32), (1, 16)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in critic.mlp) == 4
    slopes = {m.negative_slope for m in critic.mlp if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}
    assert not any(isinstance(m, nn.Sigmoid) for m in critic.modules())
    point = [tuple(m.weight.shape) for m in critic.point_encoder.mlp if isinstance(m, nn.Linear)]
    assert point == [(64, 3), (64, 64), (128, 64)]
    assert tuple(critic.image_encoder.backbone.conv1.weight.shape) == (64, 4, 7, 7)
    assert tuple(critic.image_encoder.backbone.fc.weight.shape) == (128, 512)


def test_generated_points_receive_gradients(images: torch.Tensor) -> None:
    critic = CrossModalCritic()  # paper default: BatchNorm, training mode
    offset = torch.zeros(3, 1, 3, requires_grad=True)  # a stand-in generator parameter
    generated = torch.randn(3, 64, 3) + offset
    generated.retain_grad()
    loss = generator_loss(critic(generated, images), kind="lsgan")
    loss.backward()
    assert generated.grad is not None and torch.isfinite(generated.grad).all()
    assert (generated.grad.abs().sum(dim=(1, 2)) > 0).all()
    assert offset.grad.abs().sum() > 0


@pytest.mark.parametrize(("norm", "coupled"), [("batch", True), ("layer", False), (None, False)])
def test_pairs_are_coupled_only_by_batch_norm(
    images: torch.Tensor, norm: str | None, coupled: bool
) -> None:
    critic = CrossModalCritic(hidden_features=(16,), norm=norm).double().train()
    points = torch.randn(3, 8, 3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda p: critic(p, images.double()), points)
    assert jacobian.shape == (3, 3, 8, 3)
    off_diagonal = jacobian.abs().sum(dim=(2, 3)) * (1 - torch.eye(3, dtype=torch.float64))
    assert bool((off_diagonal > 1e-12).any()) is coupled
    assert critic.couples_points_across_batch is coupled


def test_lengths_exclude_padding(images: torch.Tensor) -> None:
    critic = CrossModalCritic(norm="layer").eval()
    points = torch.randn(3, 10, 3)
    lengths = torch.tensor([10, 4, 7])
    other = points.clone()
    other[1, 4:] = 100.0
    other[2, 7:] = -100.0
    torch.testing.assert_close(critic(other, images, lengths), critic(points, images, lengths))


@pytest.mark.parametrize(
    ("points", "image_shape", "error", "pattern"),
    [
        (torch.randn(3, 10, 2), (3, 4, 32, 32), ValueError, r"points must have shape \(B, N, 3\)"),
        (torch.randn(3, 10, 3), (3, 3, 32, 32), ValueError, "images must have 4 channels"),
        (torch.randn(3, 10, 3), (3, 4, 24, 32), ValueError, "at least 32x32"),
        (torch.randn(2, 10, 3), (3, 4, 32, 32), ValueError, "points has batch size 2 but images"),
    ],
)
def test_bad_input_is_rejected(
    points: torch.Tensor, image_shape: tuple[int, ...], error: type, pattern: str
) -> None:
    critic = CrossModalCritic(hidden_features=(8,))
    with pytest.raises(error, match=pattern):
        critic(points, torch.rand(image_shape))


def test_bad_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="norm must be"):
        CrossModalCritic(norm="instance")
