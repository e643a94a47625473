"""Priors over a shape latent: the standard normal against torch.distributions, the learned
flow's shapes and condition, and the conditional Gaussian's mean and draws."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from pcflow.encoders import GaussianHead
from pcflow.models import ConditionalGaussianPrior, FlowPrior, StandardNormalPrior


def test_standard_normal_prior_is_torchs_normal() -> None:
    prior = StandardNormalPrior(5)
    z = 3 * torch.randn(4, 5)
    expected = Normal(torch.zeros(()), torch.ones(())).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    assert list(prior.parameters()) == [] and prior.state_dict() == {}  # nothing to learn
    torch.manual_seed(2)
    drawn = prior.sample(6)
    torch.manual_seed(2)
    assert drawn.shape == (6, 5) and torch.equal(drawn, torch.randn(6, 5))
    assert prior.double().sample(2).dtype == torch.float64  # in the prior's dtype
    distribution = prior.distribution(3)
    assert torch.equal(distribution.mean, torch.zeros(3, 5))
    assert torch.equal(distribution.log_var, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="unconditional: condition must be None"):
        prior.log_prob(z, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="unconditional"):
        prior.sample(2, torch.zeros(2, 2))


def test_flow_prior_unconditional() -> None:
    torch.manual_seed(0)
    prior = FlowPrior(4, num_layers=2, hidden_features=8)
    assert prior.latent_features == 4 and sum(p.numel() for p in prior.parameters()) > 0
    z = prior.sample(5)
    assert z.shape == (5, 4)
    log_prob = prior.log_prob(z)
    assert log_prob.shape == (5,) and torch.isfinite(log_prob).all()
    torch.testing.assert_close(log_prob, prior.flow.log_prob(z))


def test_flow_prior_with_a_condition() -> None:
    torch.manual_seed(0)
    prior = FlowPrior(4, num_layers=2, hidden_features=8, context_features=6)
    condition = torch.randn(3, 6)
    torch.manual_seed(1)
    z = prior.sample(99, condition)  # one latent per condition row
    assert z.shape == (3, 4)
    torch.manual_seed(1)
    other = prior.sample(99, condition + 1)  # the same noise, another condition
    assert not torch.allclose(z, other)
    assert prior.log_prob(z, condition).shape == (3,)
    assert not torch.allclose(prior.log_prob(z, condition), prior.log_prob(z, condition + 1))


def test_conditional_gaussian_prior_mean_and_draws() -> None:
    torch.manual_seed(0)
    encoder, head = torch.nn.Linear(6, 8), GaussianHead(8, 4)
    prior = ConditionalGaussianPrior(encoder, head)
    assert prior.latent_features == 4
    condition = torch.randn(3, 6)
    given = head(encoder(condition))
    assert torch.equal(prior.sample(99, condition), given.mean)  # the mean, by default
    torch.manual_seed(4)
    drawn = prior.sample(99, condition, mean=False)
    torch.manual_seed(4)
    assert torch.equal(drawn, given.mean + given.stddev * torch.randn(3, 4))
    assert not torch.equal(drawn, given.mean)
    z = torch.randn(3, 4)
    reference = Independent(Normal(given.mean, (0.5 * given.log_var).exp()), 1)
    torch.testing.assert_close(prior.log_prob(z, condition), reference.log_prob(z))
    with pytest.raises(ValueError, match="this prior is conditional: give a condition"):
        prior.sample(2)
    with pytest.raises(ValueError, match="conditional"):
        prior.log_prob(z)
