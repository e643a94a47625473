"""Latent distributions against torch.distributions, the Gaussian head, the latent flow prior."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from pcflow.encoders import DiagonalGaussian, GaussianHead, LatentFlowPrior


def _pair() -> tuple[DiagonalGaussian, Independent]:
    mean = torch.randn(4, 6, dtype=torch.float64)
    log_var = torch.randn(4, 6, dtype=torch.float64)
    reference = Independent(Normal(mean, (0.5 * log_var).exp()), 1)
    return DiagonalGaussian(mean, log_var), reference


def test_log_prob_matches_torch_normal() -> None:
    q, reference = _pair()
    z = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z))
    many = torch.randn(3, 4, 6, dtype=torch.float64)
    assert q.log_prob(many).shape == (3, 4)
    torch.testing.assert_close(q.log_prob(many), reference.log_prob(many))


def test_entropy_matches_torch_normal() -> None:
    q, reference = _pair()
    torch.testing.assert_close(q.entropy(), reference.entropy())


def test_kl_to_standard_normal_matches_torch() -> None:
    q, reference = _pair()
    standard = Independent(Normal(torch.zeros(4, 6, dtype=torch.float64), 1.0), 1)
    torch.testing.assert_close(q.kl_to_standard_normal(), kl_divergence(reference, standard))


def test_kl_between_gaussians_matches_torch() -> None:
    q, q_reference = _pair()
    p, p_reference = _pair()
    torch.testing.assert_close(q.kl(p), kl_divergence(q_reference, p_reference))
    torch.testing.assert_close(q.kl(q), torch.zeros(4, dtype=torch.float64))


def test_to_torch_is_the_same_distribution() -> None:
    q, reference = _pair()
    z = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(q.to_torch().log_prob(z), reference.log_prob(z))


def test_rsample_statistics_and_gradients() -> None:
    mean = torch.tensor([[1.5, -2.0]]).expand(20000, 2).clone().requires_grad_(True)
    log_var = torch.tensor([[0.0, -2.0]]).expand(20000, 2).clone().requires_grad_(True)
    z = DiagonalGaussian(mean, log_var).rsample()
    assert z.shape == (20000, 2)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([1.0, 0.1353]), atol=0.03, rtol=0)
    z.sum().backward()
    assert torch.equal(mean.grad, torch.ones_like(mean))
    assert log_var.grad.abs().sum() > 0
    assert not DiagonalGaussian(mean, log_var).sample().requires_grad


def test_rsample_with_generator_is_reproducible() -> None:
    q, _ = _pair()
    a = q.rsample(torch.Generator().manual_seed(3))
    b = q.rsample(torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_gaussian_head_is_one_linear_layer_with_clamped_log_variance() -> None:
    head = GaussianHead(10, 3)
    features = torch.randn(5, 10)
    q = head(features)
    raw = features @ head.linear.weight.T + head.linear.bias
    torch.testing.assert_close(q.mean, raw[:, :3])
    torch.testing.assert_close(q.log_var, raw[:, 3:].clamp(-20.0, 10.0))
    with torch.no_grad():
        head.linear.bias[3:] = 1e3
    assert torch.equal(head(features).log_var, torch.full((5, 3), 10.0))


@pytest.mark.parametrize(
    ("mean", "log_var", "pattern"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), "same shape"),
        (torch.zeros(3), torch.zeros(3), r"shape \(B, L\)"),
        (torch.zeros(2, 3), torch.full((2, 3), float("nan")), "log_var must be finite"),
    ],
)
def test_diagonal_gaussian_rejects_bad_parameters(
    mean: torch.Tensor, log_var: torch.Tensor, pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        DiagonalGaussian(mean, log_var)


def test_bad_arguments_to_methods() -> None:
    q = DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"z must have shape \(2, 3\)"):
        q.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="other has shape"):
        q.kl(DiagonalGaussian(torch.zeros(3, 3), torch.zeros(3, 3)))
    with pytest.raises(TypeError, match="DiagonalGaussian"):
        q.kl(Normal(0.0, 1.0))
    with pytest.raises(ValueError, match=r"features must have shape \(B, 8\)"):
        GaussianHead(8, 2)(torch.zeros(2, 7))


def _perturbed_prior(scale: float) -> LatentFlowPrior:
    prior = LatentFlowPrior(2, context_features=3, num_layers=2, hidden_features=16).double()
    with torch.no_grad():  # move away from the near-identity initialisation
        for parameter in prior.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return prior


def test_latent_flow_prior_density_integrates_to_one() -> None:
    prior = _perturbed_prior(0.05)
    context = torch.randn(1, 3, dtype=torch.float64)
    grid = torch.linspace(-15, 15, 301, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = prior.log_prob(points, context.expand(len(points), -1)).exp()
    cell = (grid[1] - grid[0]) ** 2
    assert abs(float(density.sum() * cell) - 1.0) < 1e-2
    samples = _perturbed_prior(0.05).float().sample(5, context=torch.randn(4, 3))
    assert samples.shape == (4, 5, 2)


def test_latent_flow_prior_matches_change_of_variables() -> None:
    prior = _perturbed_prior(0.3)
    z = torch.randn(3, 2, dtype=torch.float64)
    context = torch.randn(3, 3, dtype=torch.float64)
    expected = []
    for i in range(3):

        def to_noise(x: torch.Tensor, i: int = i) -> torch.Tensor:
            return prior.transform_to_noise(x[None], context[i : i + 1])[0]

        jacobian = torch.autograd.functional.jacobian(to_noise, z[i])
        noise = to_noise(z[i])
        base = Normal(0.0, 1.0).log_prob(noise).sum()
        expected.append(base + torch.linalg.slogdet(jacobian).logabsdet)
    torch.testing.assert_close(prior.log_prob(z, context), torch.stack(expected))


def test_latent_flow_prior_rejects_bad_context() -> None:
    prior = LatentFlowPrior(4, context_features=3, num_layers=1)
    with pytest.raises(ValueError, match=r"context must have shape \(B, 3\)"):
        prior.log_prob(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="context is required"):
        prior.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, 4\)"):
        prior.log_prob(torch.zeros(2, 3), torch.zeros(2, 3))
