"""FlowGAN's generator network (the VAE with a point-flow decoder) and the PSGN-style baseline's."""

from __future__ import annotations

from torch import Tensor, nn

from pcflow.encoders import GaussianHead, PointNetEncoder, ResNetImageEncoder
from pcflow.encoders.latent import DiagonalGaussian
from pcflow.flows import dpf_flow
from pcflow.losses import chamfer_distance
from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.objective import chamfer_term, likelihood_loss

__all__ = ["FlowGANGenerator", "PSGNGenerator"]


class FlowGANGenerator(nn.Module):
    """FlowGAN's generator: the VAE whose decoder is a conditional point flow.

    Parts: a PointNet over the ground-truth cloud with a one-layer Gaussian head (the
    posterior ``q(z | points)``), a ResNet over the image with a one-layer Gaussian head (the
    image-conditioned Gaussian ``p(z | image)``, the "prior" of training), and the DPF-Nets flow
    ``p(points | z)`` from `pcflow.flows.dpf_flow`.

    ``forward`` returns the per-shape terms of the loss (on clouds divided by
    ``config.model.cloud_scale``) and, when asked, clouds sampled from the image-conditioned
    latent through the flow, differentiably: for the critic, and for the Chamfer term
    (``loss.chamfer_weight``).

    Arguments:
        config: The run's configuration (its ``model`` and ``loss`` sections are used).
    """

    def __init__(self, config: FlowGANConfig) -> None:
        super().__init__()
        model = config.model
        if config.loss.adversarial_latent not in ("mean", "sample"):
            raise ValueError(
                "loss.adversarial_latent must be 'mean' or 'sample', "
                f"got {config.loss.adversarial_latent!r}"
            )
        self.config = config
        self.point_encoder = PointNetEncoder(
            3, model.point_features, tuple(model.point_hidden_features)
        )
        self.posterior_head = GaussianHead(model.point_features, model.latent_features)
        self.image_encoder = ResNetImageEncoder(
            model.image_arch, model.image_features, in_channels=model.image_channels
        )
        self.image_head = GaussianHead(model.image_features, model.latent_features)
        self.flow = dpf_flow(
            context_features=model.latent_features,
            num_layers=model.num_layers,
            hidden_features=model.hidden_features,
            coupling=model.coupling,
            memory_efficient=model.memory_efficient,
            base=model.base,
        )

    def posterior(self, points: Tensor) -> DiagonalGaussian:
        """``q(z | points)`` for training-scale clouds ``(B, N, 3)``."""
        return self.posterior_head(self.point_encoder(points))

    def image_distribution(self, images: Tensor) -> DiagonalGaussian:
        """``p(z | image)`` for prepared images ``(B, C, S, S)`` (see `prepare_images`)."""
        return self.image_head(self.image_encoder(images))

    def forward(
        self,
        images: Tensor,
        points: Tensor,
        points_target: Tensor,
        num_fake_points: int = 0,
        chamfer: bool = False,
        points_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """Compute the per-shape loss terms (and, optionally, generated clouds).

        Arguments:
            images: Prepared images ``(B, C, S, S)`` (see `prepare_images`).
            points: Training-scale clouds ``(B, N, 3)``, the posterior's input.
            points_target: Training-scale clouds ``(B, M, 3)``, an independent sample of the
                same surfaces, whose likelihood is the target.
            num_fake_points: If positive, also sample clouds of this many points given the
                image-conditioned latent (its mean, or ``z ~ p(z | image)`` reparameterised,
                as ``loss.adversarial_latent`` says), keeping the graph so that a critic's
                gradient reaches the flow and the image encoder.
            chamfer: Add the Chamfer term (`chamfer_term`): sample ``M`` points (as many as
                ``points_target`` holds) at the image Gaussian's mean, the latent of inference,
                and compare them with ``points_target``; its gradient reaches the flow and the
                image encoder. Nothing is added while ``loss.chamfer_weight`` is 0.
            points_scale: Factor on the two sums over the target's points in ``"loss"``: the
                points' NLL and the Chamfer term. The trainer sets it to ``data.num_points /
                M`` while ``data.late_num_points`` applies, so that denser clouds keep the
                loss's balance between the points and the latent terms.

        Returns:
            A dict of ``(B,)`` tensors: ``"nll_points"`` (summed over points and coordinates,
            constant included), ``"nll_latent"`` (``-log p(z | image)`` at the posterior
            sample), ``"entropy"`` (of ``q(z | points)``), ``"chamfer"`` (the Chamfer distance
            of the image's cloud, when asked), ``"loss"`` (their weighted sum, see
            `LossConfig`), and ``"fake"`` ``(B, num_fake_points, 3)`` when asked.
        """
        weights = self.config.loss
        posterior = self.posterior(points)
        z = posterior.rsample()
        image_distribution = self.image_distribution(images)
        nll_points = -self.flow.log_prob(points_target, context=z)
        nll_latent = -image_distribution.log_prob(z)
        entropy = posterior.entropy()
        loss = likelihood_loss(points_scale * nll_points, nll_latent, entropy, weights)
        terms = {
            "loss": loss,
            "nll_points": nll_points,
            "nll_latent": nll_latent,
            "entropy": entropy,
        }
        if chamfer and weights.chamfer_weight > 0:
            cloud = self.flow.sample(points_target.shape[1], context=image_distribution.mean)
            terms["chamfer"], _ = chamfer_distance(cloud, points_target, batch_reduction=None)
            term = chamfer_term(terms["chamfer"], points_target.shape[1], weights)
            terms["loss"] = loss + points_scale * term
        if num_fake_points > 0:
            if weights.adversarial_latent == "mean":
                z_image = image_distribution.mean
            else:
                z_image = image_distribution.rsample()
            if not weights.adversarial_to_encoder:
                z_image = z_image.detach()
            terms["fake"] = self.flow.sample(num_fake_points, context=z_image)
        return terms


class PSGNGenerator(nn.Module):
    """The PSGN-style baseline's network: image encoder + MLP regressing a fixed set of points.

    References:
        Fan, Su, Guibas. "A Point Set Generation Network for 3D Object Reconstruction from a
        Single Image." CVPR 2017.

    Arguments:
        config: The run's configuration (``model.psgn_points`` points, by default
            ``eval.num_points``, so that it is evaluated on the points it regresses).
    """

    def __init__(self, config: FlowGANConfig) -> None:
        super().__init__()
        model = config.model
        self.config = config
        self.num_points = model.psgn_points or config.eval.num_points
        self.image_encoder = ResNetImageEncoder(
            model.image_arch, model.image_features, in_channels=model.image_channels
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Linear(model.image_features, 4 * model.image_features),
            nn.ReLU(),
            nn.Linear(4 * model.image_features, 3 * self.num_points),
        )

    def predict(self, images: Tensor) -> Tensor:
        """Training-scale clouds ``(B, num_points, 3)`` for prepared images."""
        return self.head(self.image_encoder(images)).unflatten(-1, (self.num_points, 3))

    def forward(
        self,
        images: Tensor,
        points: Tensor,
        points_target: Tensor,
        num_fake_points: int = 0,
        chamfer: bool = False,
        points_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """Per-shape Chamfer loss ``{"loss": (B,), "chamfer": (B,)}`` against ``points_target``
        (its only loss, whatever ``chamfer``, ``points_scale`` and ``loss.chamfer_weight``
        say: a mean over points, it keeps its scale whatever the number of points)."""
        del points, num_fake_points, chamfer, points_scale  # the baseline sees only the image
        chamfer, _ = chamfer_distance(self.predict(images), points_target, batch_reduction=None)
        return {"loss": chamfer, "chamfer": chamfer}
