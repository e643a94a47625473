"""The FlowGAN model, composed from pcflow's parts, and the PSGN-style baseline."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pcflow._checks import check_points, check_same_batch
from pcflow.encoders import DiagonalGaussian, prepare_images
from pcflow.flows import SamplingOptions
from pcflow.models import PointSetRegressor, evaluating
from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.networks import build_critic, build_generator, build_psgn
from pcflow.recipes.flowgan.objective import GeneratorLoss, PSGNLoss

__all__ = ["FlowGAN", "PSGNBaseline", "build_model"]


class FlowGAN(nn.Module):
    """FlowGAN: a point cloud of any size from a single image.

    The generator is a `pcflow.models.LatentPointFlow` whose prior is the image-conditioned
    Gaussian ``p(z | image)`` (`networks.build_generator`), trained on the points'
    likelihood plus the latent terms and, unless ``config.model.adversarial`` is ``False``
    (the flow-only ablation), against a cross-modal critic
    (`pcflow.critics.CrossModalCritic`) that scores (image, cloud) pairs: (image, true cloud)
    is real, (image, cloud sampled from the image-conditioned latent) is fake, and the critic's
    gradient reaches the flow through its sampling path (`objective`). At inference the latent
    is the image Gaussian's mean and any number of points is sampled.

    References:
        Wei, Vosselman, Yang. "Flow-based GAN for 3D Point Cloud Generation from a Single
        Image." BMVC 2022.

    Arguments:
        config: The configuration; ``None`` for the quick preset. ``config.model.decoder``
            must be ``"flow"``.

    Example:
        >>> import torch
        >>> from pcflow.recipes.flowgan import FlowGAN, FlowGANConfig
        >>> model = FlowGAN(FlowGANConfig.preset("tiny"))
        >>> model.reconstruct(torch.rand(2, 3, 32, 32), num_points=100).shape
        torch.Size([2, 100, 3])
    """

    def __init__(self, config: FlowGANConfig | None = None) -> None:
        super().__init__()
        self.config = FlowGANConfig() if config is None else config
        if self.config.model.decoder != "flow":
            raise ValueError(
                f"FlowGAN needs model.decoder='flow', got {self.config.model.decoder!r} "
                "(use build_model for the PSGN-style baseline)"
            )
        self.generator = build_generator(self.config.model)
        self.critic = build_critic(self.config.model)

    def prepare_images(self, images: Tensor) -> Tensor:
        """RGB images ``(B, 3, H, W)`` in ``[0, 1]`` to the encoders' input (`prepare_images`)."""
        model = self.config.model
        return prepare_images(images, model.image_size, model.image_channels)

    def generator_terms(
        self, images: Tensor, points: Tensor, points_target: Tensor | None = None, **options: Any
    ) -> dict[str, Tensor]:
        """The generator's per-shape loss terms (`GeneratorLoss`) for RGB images ``(B, 3, H,
        W)`` and clouds ``(B, N, 3)``; ``points_target`` ``None`` uses ``points``; ``options``
        are `GeneratorLoss`'s (``num_fake_points``, ``chamfer``, ``points_scale``)."""
        target = points if points_target is None else points_target
        for name, clouds in (("points", points), ("points_target", target)):
            check_points(name, clouds, 3)
            check_same_batch(name, clouds, "images", images)
        loss = GeneratorLoss(self.generator, self.config.loss)
        return loss(self.prepare_images(images), points, target, **options)

    def image_distribution(self, images: Tensor) -> DiagonalGaussian:
        """The image-conditioned Gaussian ``p(z | image)`` for RGB images ``(B, 3, H, W)``."""
        return self.generator.prior.distribution(self.prepare_images(images))

    def image_latent(self, images: Tensor) -> Tensor:
        """The mean of ``p(z | image)``, ``(B, L)``, the latent `reconstruct` decodes (in
        evaluation mode, no gradients)."""
        with evaluating(self):
            return self.image_distribution(images).mean

    def reconstruct(
        self,
        images: Tensor,
        num_points: int = 2500,
        sampling: SamplingOptions | None = None,
        *,
        sample_latent: bool = False,
    ) -> Tensor:
        """Predict a point cloud of any size for each image (in evaluation mode, no gradients).

        Arguments:
            images: RGB images ``(B, 3, H, W)`` in ``[0, 1]``; resized to
                ``config.model.image_size`` when they differ.
            num_points: Points per cloud.
            sampling: How the flow samples (`pcflow.flows.SamplingOptions`); ``None`` uses the
                checkpoint's ``config.eval.sampling`` (the setting chosen on validation and
                stored with the model); ``SamplingOptions()`` samples the model itself.
            sample_latent: Draw ``z`` from the image Gaussian instead of using its mean (the
                paper uses the mean).

        Returns:
            Clouds ``(B, num_points, 3)``.
        """
        with evaluating(self):
            distribution = self.image_distribution(images)
            z = distribution.rsample() if sample_latent else distribution.mean
        return self.generator.decode(z, num_points, self._sampling(sampling))

    def _sampling(self, sampling: SamplingOptions | None) -> SamplingOptions:
        return self.config.eval.sampling if sampling is None else sampling

    def log_density(self, images: Tensor, clouds: Tensor) -> Tensor:
        """Each point's log-density ``(B, N)`` under the flow at the images' latent."""
        return self.generator.log_prob_points(clouds, self.image_latent(images))

    def posterior_mean(self, points: Tensor) -> Tensor:
        """The mean of ``q(z | points)``, ``(B, L)``, for clouds ``(B, N, 3)``."""
        return self.generator.encode(points)

    def autoencode(
        self, points: Tensor, num_points: int = 2500, sampling: SamplingOptions | None = None
    ) -> Tensor:
        """Decode each cloud's own posterior mean: the *autoencoding bound* of a reconstruction.

        The flow is handed the latent that the point encoder gives the true cloud instead of
        the image's. The distance of these clouds to the truth bounds what a better image
        encoder alone could reach; when it is about the image reconstruction's, the decoder is
        what holds the model back. ``sampling`` as in `reconstruct`.

        Returns:
            Clouds ``(B, num_points, 3)``.
        """
        return self.generator.autoencode(points, num_points, self._sampling(sampling))


