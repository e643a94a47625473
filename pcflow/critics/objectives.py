"""The two sides of a cross-modal GAN's objective: the generator's and the critic's losses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pcflow.critics.freeze import frozen
from pcflow.critics.gan_losses import critic_loss, generator_loss, gradient_penalty, r1_penalty

__all__ = ["critic_objective", "generator_objective"]


def generator_objective(
    loss: Tensor,
    fake: Tensor | None,
    images: Tensor,
    critic: nn.Module | None,
    *,
    kind: str = "lsgan",
    adversarial_weight: float = 1.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[Tensor, Tensor | None]:
    """A generator's loss: the batch mean of its own per-shape loss plus, with a critic and
    generated clouds, the adversarial term, the critic (`frozen`) scoring them::

        L_G = mean_B L + w_adversarial * L_GAN^G(D(I, G(I)))

    Arguments:
        loss: The generator's own loss per shape, ``(B,)`` (FlowGAN: the ELBO's terms).
        fake: Generated clouds ``(B, N, 3)``, ``G(I)``, in the graph; ``None`` for none.
        images: The images they should fit, as the critic takes them ``(B, C, S, S)``.
        critic: ``D``; ``None`` before a critic starts (or without one).
        kind: The GAN loss (`generator_loss`).
        adversarial_weight: ``w_adversarial``.
        autocast: The mixed-precision context of the critic's forward pass.

    Returns:
        The scalar loss, and the adversarial term alone (``None`` without one).
    """
    total = loss.float().mean()
    if critic is None or fake is None:
        return total, None
    with frozen(critic), autocast():
        fake_logits = critic(fake, images).float()
    adversarial = generator_loss(fake_logits, kind=kind)
    return total + adversarial_weight * adversarial, adversarial


def critic_objective(
    critic: nn.Module,
    images: Tensor,
    real: Tensor,
    fake: Tensor,
    *,
    kind: str = "lsgan",
    gradient_penalty_weight: float = 0.0,
    r1_weight: float = 0.0,
    scores: nn.Module | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Tensor:
    """The critic's loss: (image, true cloud) is real, (image, generated cloud) fake::

        L_D = L_GAN^D(D(I, X), D(I, G(I))) + w_gp * GP + w_r1 * R1

    Arguments:
        critic: The critic ``D`` (the penalties differentiate it).
        images: The images ``(B, C, S, S)``.
        real: True clouds ``(B, N, 3)``.
        fake: Generated clouds ``(B, N, 3)`` (detached here: the generator is not updated).
        kind: The GAN loss (`critic_loss`).
        gradient_penalty_weight: ``w_gp`` of `gradient_penalty` (0: none).
        r1_weight: ``w_r1`` of `r1_penalty` (0: none).
        scores: The module that scores the pairs (``critic`` wrapped for distributed training);
            ``None`` for ``critic``. Real and fake are scored in one call: DDP wants one
            forward per backward.
        autocast: The mixed-precision context of that forward pass.

    Returns:
        The scalar loss.
    """
    fake = fake.detach()
    with autocast():
        logits = (scores or critic)(torch.cat([real, fake]), torch.cat([images, images]))
    real_logits, fake_logits = logits.float().chunk(2)
    loss = critic_loss(real_logits, fake_logits, kind=kind)
    if gradient_penalty_weight > 0:
        loss = loss + gradient_penalty_weight * gradient_penalty(critic, real, fake, images)
    if r1_weight > 0:
        loss = loss + r1_weight * r1_penalty(critic, real, images)
    return loss
