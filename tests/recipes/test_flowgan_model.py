"""FlowGAN's model: the loss equals its formula, the critic's gradient reaches the flow through
sampling, reconstruction of any size, and clear errors for bad images."""

from __future__ import annotations

import math

import pytest
import torch

from pcflow.critics import generator_loss
from pcflow.encoders import prepare_images
from pcflow.flows import SamplingOptions
from pcflow.recipes.flowgan import FlowGAN, FlowGANConfig, PSGNBaseline, build_model


def _config(**loss: float) -> FlowGANConfig:
    overrides = [f"loss.{k}={v}" for k, v in loss.items()]
    return FlowGANConfig.preset("tiny").with_overrides(overrides)


def _batch(batch: int = 3, num_points: int = 40) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, 40, 40, generator=generator)
    points = torch.randn(batch, num_points, 3, generator=generator) * 0.5
    target = torch.randn(batch, num_points + 5, 3, generator=generator) * 0.5
    return images, points, target


def _reference_nll(model: FlowGAN, points: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # Run the flow's layers one by one and add the standard normal's density by hand.
    noise, total = points, torch.zeros(points.shape[0], dtype=points.dtype)
    for layer in model.generator.flow.layers:
        noise, logabsdet = layer(noise, z)
        total = total + logabsdet
    base = (-0.5 * noise**2 - 0.5 * math.log(2 * math.pi)).sum(dim=(1, 2))
    return -(base + total)


@pytest.mark.slow
def test_loss_equals_its_formula() -> None:
    weights = {"points_weight": 0.7, "prior_weight": 1.3, "entropy_weight": 0.4}
    model = FlowGAN(_config(**weights)).double()
    images, points, target = (t.double() for t in _batch())
    scale = model.config.model.cloud_scale
    torch.manual_seed(5)
    terms = model.generator_terms(images, points, target)

    # The same computation from the parts, written out.
    torch.manual_seed(5)
    generator = model.generator
    features = generator.point_encoder(points / scale)
    mean, log_var = generator.posterior_head.linear(features).chunk(2, dim=-1)
    std = (0.5 * log_var).exp()
    z = mean + std * torch.randn(mean.shape, dtype=mean.dtype)
    prepared = prepare_images(images, model.config.model.image_size, 4)
    image_mean, image_log_var = generator.prior.head.linear(
        generator.prior.encoder(prepared)
    ).chunk(2, dim=-1)
    image_gaussian = torch.distributions.Normal(image_mean, (0.5 * image_log_var).exp())
    nll_points = _reference_nll(model, target / scale, z)
    nll_latent = -image_gaussian.log_prob(z).sum(-1)
    entropy = torch.distributions.Normal(mean, std).entropy().sum(-1)
    expected = 0.7 * nll_points + 1.3 * nll_latent - 0.4 * entropy

    torch.testing.assert_close(terms["nll_points"], nll_points)
    torch.testing.assert_close(terms["nll_latent"], nll_latent)
    torch.testing.assert_close(terms["entropy"], entropy)
    torch.testing.assert_close(terms["loss"], expected)


def test_prepare_images_grey_plus_rgb() -> None:
    images = torch.rand(2, 3, 20, 20)
    prepared = prepare_images(images, 20, 4)
    grey = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    rgb_mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    rgb_std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(prepared[:, 1:], (images - rgb_mean) / rgb_std)
    grey_mean = 0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406
    grey_std = 0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225
    torch.testing.assert_close(prepared[:, 0], (grey - grey_mean) / grey_std)
    assert prepare_images(images, 32, 3).shape == (2, 3, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize("to_encoder", [True, False])
def test_critic_gradient_reaches_the_flow_through_sampling(to_encoder: bool) -> None:
    config = _config().with_overrides(
        [f"loss.adversarial_to_encoder={str(to_encoder).lower()}", "loss.adversarial_latent=sample"]
    )
    model = FlowGAN(config).double()
    model.critic.eval()  # fixed batch statistics: a deterministic function for finite differences
    images, points, target = (t.double() for t in _batch(2, 30))
    prepared = model.prepare_images(images)
    flow_parameters = list(model.generator.flow.parameters())

    def adversarial_loss() -> torch.Tensor:
        torch.manual_seed(3)
        terms = model.generator_terms(images, points, target, num_fake_points=25)
        assert terms["fake"].shape == (2, 25, 3)
        return generator_loss(model.critic(terms["fake"], prepared), kind="lsgan")

    gradients = torch.autograd.grad(adversarial_loss(), flow_parameters)
    assert all(g.abs().sum() > 0 for g in gradients[-6:]), "no gradient reached the flow"
    # The directional derivative matches central finite differences (same sampling noise).
    direction = [torch.randn_like(p) for p in flow_parameters]
    analytic = sum((g * d).sum() for g, d in zip(gradients, direction))
    step = 1e-6
    with torch.no_grad():
        for p, d in zip(flow_parameters, direction):
            p.add_(step * d)
        plus = adversarial_loss()
        for p, d in zip(flow_parameters, direction):
            p.sub_(2 * step * d)
        minus = adversarial_loss()
    numeric = (plus - minus) / (2 * step)
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-8)
    image_gradient = torch.autograd.grad(
        adversarial_loss(), model.generator.prior.head.linear.weight, allow_unused=True
    )[0]
    if to_encoder:
        assert image_gradient.abs().sum() > 0, "no gradient reached the image encoder"
    else:
        assert image_gradient is None


@pytest.mark.parametrize("weight", [0.0, 40.0])
def test_chamfer_term_compares_the_cloud_sampled_at_the_image_mean(weight: float) -> None:
    model = FlowGAN(_config(chamfer_weight=weight)).double()
    images, points, target = (t.double() for t in _batch())
    generator, scale = model.generator, model.config.model.cloud_scale
    torch.manual_seed(5)
    plain = model.generator_terms(images, points, target)
    torch.manual_seed(5)
    terms = model.generator_terms(images, points, target, chamfer=True)
    if weight == 0:  # no term and no draw: today's loss, bit for bit
        assert "chamfer" not in terms
        assert all(torch.equal(terms[k], plain[k]) for k in plain)
        return

    # The same draws by hand: the posterior's sample, then the flow's base noise at the mean of
    # the image Gaussian; the Chamfer distance by brute force, at the flow's scale.
    torch.manual_seed(5)
    generator.posterior(points).rsample()
    target = target / scale
    cloud = generator.flow.sample(target.shape[1], context=model.image_distribution(images).mean)
    squared = torch.cdist(cloud, target).pow(2)
    chamfer = squared.min(2).values.mean(1) + squared.min(1).values.mean(1)
    torch.testing.assert_close(terms["chamfer"], chamfer)
    expected = plain["loss"] + weight * target.shape[1] * chamfer
    torch.testing.assert_close(terms["loss"], expected)

    # Its gradient reaches the image encoder and the flow, not the posterior.
    parts = (generator.prior.head.linear.weight, generator.flow.layers[-1].parameters().__next__())
    gradients = torch.autograd.grad(
        terms["chamfer"].sum(), [*parts, *generator.point_encoder.parameters()], allow_unused=True
    )
    assert all(g is not None and g.abs().sum() > 0 for g in gradients[:2])
    assert all(g is None for g in gradients[2:])


def test_ablation_has_no_critic_and_no_samples() -> None:
    model = build_model(FlowGANConfig.preset("tiny").with_overrides(["model.adversarial=false"]))
    assert isinstance(model, FlowGAN) and model.critic is None
    images, points, target = _batch()
    assert "fake" not in model.generator_terms(images, points, target)


def test_reconstruct_any_number_of_points_at_unit_scale() -> None:
    model = FlowGAN(_config())
    images = torch.rand(2, 3, 48, 48)  # resized to the config's 32 x 32
    for num_points in (1, 3000):
        assert model.reconstruct(images, num_points=num_points).shape == (2, num_points, 3)
    assert model.training  # reconstruct restores the mode
    torch.manual_seed(0)
    clouds = model.reconstruct(images, num_points=50)
    model.eval()
    with torch.no_grad():
        z = model.image_distribution(images).mean
        torch.manual_seed(0)
        keywords = model.config.eval.sampling.keywords()  # the stored default sampling
        expected = model.generator.flow.sample(50, context=z, **keywords)
    torch.testing.assert_close(clouds, expected * model.config.model.cloud_scale)


def test_psgn_baseline_regresses_a_fixed_set() -> None:
    config = FlowGANConfig.preset("tiny").with_overrides(["model.decoder=psgn"])
    model = build_model(config)
    assert isinstance(model, PSGNBaseline) and model.critic is None
    images, points, target = _batch()
    terms = model.generator_terms(images, points, target)
    assert terms["loss"].shape == (3,)
    # Its loss is a Chamfer distance already: the Chamfer term does not apply.
    chamfer_config = config.with_overrides(["loss.chamfer_weight=10"])
    chamfer_model = build_model(chamfer_config)
    chamfer_model.load_state_dict(model.state_dict())
    with_term = chamfer_model.generator_terms(images, points, target, chamfer=True)
    assert torch.equal(with_term["loss"], model.generator_terms(images, points, target)["loss"])
    assert model.reconstruct(images, num_points=64).shape == (3, 64, 3)
    assert model.reconstruct(images, num_points=200).shape == (3, 200, 3)
    with pytest.raises(ValueError, match="decoder='flow'"):
        FlowGAN(config)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 4, 32, 32), "RGBA"),
        (torch.rand(2, 32, 32, 3), "channels last"),
        (torch.rand(3, 32, 32), "batch dimension"),
        ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "divide by 255"),
        (torch.full((2, 3, 32, 32), float("nan")), "finite"),
        (torch.rand(2, 3, 32, 32) * 255, r"\[0, 1\]"),
        (torch.rand(0, 3, 32, 32), "empty"),
        ([[1.0]], "torch.Tensor"),
    ],
)
def test_bad_images_are_refused(images, message: str) -> None:
    model = FlowGAN(_config())
    with pytest.raises((TypeError, ValueError), match=message):
        model.reconstruct(images, num_points=10)


