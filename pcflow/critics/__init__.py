"""Cross-modal critics and GAN losses."""

from __future__ import annotations

from pcflow.critics.cross_modal import CrossModalCritic
from pcflow.critics.diagnostics import adversarial_gradient_share
from pcflow.critics.freeze import frozen
from pcflow.critics.gan_losses import (
    GAN_LOSS_KINDS,
    critic_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from pcflow.critics.objectives import critic_objective, generator_objective

__all__ = [
    "GAN_LOSS_KINDS",
    "CrossModalCritic",
    "adversarial_gradient_share",
    "critic_loss",
    "critic_objective",
    "frozen",
    "generator_loss",
    "generator_objective",
    "gradient_penalty",
    "r1_penalty",
]
