"""FlowGAN's objective as the paper's method section states it: the generator's loss, the critic's.

Notation: ``X`` a true cloud and ``X'`` an independent sample of the same surface, ``I`` its
image, ``q(z | X)`` the PointNet posterior, ``p(z | I)`` the image-conditioned Gaussian,
``p(X | z)`` the point flow, ``D(I, X)`` the cross-modal critic, ``G(I)`` a cloud the flow
samples from the image's latent. The weights ``w`` are `LossConfig`'s.
"""

from __future__ import annotations

from torch import Tensor, nn

from pcflow.losses import chamfer_distance
from pcflow.models import LatentPointFlow
from pcflow.recipes.flowgan.sections import LossConfig

__all__ = ["GeneratorLoss", "PSGNLoss", "chamfer_term", "likelihood_loss"]


def likelihood_loss(
    nll_points: Tensor, nll_latent: Tensor, entropy: Tensor, weights: LossConfig
) -> Tensor:
    """The VAE's per-shape loss, ``z ~ q(z | X)`` reparameterised::

        L_VAE = w_points * -log p(X' | z) + w_prior * -log p(z | I) - w_entropy * H[q(z | X)]

    Arguments:
        nll_points: ``-log p(X' | z)``, ``(B,)``, summed over points and coordinates.
        nll_latent: ``-log p(z | I)``, ``(B,)``.
        entropy: ``H[q(z | X)]``, ``(B,)``.
        weights: The loss weights.

    Returns:
        ``(B,)``.
    """
    return (
        weights.points_weight * nll_points
        + weights.prior_weight * nll_latent
        - weights.entropy_weight * entropy
    )


def chamfer_term(chamfer: Tensor, num_points: int, weights: LossConfig) -> Tensor:
    """The Chamfer term added to a shape's loss: the cloud ``G_mean(I)`` that the flow samples
    at the image Gaussian's mean (the latent of inference), against the target ``X'``::

        L_CD = w_chamfer * M * CD(G_mean(I), X')

    ``CD`` is `pcflow.losses.chamfer_distance`'s at the flow's scale; times the ``M`` target
    points it is a sum over points, as the points' NLL is: ``w_chamfer`` weighs them per point.

    Arguments:
        chamfer: ``CD(G_mean(I), X')``, ``(B,)``.
        num_points: ``M``, the points of ``X'``.
        weights: The loss weights.

    Returns:
        ``(B,)``.
    """
    return weights.chamfer_weight * num_points * chamfer


class GeneratorLoss(nn.Module):
    """The generator's per-shape loss terms, as one module (what ``DistributedDataParallel``
    wraps, so that every gradient of a step comes from one forward pass).

    Arguments:
        generator: FlowGAN's generator (`pcflow.models.LatentPointFlow` with the image prior).
        weights: The loss weights.
    """

    def __init__(self, generator: LatentPointFlow, weights: LossConfig) -> None:
        super().__init__()
        self.generator, self.weights = generator, weights

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
            images: Prepared images ``(B, C, S, S)`` (`pcflow.encoders.prepare_images`).
            points: Clouds ``(B, N, 3)``, the posterior's input.
            points_target: Clouds ``(B, M, 3)``, an independent sample of the same surfaces,
                whose likelihood is the target.
            num_fake_points: If positive, also sample clouds of this many points given the
                image-conditioned latent (its mean, or a reparameterised draw, as
                ``loss.adversarial_latent`` says), keeping the graph so that a critic's
                gradient reaches the flow (and the image encoder with
                ``loss.adversarial_to_encoder``).
            chamfer: Add the Chamfer term (`chamfer_term`): ``M`` points sampled at the image
                Gaussian's mean, the latent of inference, against ``points_target``.
            points_scale: Factor on the two sums over the target's points (the points' NLL
                and the Chamfer term), e.g. ``data.num_points / M`` for denser clouds.

        Returns:
            A dict of ``(B,)`` tensors: ``"nll_points"`` (summed over points and coordinates,
            at the flow's scale), ``"nll_latent"`` (``-log p(z | image)`` at the posterior
            sample), ``"entropy"`` (of ``q(z | points)``), ``"chamfer"`` (when asked),
            ``"loss"`` (their weighted sum), and ``"fake"`` ``(B, num_fake_points, 3)`` at the
            flow's scale when asked.
        """
        weights, flow = self.weights, self.generator.flow
        terms = self.generator.elbo(points, points_target, condition=images)
        loss = likelihood_loss(
            points_scale * terms.nll_points, terms.nll_latent, terms.entropy, weights
        )
        result = {
            "loss": loss,
            "nll_points": terms.nll_points,
            "nll_latent": terms.nll_latent,
            "entropy": terms.entropy,
        }
        image_distribution = terms.prior
        target = self.generator.normalize(points_target)
        if chamfer and weights.chamfer_weight > 0:
            cloud = flow.sample(target.shape[1], context=image_distribution.mean)
            result["chamfer"], _ = chamfer_distance(cloud, target, batch_reduction=None)
            term = chamfer_term(result["chamfer"], target.shape[1], weights)
            result["loss"] = loss + points_scale * term
        if num_fake_points > 0:
            if weights.adversarial_latent == "mean":
                z_image = image_distribution.mean
            else:
                z_image = image_distribution.rsample()
            if not weights.adversarial_to_encoder:
                z_image = z_image.detach()
            context = self.generator.flow_context(z_image)  # the clean surface (noise level 0)
            result["fake"] = flow.sample(num_fake_points, context=context)
        return result


class PSGNLoss(nn.Module):
    """The PSGN-style baseline's loss per shape, the Chamfer distance (one module, for DDP).

    Arguments:
        generator: The baseline's `pcflow.models.PointSetRegressor`.
        cloud_scale: Clouds are divided by this for training.
    """

    def __init__(self, generator: nn.Module, cloud_scale: float) -> None:
        super().__init__()
        self.generator, self.cloud_scale = generator, cloud_scale

    def forward(
        self, images: Tensor, points: Tensor, points_target: Tensor, *_: object, **__: object
    ) -> dict[str, Tensor]:
        """``{"loss": (B,), "chamfer": (B,)}`` against ``points_target``; the baseline sees only
        the image (its only loss is a Chamfer distance, a mean over points, whatever the
        Chamfer weight and the points' scale say)."""
        target = points_target / self.cloud_scale
        chamfer, _ = chamfer_distance(self.generator(images), target, batch_reduction=None)
        return {"loss": chamfer, "chamfer": chamfer}
