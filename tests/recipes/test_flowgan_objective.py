"""FlowGAN's own objective: the likelihood loss is the weighted sum of its terms."""

from __future__ import annotations

import torch

from pcflow.recipes.flowgan import FlowGANConfig
from pcflow.recipes.flowgan.objective import likelihood_loss


def _weights(**values: float | str) -> object:
    return FlowGANConfig().with_overrides([f"loss.{k}={v}" for k, v in values.items()]).loss


def test_likelihood_loss_is_the_weighted_sum_of_the_terms() -> None:
    generator = torch.Generator().manual_seed(0)
    nll_points, nll_latent, entropy = torch.rand(3, 5, generator=generator, dtype=torch.float64)
    weights = _weights(points_weight=0.7, prior_weight=1.3, entropy_weight=0.4)
    expected = 0.7 * nll_points + 1.3 * nll_latent - 0.4 * entropy
    assert torch.equal(likelihood_loss(nll_points, nll_latent, entropy, weights), expected)