def test_bad_arguments_are_refused() -> None:
    model = FlowGAN(_config())
    images, points, target = _batch()
    with pytest.raises(ValueError, match="num_points"):
        model.reconstruct(images, num_points=0)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        model.generator_terms(images, points[..., :2], target)
    with pytest.raises(ValueError, match="batch size"):
        model.generator_terms(images, points[:2], target)
    with pytest.raises(ValueError, match="decoder"):
        build_model(FlowGANConfig().with_overrides(["model.decoder=voxels"]))


def test_temperature_one_is_todays_reconstruction_and_scales_the_noise() -> None:
    model = FlowGAN(_config()).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = model.image_distribution(images).mean
        flow, scale = model.generator.flow, model.config.model.cloud_scale
        torch.manual_seed(4)
        noise = torch.randn(2, 60, 3)
        todays = flow._run(noise, z, inverse=True, per_point=False)[0] * scale
        cold = flow._run(0.6 * noise, z, inverse=True, per_point=False)[0] * scale
    for sampling in (SamplingOptions(), SamplingOptions(temperature=1.0)):
        torch.manual_seed(4)
        assert torch.equal(model.reconstruct(images, 60, sampling), todays)
    torch.manual_seed(4)
    torch.testing.assert_close(model.reconstruct(images, 60, SamplingOptions(0.6)), cold)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        model.reconstruct(images, 60, SamplingOptions(temperature=0.0))