class PSGNBaseline(nn.Module):
    """The PSGN-style baseline (`pcflow.models.PointSetRegressor`, Chamfer loss), trained by
    FlowGAN's loop and configuration (``model.decoder="psgn"``): same encoder, data, budget.

    Arguments:
        config: The configuration; ``config.model.decoder`` must be ``"psgn"``.
    """

    critic = None

    def __init__(self, config: FlowGANConfig) -> None:
        super().__init__()
        self.config = config
        if config.model.decoder != "psgn":
            raise ValueError(
                f"PSGNBaseline needs model.decoder='psgn', got {config.model.decoder!r}"
            )
        self.generator = build_psgn(
            config.model, config.model.psgn_points or config.eval.num_points
        )

    prepare_images = FlowGAN.prepare_images

    def generator_terms(
        self, images: Tensor, points: Tensor, points_target: Tensor | None = None, **options: Any
    ) -> dict[str, Tensor]:
        """The baseline's loss terms (`PSGNLoss`), as `FlowGAN.generator_terms`."""
        target = points if points_target is None else points_target
        check_same_batch("points_target", target, "images", images)
        loss = PSGNLoss(self.generator, self.config.model.cloud_scale)
        return loss(self.prepare_images(images), points, target, **options)

    def reconstruct(
        self, images: Tensor, num_points: int = 2500, sampling: SamplingOptions | None = None
    ) -> Tensor:
        """Predict clouds ``(B, num_points, 3)``; the fixed set is resampled (with repeats if
        ``num_points`` exceeds it) when ``num_points`` differs from its size. ``sampling``
        does not apply (there is no flow)."""
        with evaluating(self):
            clouds = self.generator(self.prepare_images(images))
        clouds = PointSetRegressor.resample(clouds, num_points)
        return clouds * self.config.model.cloud_scale


def build_model(config: FlowGANConfig) -> FlowGAN | PSGNBaseline:
    """Build the model that ``config.model.decoder`` names: `FlowGAN` or `PSGNBaseline`."""
    if config.model.decoder == "flow":
        return FlowGAN(config)
    if config.model.decoder == "psgn":
        return PSGNBaseline(config)
    raise ValueError(f"model.decoder must be 'flow' or 'psgn', got {config.model.decoder!r}")
