"""GAN losses and gradient penalties against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcflow.critics import (
    CrossModalCritic,
    critic_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)

REAL = torch.tensor([2.0, -1.0], dtype=torch.float64)
FAKE = torch.tensor([0.5, -3.0], dtype=torch.float64)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# Values worked out by hand from REAL = [2, -1] and FAKE = [0.5, -3].
CRITIC_VALUES = {
    # 0.5 * mean(1, 4) + 0.5 * mean(0.25, 9)
    "lsgan": 0.5 * 2.5 + 0.5 * 4.625,
    "nonsaturating": (_softplus(-2.0) + _softplus(1.0)) / 2
    + (_softplus(0.5) + _softplus(-3.0)) / 2,
    # mean(relu(-1), relu(2)) + mean(relu(1.5), relu(-2))
    "hinge": 1.0 + 0.75,
    # mean(fake) - mean(real)
    "wasserstein": -1.25 - 0.5,
}
GENERATOR_VALUES = {
    "lsgan": 0.5 * (0.25 + 16.0) / 2,
    "nonsaturating": (_softplus(-0.5) + _softplus(3.0)) / 2,
    "hinge": 1.25,
    "wasserstein": 1.25,
}


@pytest.mark.parametrize("kind", list(CRITIC_VALUES))
def test_critic_loss_matches_hand_computation(kind: str) -> None:
    assert float(critic_loss(REAL, FAKE, kind)) == pytest.approx(CRITIC_VALUES[kind], rel=1e-12)


@pytest.mark.parametrize("kind", list(GENERATOR_VALUES))
def test_generator_loss_matches_hand_computation(kind: str) -> None:
    assert float(generator_loss(FAKE, kind)) == pytest.approx(GENERATOR_VALUES[kind], rel=1e-12)


def test_nonsaturating_is_binary_cross_entropy() -> None:
    real, fake = torch.randn(5), torch.randn(7)
    expected = F.binary_cross_entropy_with_logits(
        real, torch.ones(5)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros(7))
    torch.testing.assert_close(critic_loss(real, fake, "nonsaturating"), expected)
    torch.testing.assert_close(
        generator_loss(fake, "nonsaturating"),
        F.binary_cross_entropy_with_logits(fake, torch.ones(7)),
    )


def test_lsgan_optimum_is_real_one_fake_zero() -> None:
    assert float(critic_loss(torch.ones(3), torch.zeros(3))) == 0.0
    assert float(generator_loss(torch.ones(3))) == 0.0


def test_bad_kind_and_logits_are_rejected() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        critic_loss(REAL, FAKE, "vanilla")
    with pytest.raises(ValueError, match="kind must be one of"):
        generator_loss(FAKE, "wgan")
    with pytest.raises(TypeError, match="real_logits must be a floating-point"):
        critic_loss(torch.ones(2, dtype=torch.long), FAKE)
    with pytest.raises(ValueError, match="fake_logits is empty"):
        generator_loss(torch.zeros(0))


class LinearCritic(nn.Module):
    """D(x, I) = <W, x> + c * mean(I): gradient W everywhere."""

    def __init__(self, num_points: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_points, 3, dtype=torch.float64))
        self.image_weight = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, points: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return (points * self.weight).sum(dim=(1, 2)) + self.image_weight * images.mean((1, 2, 3))


class QuadraticCritic(nn.Module):
    """D(x, I) = sum(A * x^2) + sum(C * I^2): gradients 2 A x and 2 C I."""

    def __init__(self, num_points: int, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(num_points, 3, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(*image_shape, dtype=torch.float64))

    def forward(self, points: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return (self.a * points**2).sum(dim=(1, 2)) + (self.c * images**2).sum(dim=(1, 2, 3))


def _data(batch: int = 3, num_points: int = 5) -> tuple[torch.Tensor, ...]:
    real = torch.randn(batch, num_points, 3, dtype=torch.float64)
    fake = torch.randn(batch, num_points, 3, dtype=torch.float64, requires_grad=True)
    images = torch.rand(batch, 2, 4, 4, dtype=torch.float64)
    return real, fake, images


def test_gradient_penalty_of_a_linear_critic() -> None:
    real, fake, images = _data()
    critic = LinearCritic(5)
    penalty = gradient_penalty(critic, real, fake, images)
    norm = float(critic.weight.detach().norm())
    assert float(penalty.detach()) == pytest.approx((norm - 1.0) ** 2, rel=1e-10)
    penalty.backward()  # d/dW (|W| - 1)^2 = 2 (|W| - 1) W / |W|
    expected = 2 * (norm - 1.0) * critic.weight.detach() / norm
    torch.testing.assert_close(critic.weight.grad, expected)
    assert fake.grad is None  # the penalty trains the critic only


def test_gradient_penalty_at_given_interpolates() -> None:
    real, fake, images = _data()
    critic = QuadraticCritic(5, (2, 4, 4))
    alpha = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, images, alpha=alpha, target=0.5)
    expected = 0.0
    a = critic.a.detach()
    for b in range(3):
        x = alpha[b] * real[b] + (1 - alpha[b]) * fake[b].detach()
        expected += (float((2 * a * x).norm()) - 0.5) ** 2 / 3
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("include_images", [False, True])
def test_r1_penalty_of_a_quadratic_critic(include_images: bool) -> None:
    real, _, images = _data()
    critic = QuadraticCritic(5, (2, 4, 4))
    penalty = r1_penalty(critic, real, images, include_images=include_images)
    a, c = critic.a.detach(), critic.c.detach()
    expected = 0.0
    for b in range(3):
        squared = float(((2 * a * real[b]) ** 2).sum())
        if include_images:
            squared += float(((2 * c * images[b]) ** 2).sum())
        expected += squared / 3
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-10)
    penalty.backward()
    assert critic.a.grad is not None and critic.a.grad.abs().sum() > 0


def test_penalties_refuse_a_batch_norm_cross_modal_critic() -> None:
    critic = CrossModalCritic(hidden_features=(8,)).train()
    points, images = torch.randn(2, 16, 3), torch.rand(2, 4, 32, 32)
    with pytest.raises(ValueError, match="norm='batch' in training mode"):
        gradient_penalty(critic, points, points + 0.1, images)
    with pytest.raises(ValueError, match="norm='batch' in training mode"):
        r1_penalty(critic, points, images)
    wrapped = nn.Module()
    wrapped.module = critic  # as DistributedDataParallel holds it
    with pytest.raises(ValueError, match="norm='batch' in training mode"):
        gradient_penalty(wrapped, points, points + 0.1, images)
    critic.eval()  # running statistics: per-sample again
    assert torch.isfinite(gradient_penalty(critic, points, points + 0.1, images))


def test_penalties_with_a_layer_norm_cross_modal_critic() -> None:
    critic = CrossModalCritic(hidden_features=(8,), norm="layer").train()
    points, images = torch.randn(2, 16, 3), torch.rand(2, 4, 32, 32)
    lengths = torch.tensor([16, 9])
    penalty = gradient_penalty(critic, points, points + 0.1, images, lengths=lengths)
    penalty.backward()
    assert critic.mlp[0].weight.grad.abs().sum() > 0
    with pytest.warns(UserWarning, match="BatchNorm layers in training mode"):
        r1_penalty(critic, points, images, include_images=True)
    critic.image_encoder.eval()
    assert torch.isfinite(r1_penalty(critic, points, images, include_images=True))


def test_penalty_warns_for_other_critics_with_batch_norm() -> None:
    class BatchNormCritic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(3)

        def forward(self, points: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            return self.norm(points.mean(1)).sum(1)

    points, images = torch.randn(4, 6, 3), torch.rand(4, 1, 2, 2)
    with pytest.warns(UserWarning, match="ill-defined"):
        gradient_penalty(BatchNormCritic(), points, points, images)


def test_penalty_input_errors() -> None:
    real, fake, images = _data()
    critic = LinearCritic(5)
    with pytest.raises(ValueError, match="same shape to be interpolated"):
        gradient_penalty(critic, real, fake[:, :4], images)
    with pytest.raises(ValueError, match="real_points has batch size 3 but images"):
        gradient_penalty(critic, real, fake, images[:2])
    with pytest.raises(ValueError, match=r"alpha must have shape \(3,\)"):
        gradient_penalty(critic, real, fake, images, alpha=torch.full((3,), 1.5))
    with pytest.raises(ValueError, match=r"real_points must have shape \(B, N, 3\)"):
        r1_penalty(critic, real[..., :2], images)
    with pytest.raises(ValueError, match=r"one logit per pair, shape \(3,\)"):
        r1_penalty(lambda p, i: p.sum(), real, images)


def test_penalties_of_a_critic_that_ignores_its_input() -> None:
    real, fake, images = _data()

    def points_only(points: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return (points**2).sum(dim=(1, 2))

    # The images' gradient is zero, not an error; R1 is mean |2 x|^2.
    expected = float((4 * real**2).sum(dim=(1, 2)).mean())
    penalty = r1_penalty(points_only, real, images, include_images=True)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-12)
    # A critic constant in the points: zero gradient, so the WGAN-GP penalty is (0 - 1)^2.
    constant = gradient_penalty(lambda p, i: i.sum((1, 2, 3)), real, fake, images)
    assert float(constant) == 1.0