@pytest.mark.parametrize(
    ("image", "cloud", "neutral", "bad", "message"),
    [
        ({"temperature": 0.9, "trim": 0.25}, {"trim": 0.25}, {"trim": 0.0}, {"trim": 1.0},
         r"trim must be a number in \[0, 1\)"),
        ({"trim": 0.1, "spread": 3}, {"spread": 2}, {"spread": 1}, {"spread": 0},
         "spread must be a positive int"),
    ],
    ids=["trim", "spread"],
)  # fmt: skip
def test_sampling_options_reach_the_flow_and_neutral_is_todays_reconstruction(
    image: dict, cloud: dict, neutral: dict, bad: dict, message: str
) -> None:
    model = FlowGAN(_config()).eval()
    images = torch.rand(2, 3, 32, 32)
    _, points, _ = _batch(2, 30)
    flow, scale = model.generator.flow, model.config.model.cloud_scale
    with torch.no_grad():
        z_image, z_points = model.image_latent(images), model.posterior_mean(points)
        torch.manual_seed(4)
        from_image = flow.sample(60, z_image, **image) * scale
        torch.manual_seed(4)
        decoded = flow.sample(60, z_points, **cloud) * scale
    torch.manual_seed(4)
    assert torch.equal(model.reconstruct(images, 60, SamplingOptions(**image)), from_image)
    torch.manual_seed(4)
    assert torch.equal(model.autoencode(points, 60, SamplingOptions(**cloud)), decoded)
    torch.manual_seed(4)
    todays = model.reconstruct(images, 60, SamplingOptions())
    torch.manual_seed(4)
    assert torch.equal(model.reconstruct(images, 60, SamplingOptions(**neutral)), todays)
    torch.manual_seed(4)
    assert not torch.equal(model.reconstruct(images, 60, SamplingOptions(**image)), todays)
    with pytest.raises(ValueError, match=message):
        model.reconstruct(images, 60, SamplingOptions(**bad))


def test_autoencode_decodes_the_posterior_mean_of_the_cloud() -> None:
    model = FlowGAN(_config()).eval()
    _, points, _ = _batch(2, 30)
    scale = model.config.model.cloud_scale
    with torch.no_grad():
        features = model.generator.point_encoder(points / scale)
        mean = model.generator.posterior_head.linear(features).chunk(2, dim=-1)[0]
        torch.manual_seed(8)
        expected = model.generator.flow.sample(70, context=mean, temperature=0.8) * scale
    torch.testing.assert_close(model.posterior_mean(points), mean)
    torch.manual_seed(8)
    torch.testing.assert_close(model.autoencode(points, 70, SamplingOptions(0.8)), expected)
    with pytest.raises(ValueError, match="num_points must be a positive integer"):
        model.autoencode(points, 0)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        model.autoencode(points[0], 10)


def test_freevar_base_and_small_encoders_from_the_config() -> None:
    from pcflow.encoders import SmallResNet
    from pcflow.flows import FreeVariancePointNormal

    config = _config().with_overrides(["model.base=freevar"])
    model = FlowGAN(config)
    assert isinstance(model.generator.flow._distribution, FreeVariancePointNormal)
    # The tiny preset's encoders are the small ResNet, the critic's too (small checkpoints).
    assert isinstance(model.generator.prior.encoder.backbone, SmallResNet)
    assert isinstance(model.critic.image_encoder.backbone, SmallResNet)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    images, points, target = _batch()
    terms = model.generator_terms(images, points, target)
    terms["loss"].mean().backward()
    assert model.generator.flow._distribution.log_scale.weight.grad.abs().sum() > 0
