"""`LatentPointFlow`: the ELBO's terms against a hand computation, the scale's Jacobian against
float64 autograd, and inference (shapes, evaluation mode, sampling options passed through)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from pcflow.encoders import DiagonalGaussian, GaussianHead, PointNetEncoder
from pcflow.flows import SamplingOptions, dpf_flow
from pcflow.models import (
    ConditionalGaussianPrior,
    ELBOTerms,
    FlowPrior,
    LatentPointFlow,
    StandardNormalPrior,
)

LATENT = 4


def _model(prior=None, cloud_scale: float = 1.0) -> LatentPointFlow:
    torch.manual_seed(0)
    return LatentPointFlow(
        PointNetEncoder(3, 16, (16,)),
        GaussianHead(16, LATENT),
        dpf_flow(context_features=LATENT, num_layers=2, hidden_features=8),
        prior,
        cloud_scale=cloud_scale,
    )


def _gaussian(mean: torch.Tensor, log_var: torch.Tensor) -> Independent:
    """The reference diagonal Gaussian, from torch.distributions."""
    return Independent(Normal(mean, (0.5 * log_var).exp()), 1)


def test_elbo_terms_equal_a_hand_computation() -> None:
    model = _model(cloud_scale=2.0)
    points = 2.0 * torch.randn(3, 20, 3)
    torch.manual_seed(5)
    terms = model.elbo(points)
    posterior = model.posterior(points)  # deterministic: the encoder has no noise
    torch.manual_seed(5)
    z = posterior.mean + posterior.stddev * torch.randn(3, LATENT)  # reparameterised
    assert torch.equal(terms.z, z) and terms.z.requires_grad
    reference = _gaussian(posterior.mean, posterior.log_var)
    torch.testing.assert_close(terms.posterior.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(terms.entropy, reference.entropy())
    standard = Normal(torch.zeros(()), torch.ones(()))
    torch.testing.assert_close(terms.nll_latent, -standard.log_prob(z).sum(-1))
    # The points' term is the flow's, at the model's scale (clouds divided by cloud_scale).
    torch.testing.assert_close(terms.nll_points, -model.flow.log_prob(points / 2.0, context=z))
    assert terms.prior is not None and torch.equal(terms.prior.mean, torch.zeros(3, LATENT))
    assert terms.loss().shape == (3,)
    # Another target's likelihood, with the posterior of the input.
    target = torch.randn(3, 30, 3)
    torch.manual_seed(5)
    other = model.elbo(points, points_target=target)
    assert torch.equal(other.z, z)
    torch.testing.assert_close(other.nll_points, -model.flow.log_prob(target / 2.0, context=z))
    with pytest.raises(ValueError, match="points_target has batch size 2, points 3"):
        model.elbo(points, points_target=target[:2])


def test_elbo_gradients_reach_every_part() -> None:
    model = _model(FlowPrior(LATENT, num_layers=2, hidden_features=8))
    model.elbo(torch.randn(2, 16, 3)).loss().sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_elbo_with_a_conditional_or_learned_prior() -> None:
    prior = ConditionalGaussianPrior(torch.nn.Linear(6, 8), GaussianHead(8, LATENT))
    model = _model(prior)
    points, condition = torch.randn(2, 16, 3), torch.randn(2, 6)
    terms = model.elbo(points, condition=condition)
    given = prior.distribution(condition)
    torch.testing.assert_close(
        terms.nll_latent, -_gaussian(given.mean, given.log_var).log_prob(terms.z)
    )
    assert torch.equal(terms.prior.mean, given.mean)
    with pytest.raises(ValueError, match="this prior is conditional"):
        model.elbo(points)
    learned = _model(FlowPrior(LATENT, num_layers=2, hidden_features=8))
    terms = learned.elbo(points)
    assert terms.prior is None
    torch.testing.assert_close(terms.nll_latent, -learned.prior.log_prob(terms.z))


def test_elbo_terms_loss_weights() -> None:
    posterior = DiagonalGaussian(torch.zeros(2, LATENT), torch.zeros(2, LATENT))
    terms = ELBOTerms(
        z=torch.zeros(2, LATENT),
        posterior=posterior,
        nll_points=torch.tensor([10.0, 20.0]),
        nll_latent=torch.tensor([1.0, 2.0]),
        entropy=torch.tensor([0.5, 0.25]),
    )
    torch.testing.assert_close(terms.loss(), torch.tensor([10.5, 21.75]))  # -ELBO
    weighted = terms.loss(points_weight=2.0, prior_weight=3.0, entropy_weight=4.0, points_scale=0.5)
    torch.testing.assert_close(weighted, torch.tensor([10 + 3 - 2.0, 20 + 6 - 1.0]))


def test_log_prob_points_of_a_scaled_model_is_the_change_of_variables() -> None:
    scale = 2.5
    model = _model(cloud_scale=scale).double()
    points = torch.randn(2, 5, 3, dtype=torch.float64)
    z = torch.randn(2, LATENT, dtype=torch.float64)
    got = model.log_prob_points(points, z)
    assert got.shape == (2, 5) and got.dtype == torch.float64
    standard = Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    for b in range(2):
        context = z[b : b + 1]

        def to_noise(x: torch.Tensor, context: torch.Tensor = context) -> torch.Tensor:
            # A cloud at its own scale, point by point, to the flow's base space.
            return model.flow.transform_to_noise((x / scale).view(1, 1, 3), context).view(3)

        for n in range(5):
            x = points[b, n]
            jacobian = torch.autograd.functional.jacobian(to_noise, x)
            expected = standard.log_prob(to_noise(x)).sum() + torch.linalg.slogdet(jacobian)[1]
            torch.testing.assert_close(got[b, n], expected, rtol=1e-10, atol=1e-10)
    # The scale's Jacobian is the -D log(scale) term.
    at_model_scale = model.flow.log_prob(points / scale, context=z, per_point=True)
    torch.testing.assert_close(got, at_model_scale - 3 * math.log(scale))


def test_inference_shapes_and_scale() -> None:
    model = _model(cloud_scale=3.0)
    points = 3.0 * torch.randn(2, 20, 3)
    z = model.encode(points)
    assert z.shape == (2, LATENT) and not z.requires_grad
    assert torch.equal(z, model.posterior(points).mean.detach())
    assert model.decode(z, 10).shape == (2, 10, 3)
    assert model.autoencode(points, 40).shape == (2, 40, 3)
    assert model.sample(3, 50).shape == (3, 50, 3)
    torch.manual_seed(1)
    decoded = model.decode(z, 10)
    torch.manual_seed(1)
    with torch.no_grad():
        assert torch.equal(decoded, 3.0 * model.flow.sample(10, context=z))  # back to its scale
    assert _model().double().sample(2, 5).dtype == torch.float64  # latents in the model's dtype
    conditional = _model(ConditionalGaussianPrior(torch.nn.Linear(6, 8), GaussianHead(8, LATENT)))
    assert conditional.sample(99, 7, condition=torch.randn(2, 6)).shape == (2, 7, 3)


@pytest.mark.parametrize("training", [True, False])
def test_inference_runs_in_evaluation_mode_and_restores_the_mode(training: bool) -> None:
    model = _model()
    model.train(training)
    seen = []
    sample = model.flow.sample

    def recording(*args, **kwargs):
        seen.append((model.training, model.flow.training, torch.is_grad_enabled()))
        return sample(*args, **kwargs)

    model.flow.sample = recording  # type: ignore[method-assign]
    points = torch.randn(2, 16, 3)
    model.sample(2, 8)
    model.autoencode(points, 8)
    model.decode(torch.randn(2, LATENT), 8)
    assert seen == [(False, False, False)] * 3
    assert model.training is training and model.flow.training is training
    assert all(module.training is training for module in model.modules())


def test_sampling_options_are_passed_through() -> None:
    model = _model()
    z = torch.randn(2, LATENT)

    def flow_sample(**options) -> torch.Tensor:
        torch.manual_seed(3)
        with torch.no_grad():
            return model.flow.sample(30, context=z, **options)

    torch.manual_seed(3)
    default = model.decode(z, 30)
    assert torch.equal(default, flow_sample())  # the defaults sample the model itself
    torch.manual_seed(3)
    assert torch.equal(model.decode(z, 30, SamplingOptions()), default)
    torch.manual_seed(3)
    trimmed = model.decode(z, 30, SamplingOptions(trim=0.5, temperature=0.8))
    assert trimmed.shape == (2, 30, 3) and not torch.equal(trimmed, default)
    assert torch.equal(trimmed, flow_sample(trim=0.5, temperature=0.8))
    points = torch.randn(2, 16, 3)
    torch.manual_seed(3)
    encoded = model.autoencode(points, 30, SamplingOptions(trim=0.5))
    torch.manual_seed(3)
    with torch.no_grad():
        expected = model.flow.sample(30, context=model.encode(points), trim=0.5)
    assert torch.equal(encoded, expected)


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="prior is over 5 latent features but the posterior head"):
        _model(StandardNormalPrior(5))
    for scale in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="cloud_scale must be a positive number"):
            _model(cloud_scale=scale)
    model = _model()
    for count in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_points must be a positive integer"):
            model.decode(torch.randn(1, LATENT), count)
        with pytest.raises(ValueError, match="num_shapes must be a positive integer"):
            model.sample(count, 8)
    with pytest.raises(ValueError, match="points"):
        model.elbo(torch.randn(2, 16, 2))


def _noise_model(noise_scale: float, seed: int = 0) -> LatentPointFlow:
    from pcflow.encoders import GaussianHead, PointNetEncoder
    from pcflow.flows import dpf_flow

    torch.manual_seed(seed)
    extra = 1 if noise_scale > 0 else 0
    return LatentPointFlow(
        PointNetEncoder(3, 16, (8,)), GaussianHead(16, 4),
        dpf_flow(context_features=4 + extra, num_layers=2, hidden_features=8),
        cloud_scale=0.5, noise_scale=noise_scale,
    )  # fmt: skip


def test_zero_noise_scale_is_todays_model_bit_for_bit() -> None:
    from pcflow.encoders import GaussianHead, PointNetEncoder
    from pcflow.flows import dpf_flow

    torch.manual_seed(0)
    todays = LatentPointFlow(
        PointNetEncoder(3, 16, (8,)), GaussianHead(16, 4),
        dpf_flow(context_features=4, num_layers=2, hidden_features=8), cloud_scale=0.5,
    )  # fmt: skip
    zero = _noise_model(0.0)
    clouds = torch.rand(3, 20, 3)
    for model in (todays, zero):
        torch.manual_seed(1)
        loss = model.elbo(clouds).loss().sum()
        loss.backward()
        model.result = loss.detach(), [p.grad.clone() for p in model.parameters()]
        torch.manual_seed(2)
        model.drawn = model.sample(2, 30)
    assert torch.equal(todays.result[0], zero.result[0])
    assert all(torch.equal(a, b) for a, b in zip(todays.result[1], zero.result[1], strict=True))
    assert torch.equal(todays.drawn, zero.drawn)


def test_noise_conditioned_elbo_is_the_flows_likelihood_of_the_perturbed_cloud() -> None:
    model = _noise_model(0.1).double()
    clouds = torch.rand(3, 20, 3, dtype=torch.float64)
    torch.manual_seed(5)
    terms = model.elbo(clouds)
    # Replay the draws: z, then one noise level per shape, then the noise itself.
    torch.manual_seed(5)
    z = model.posterior(clouds).rsample()
    levels = torch.rand(3, dtype=torch.float64) * 0.1
    noisy = clouds / 0.5 + torch.randn_like(clouds) * (levels / 0.5)[:, None, None]
    context = torch.cat([z, (levels / 0.1)[:, None]], dim=1)
    expected = -model.flow.log_prob(noisy, context=context)
    torch.testing.assert_close(terms.nll_points, expected)
    assert levels.min() >= 0 and levels.max() <= 0.1


def test_noise_conditioned_model_decodes_at_noise_level_zero() -> None:
    model = _noise_model(0.05)
    z = torch.randn(2, 4)
    torch.manual_seed(3)
    decoded = model.decode(z, 25)
    with torch.no_grad():
        torch.manual_seed(3)
        clean = model.flow.sample(25, context=torch.cat([z, torch.zeros(2, 1)], 1)) * 0.5
    assert torch.equal(decoded, clean)
    points = torch.rand(2, 10, 3)
    with torch.no_grad():
        at_zero = model.flow.log_prob(points / 0.5, context=torch.cat([z, torch.zeros(2, 1)], 1),
                                      per_point=True) - 3 * math.log(0.5)  # fmt: skip
    torch.testing.assert_close(model.log_prob_points(points, z), at_zero)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_noise_scale_is_checked(bad: float) -> None:
    with pytest.raises(ValueError, match="noise_scale must be a number >= 0"):
        _noise_model(bad)
