"""A cross-modal GAN's objectives against their formulas, and the frozen critic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pcflow.critics import critic_objective, frozen, generator_objective


class PairCritic(nn.Module):
    """A small critic of (cloud, image) pairs with a BatchNorm, as the real one has."""

    def __init__(self) -> None:
        super().__init__()
        self.points = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.images = nn.Linear(2, 4)

    def forward(self, points: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        cloud = self.norm(self.points(points).mean(1))
        return (cloud * self.images(images.flatten(1)[:, :2])).sum(1)


def test_generator_objective_adds_the_weighted_adversarial_term() -> None:
    torch.manual_seed(0)
    critic, images = PairCritic().double(), torch.rand(4, 2, 1, 1, dtype=torch.float64)
    fake = torch.randn(4, 10, 3, dtype=torch.float64, requires_grad=True)
    terms = {"loss": torch.rand(4, dtype=torch.float64), "fake": fake}
    weights = {"adversarial_weight": 3.0, "kind": "lsgan"}
    loss, adversarial = generator_objective(terms["loss"], fake, images, critic, **weights)
    # LSGAN's generator loss written out: mean((D(I, G(I)) - 1)^2) / 2, on batch statistics.
    expected_adversarial = 0.5 * ((critic(fake, images) - 1) ** 2).mean()
    # The logits are taken in float32 (as under mixed precision): float32's tolerance.
    torch.testing.assert_close(adversarial, expected_adversarial.float())
    expected = terms["loss"].mean() + 3.0 * expected_adversarial
    torch.testing.assert_close(loss, expected.float())
    loss.backward()
    assert fake.grad is not None and bool(fake.grad.abs().sum() > 0)  # reaches the generator
    assert all(p.grad is None for p in critic.parameters())  # not the critic
    alone, none = generator_objective(terms["loss"], fake, images, None, **weights)
    assert none is None and torch.equal(alone, terms["loss"].mean().float())


def test_critic_objective_scores_real_against_fake_and_adds_penalties() -> None:
    torch.manual_seed(1)
    critic, images = PairCritic().double(), torch.rand(4, 2, 1, 1, dtype=torch.float64)
    critic.norm = nn.Identity()  # per-sample penalties want no batch coupling
    real = torch.randn(4, 10, 3, dtype=torch.float64)
    fake = torch.randn(4, 10, 3, dtype=torch.float64, requires_grad=True)
    loss = critic_objective(critic, images, real, fake, kind="lsgan")
    # LSGAN's critic loss written out, on one batch of real and fake together.
    logits = critic(torch.cat([real, fake.detach()]), torch.cat([images, images]))
    real_logits, fake_logits = logits.chunk(2)
    expected = 0.5 * ((real_logits - 1) ** 2).mean() + 0.5 * (fake_logits**2).mean()
    torch.testing.assert_close(loss, expected.float())  # logits taken in float32
    loss.backward()
    assert fake.grad is None  # the generator is not updated by the critic's loss
    penalised = critic_objective(critic, images, real, fake, kind="lsgan", r1_weight=2.0)
    assert float(penalised.detach()) > float(loss.detach())


def test_frozen_critic_keeps_its_parameters_and_running_statistics() -> None:
    critic = PairCritic()
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    with frozen(critic):
        assert not any(p.requires_grad for p in critic.parameters())
        critic(torch.randn(4, 10, 3) * 5 + 3, torch.rand(4, 2, 1, 1)).sum()
    assert all(p.requires_grad for p in critic.parameters())
    for key, value in critic.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert critic.norm.momentum == 0.1


@pytest.mark.parametrize("kind", ["lsgan", "hinge"])
def test_generator_objective_follows_the_gan_kind(kind: str) -> None:
    from pcflow.critics import generator_loss

    torch.manual_seed(2)
    critic, images = PairCritic(), torch.rand(3, 2, 1, 1)
    terms = {"loss": torch.zeros(3), "fake": torch.randn(3, 10, 3)}
    _, adversarial = generator_objective(terms["loss"], terms["fake"], images, critic, kind=kind)
    torch.testing.assert_close(adversarial, generator_loss(critic(terms["fake"], images), kind))
