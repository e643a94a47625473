"""A latent point-flow model: a point encoder and Gaussian posterior, a conditional point flow
decoder, and a prior over the latent."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pcflow._checks import check_points, check_positive_int
from pcflow.encoders.latent import DiagonalGaussian, GaussianHead
from pcflow.flows.base import ConditionalPointFlow
from pcflow.flows.sampling import SamplingOptions
from pcflow.models.priors import LatentPrior, StandardNormalPrior

__all__ = ["ELBOTerms", "LatentPointFlow", "evaluating"]


@dataclass
class ELBOTerms:
    """The per-shape terms of a latent point flow's evidence lower bound, ``z ~ q(z | X)``.

    Arguments:
        z: The posterior sample ``(B, L)`` (reparameterised).
        posterior: ``q(z | X)``.
        nll_points: ``-log p(X' | z)`` ``(B,)``, summed over points and coordinates, for
            clouds at the model's training scale (divided by ``cloud_scale``).
        nll_latent: ``-log p(z [| c])`` ``(B,)``.
        entropy: ``H[q(z | X)]`` ``(B,)``.
        prior: The prior as a `DiagonalGaussian` where it is one (given its condition), else
            ``None``.
    """

    z: Tensor
    posterior: DiagonalGaussian
    nll_points: Tensor
    nll_latent: Tensor
    entropy: Tensor
    prior: DiagonalGaussian | None = None

    def loss(
        self,
        points_weight: float = 1.0,
        prior_weight: float = 1.0,
        entropy_weight: float = 1.0,
        points_scale: float = 1.0,
    ) -> Tensor:
        """The negative ELBO per shape, with plain weights::

            w_points * s * -log p(X' | z) + w_prior * -log p(z) - w_entropy * H[q(z | X)]

        With all weights 1 it is ``-ELBO`` (the KL term as ``-log p(z) - H[q]``); ``s``
        (``points_scale``) rescales the sum over points, e.g. when training on denser clouds.

        Returns:
            ``(B,)``.
        """
        return (
            points_weight * (points_scale * self.nll_points)
            + prior_weight * self.nll_latent
            - entropy_weight * self.entropy
        )


class LatentPointFlow(nn.Module):
    r"""A VAE over point clouds whose decoder is a conditional point flow.

    $q(z \mid X)$ is a point encoder with a `GaussianHead`; $p(X \mid z)$ a
    `pcflow.flows.ConditionalPointFlow` over the cloud's points given the latent; $p(z)$ or
    $p(z \mid c)$ a prior (`StandardNormalPrior`, a learned `FlowPrior`, or a
    `ConditionalGaussianPrior` of a condition such as an image). Trained on `elbo`'s terms, it
    autoencodes a cloud at any number of points (`autoencode`), generates shapes from the
    prior (`sample`), and gives each point's exact log-likelihood (`log_prob_points`). This is
    DPF-Nets' model, and FlowGAN's generator (with an image prior and a critic).

    Clouds go in and out at their own scale; inside, they are divided by ``cloud_scale``.

    References:
        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020.

    Arguments:
        point_encoder: ``(B, N, 3) -> (B, F)``, e.g. `pcflow.encoders.PointNetEncoder`.
        posterior_head: ``GaussianHead(F, L)``.
        flow: The decoder, context size ``L`` (e.g. `pcflow.flows.dpf_flow`).
        prior: ``p(z)`` or ``p(z | c)``; ``None`` for `StandardNormalPrior`.
        cloud_scale: Clouds are divided by this inside the model.
        noise_scale: Largest noise of SoftFlow's noise-conditioned training (Kim et al.,
            NeurIPS 2020), in the clouds' own units; 0 (the default) trains on the clouds as
            they are. When positive, `elbo` perturbs each target cloud by Gaussian noise of a
            standard deviation ``s`` drawn uniformly in ``[0, noise_scale]`` per shape, and the
            flow is conditioned on ``(z, s / noise_scale)``: its context has ``L + 1``
            features. Decoding, sampling and `log_prob_points` use ``s = 0``, the clean
            surface, which the flow no longer has to fit as a degenerate, infinitely thin
            density. (SoftFlow draws a scale per point; here one per shape, since the context
            is per shape.)

    Example:
        >>> import torch
        >>> from pcflow.encoders import GaussianHead, PointNetEncoder
        >>> from pcflow.flows import dpf_flow
        >>> model = LatentPointFlow(
        ...     PointNetEncoder(3, 32, (16,)), GaussianHead(32, 8),
        ...     dpf_flow(context_features=8, num_layers=3, hidden_features=16),
        ... )
        >>> clouds = torch.rand(2, 100, 3)
        >>> model.elbo(clouds).loss().shape
        torch.Size([2])
        >>> model.sample(3, 500).shape
        torch.Size([3, 500, 3])
    """

    def __init__(
        self,
        point_encoder: nn.Module,
        posterior_head: GaussianHead,
        flow: ConditionalPointFlow,
        prior: LatentPrior | None = None,
        *,
        cloud_scale: float = 1.0,
        noise_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if not (isinstance(noise_scale, int | float) and math.isfinite(noise_scale)) or (
            noise_scale < 0
        ):
            raise ValueError(f"noise_scale must be a number >= 0, got {noise_scale!r}")
        if not (isinstance(cloud_scale, int | float) and math.isfinite(cloud_scale)) or (
            cloud_scale <= 0
        ):
            raise ValueError(f"cloud_scale must be a positive number, got {cloud_scale!r}")
        latent = posterior_head.latent_features
        prior = StandardNormalPrior(latent) if prior is None else prior
        if prior.latent_features != latent:
            raise ValueError(
                f"the prior is over {prior.latent_features} latent features but the posterior "
                f"head gives {latent}"
            )
        # Registration order is the order of the parameters (and of the optimiser's state).
        self.point_encoder, self.posterior_head = point_encoder, posterior_head
        self.prior = prior
        self.flow = flow
        self.cloud_scale = float(cloud_scale)
        self.noise_scale = float(noise_scale)

    @property
    def latent_features(self) -> int:
        """Size ``L`` of the latent."""
        return self.posterior_head.latent_features

    def normalize(self, points: Tensor) -> Tensor:
        """Clouds at their own scale to the flow's: divided by ``cloud_scale``."""
        return points / self.cloud_scale

    def denormalize(self, points: Tensor) -> Tensor:
        """Clouds at the flow's scale to their own: multiplied by ``cloud_scale``."""
        return points * self.cloud_scale

    def flow_context(self, z: Tensor, noise: Tensor | None = None) -> Tensor:
        """The flow's context for latents ``(B, L)``: ``z`` itself, or with a positive
        ``noise_scale`` ``(B, L + 1)``, ``z`` and each shape's noise level ``s / noise_scale``
        (``noise (B,)``; ``None``: no noise, the clean surface)."""
        if self.noise_scale == 0:
            return z
        level = z.new_zeros(z.shape[0]) if noise is None else noise / self.noise_scale
        return torch.cat([z, level[:, None].to(z)], dim=1)

    # ------------------------------------------------------------------ training
    def posterior(self, points: Tensor) -> DiagonalGaussian:
        """``q(z | X)`` for clouds ``(B, N, 3)``."""
        check_points("points", points, 3)
        return self.posterior_head(self.point_encoder(self.normalize(points)))

    def elbo(
        self,
        points: Tensor,
        points_target: Tensor | None = None,
        condition: Tensor | None = None,
    ) -> ELBOTerms:
        """The ELBO's terms, differentiably (``z`` reparameterised).

        Arguments:
            points: Clouds ``(B, N, 3)``, the posterior's input.
            points_target: Clouds ``(B, M, 3)`` whose likelihood is the target, e.g. an
                independent sample of the same surfaces; ``None`` uses ``points``.
            condition: The prior's condition ``(B, ...)`` where it has one.

        Returns:
            `ELBOTerms`; ``.loss(...)`` weighs them.
        """
        target = points if points_target is None else points_target
        check_points("points_target", target, 3)
        if target.shape[0] != points.shape[0]:
            raise ValueError(
                f"points_target has batch size {target.shape[0]}, points {points.shape[0]}"
            )
        posterior = self.posterior(points)
        z = posterior.rsample()
        prior = None
        if isinstance(self.prior, StandardNormalPrior):
            prior = self.prior.distribution(z.shape[0])
        elif hasattr(self.prior, "distribution"):
            prior = self.prior.distribution(condition)
        # The terms in this order: autograd sums the gradients reaching z in the reverse order of
        # their creation, so another order would change the last bits of a training run.
        context, target = z, self.normalize(target)
        if self.noise_scale > 0:  # SoftFlow: a noise level per shape, given to the flow
            noise = target.new_empty(target.shape[0]).uniform_() * self.noise_scale
            target = target + torch.randn_like(target) * (noise / self.cloud_scale)[:, None, None]
            context = self.flow_context(z, noise)
        nll_points = -self.flow.log_prob(target, context=context)
        nll_latent = -(self.prior.log_prob(z, condition) if prior is None else prior.log_prob(z))
        return ELBOTerms(z, posterior, nll_points, nll_latent, posterior.entropy(), prior)

    # ------------------------------------------------------------------ inference
    def encode(self, points: Tensor) -> Tensor:
        """The posterior means ``(B, L)`` of clouds ``(B, N, 3)`` (evaluation mode, no grad)."""
        with evaluating(self):
            return self.posterior(points).mean

    def decode(self, z: Tensor, num_points: int, sampling: SamplingOptions | None = None) -> Tensor:
        """Clouds ``(B, num_points, 3)`` the flow samples given latents ``(B, L)``
        (evaluation mode, no grad)."""
        sampling = sampling or SamplingOptions()
        with evaluating(self):
            clouds = self.flow.sample(num_points, context=self.flow_context(z),
                                      **sampling.keywords())  # fmt: skip
        return self.denormalize(clouds)

    def autoencode(
        self, points: Tensor, num_points: int, sampling: SamplingOptions | None = None
    ) -> Tensor:
        """Decode each cloud's own posterior mean: ``(B, N, 3) -> (B, num_points, 3)``."""
        return self.decode(self.encode(points), num_points, sampling)

    def sample(
        self,
        num_shapes: int,
        num_points: int,
        condition: Tensor | None = None,
        sampling: SamplingOptions | None = None,
    ) -> Tensor:
        """New shapes: latents from the prior, decoded. ``(num_shapes, num_points, 3)``, or one
        shape per condition row for a conditional prior."""
        check_positive_int("num_shapes", num_shapes)
        with evaluating(self):
            z = self.prior.sample(num_shapes, condition)
        return self.decode(z, num_points, sampling)

    def log_prob_points(self, points: Tensor, z: Tensor) -> Tensor:
        """Each point's exact log-density ``log p(x | z)`` ``(B, N)`` for clouds ``(B, N, 3)``
        at their own scale (the scale's Jacobian included), given latents ``(B, L)``."""
        check_points("points", points, 3)
        with evaluating(self):
            values = self.flow.log_prob(self.normalize(points), context=self.flow_context(z),
                                        per_point=True)  # fmt: skip
        return values - points.shape[-1] * math.log(self.cloud_scale)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Within the block: ``module`` in evaluation mode and no gradients; its mode comes back."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)
