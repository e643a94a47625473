"""FlowGAN's networks from its configuration: the latent point flow with an image prior, the
cross-modal critic, and the PSGN-style baseline's regressor."""

from __future__ import annotations

from pcflow.critics import CrossModalCritic
from pcflow.encoders import GaussianHead, PointNetEncoder, ResNetImageEncoder
from pcflow.flows import dpf_flow
from pcflow.models import ConditionalGaussianPrior, LatentPointFlow, PointSetRegressor
from pcflow.recipes.flowgan.sections import ModelConfig

__all__ = ["build_critic", "build_generator", "build_psgn"]


def build_generator(model: ModelConfig) -> LatentPointFlow:
    """FlowGAN's generator: a `pcflow.models.LatentPointFlow` whose prior is the
    image-conditioned Gaussian ``p(z | image)`` (a ResNet and a `GaussianHead` over prepared
    images, `pcflow.encoders.prepare_images`).

    The posterior ``q(z | points)`` is a PointNet with a one-layer Gaussian head and the
    decoder the DPF-Nets flow (`pcflow.flows.dpf_flow`); clouds are divided by
    ``model.cloud_scale`` inside.
    """
    # Built in this order (the parameters' initial values follow the global RNG).
    point_encoder = PointNetEncoder(3, model.point_features, tuple(model.point_hidden_features))
    posterior_head = GaussianHead(model.point_features, model.latent_features)
    image_encoder = ResNetImageEncoder(
        model.image_arch, model.image_features, in_channels=model.image_channels
    )
    image_prior = ConditionalGaussianPrior(
        image_encoder, GaussianHead(model.image_features, model.latent_features)
    )
    flow = dpf_flow(
        context_features=model.latent_features + (model.noise_scale > 0),
        num_layers=model.num_layers,
        hidden_features=model.hidden_features,
        coupling=model.coupling,
        memory_efficient=model.memory_efficient,
        base=model.base,
    )
    return LatentPointFlow(
        point_encoder, posterior_head, flow, image_prior, cloud_scale=model.cloud_scale,
        noise_scale=model.noise_scale,
    )  # fmt: skip


def build_critic(model: ModelConfig) -> CrossModalCritic | None:
    """The cross-modal critic, or ``None`` for the flow-only ablation."""
    if not model.adversarial:
        return None
    return CrossModalCritic(
        in_channels=model.image_channels,
        point_features=model.critic_point_features,
        image_features=model.critic_image_features,
        hidden_features=tuple(model.critic_hidden_features),
        image_arch=model.critic_image_arch,
    )


def build_psgn(model: ModelConfig, num_points: int) -> PointSetRegressor:
    """The PSGN-style baseline's regressor: the image encoder of ``model`` and an MLP."""
    encoder = ResNetImageEncoder(
        model.image_arch, model.image_features, in_channels=model.image_channels
    )
    return PointSetRegressor(encoder, model.image_features, num_points)
