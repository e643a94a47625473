"""The FlowGAN model, composed from pcflow's parts, and the PSGN-style baseline."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from pcflow._checks import check_points
from pcflow.critics import CrossModalCritic
from pcflow.encoders.latent import DiagonalGaussian
from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.images import prepare_images
from pcflow.recipes.flowgan.networks import FlowGANGenerator, PSGNGenerator

__all__ = ["FlowGAN", "PSGNBaseline", "build_model"]


def _check_num_points(num_points: int) -> None:
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points!r}")


def _check_clouds(name: str, points: Tensor, batch: int) -> None:
    check_points(name, points, 3)
    if points.shape[0] != batch:
        raise ValueError(
            f"{name} has batch size {points.shape[0]} but the images have batch size {batch}"
        )


class _Recipe(nn.Module):
    """What the training loop needs from a model: ``generator``, ``critic``, images, outputs."""

    generator: nn.Module
    critic: nn.Module | None

    def __init__(self, config: FlowGANConfig | None) -> None:
        super().__init__()
        self.config = FlowGANConfig() if config is None else config

    def prepare_images(self, images: Tensor) -> Tensor:
        """RGB images ``(B, 3, H, W)`` in ``[0, 1]`` to the encoders' input (`prepare_images`)."""
        model = self.config.model
        return prepare_images(images, model.image_size, model.image_channels)

    def generator_terms(
        self, images: Tensor, points: Tensor, points_target: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Per-shape loss terms for unit-scale data, as the training loop computes them.

        Arguments:
            images: RGB images ``(B, 3, H, W)`` in ``[0, 1]``.
            points: Unit-scale clouds ``(B, N, 3)`` (the posterior's input).
            points_target: Unit-scale clouds ``(B, M, 3)`` whose likelihood is the target;
                ``None`` uses ``points``.

        Returns:
            The generator's dict of ``(B,)`` terms (see `FlowGANGenerator.forward`).
        """
        points_target = points if points_target is None else points_target
        _check_clouds("points", points, images.shape[0])
        _check_clouds("points_target", points_target, images.shape[0])
        scale = self.config.model.cloud_scale
        return self.generator(self.prepare_images(images), points / scale, points_target / scale)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)


class FlowGAN(_Recipe):
    """FlowGAN: a point cloud of any size from a single image.

    A VAE whose decoder is a conditional point flow (`FlowGANGenerator`), trained on the
    points' likelihood plus the latent terms, and, unless ``config.model.adversarial`` is
    ``False`` (the flow-only ablation), against a cross-modal critic
    (`pcflow.critics.CrossModalCritic`) that scores (image, cloud) pairs: (image, true cloud)
    is real, (image, cloud sampled from the image-conditioned latent) is fake, and the critic's
    gradient reaches the flow through its sampling path. At inference the latent is the image
    Gaussian's mean and any number of points is sampled. The training loop lives in
    `pcflow.recipes.flowgan.Trainer`.

    References:
        Wei, Vosselman, Yang. "Flow-based GAN for 3D Point Cloud Generation from a Single
        Image." BMVC 2022.

        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020.

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
        super().__init__(config)
        model = self.config.model
        if model.decoder != "flow":
            raise ValueError(
                f"FlowGAN needs model.decoder='flow', got {model.decoder!r} "
                "(use build_model for the PSGN-style baseline)"
            )
        self.generator = FlowGANGenerator(self.config)
        self.critic = (
            CrossModalCritic(
                in_channels=model.image_channels,
                point_features=model.critic_point_features,
                image_features=model.critic_image_features,
                hidden_features=tuple(model.critic_hidden_features),
                image_arch=model.critic_image_arch,
            )
            if model.adversarial
            else None
        )

    def image_distribution(self, images: Tensor) -> DiagonalGaussian:
        """The image-conditioned Gaussian ``p(z | image)`` for RGB images ``(B, 3, H, W)``."""
        return self.generator.image_distribution(self.prepare_images(images))

    def reconstruct(
        self,
        images: Tensor,
        num_points: int = 2500,
        *,
        sample_latent: bool = False,
        chunk_size: int | None = None,
        temperature: float = 1.0,
        trim: float = 0.0,
        spread: int = 1,
    ) -> Tensor:
        """Predict a point cloud of any size for each image (in evaluation mode, no gradients).

        Arguments:
            images: RGB images ``(B, 3, H, W)`` in ``[0, 1]``; resized to
                ``config.model.image_size`` when they differ.
            num_points: Points per cloud.
            sample_latent: Draw ``z`` from the image Gaussian instead of using its mean (the
                paper uses the mean).
            chunk_size: Sample the flow in chunks of this many points (bounded memory).
            temperature: Scale of the flow's base noise (see
                `pcflow.flows.ConditionalPointFlow.sample`); 1 samples the model itself.
            trim: Fraction of low-density draws to drop (see
                `pcflow.flows.ConditionalPointFlow.sample`); 0 samples the model itself.
            spread: Keep ``spread * num_points`` draws and thin them to ``num_points`` by
                farthest point sampling (see `pcflow.flows.ConditionalPointFlow.sample`); 1
                samples the model itself.

        Returns:
            Unit-scale clouds ``(B, num_points, 3)``.
        """
        _check_num_points(num_points)
        with self._evaluating():
            distribution = self.image_distribution(images)
            z = distribution.rsample() if sample_latent else distribution.mean
            clouds = self.generator.flow.sample(
                num_points, context=z, chunk_size=chunk_size, temperature=temperature, trim=trim,
                spread=spread,
            )  # fmt: skip
        return clouds * self.config.model.cloud_scale

    def image_latent(self, images: Tensor) -> Tensor:
        """The mean of ``p(z | image)``, ``(B, C)``, the latent `reconstruct` decodes, for RGB
        images ``(B, 3, H, W)`` (in evaluation mode, no gradients)."""
        with self._evaluating():  # BatchNorm's running statistics, as in reconstruct
            return self.image_distribution(images).mean

    def posterior_mean(self, points: Tensor) -> Tensor:
        """The mean of ``q(z | points)``, ``(B, C)``, for unit-scale clouds ``(B, N, 3)``."""
        check_points("points", points, 3)
        with self._evaluating():
            return self.generator.posterior(points / self.config.model.cloud_scale).mean

    def autoencode(
        self,
        points: Tensor,
        num_points: int = 2500,
        *,
        chunk_size: int | None = None,
        temperature: float = 1.0,
        trim: float = 0.0,
        spread: int = 1,
    ) -> Tensor:
        """Decode each cloud's own posterior mean: the *autoencoding bound* of a reconstruction.

        The flow is handed the latent that the point encoder gives the true cloud, instead of
        the image's. The distance of these clouds to the truth bounds what a better image
        encoder alone could reach; when it is about the image reconstruction's, the decoder is
        what holds the model back.

        Arguments:
            points: Unit-scale clouds ``(B, N, 3)`` (the point encoder's input).
            num_points: Points per decoded cloud.
            chunk_size: As in `reconstruct`.
            temperature: As in `reconstruct`.
            trim: As in `reconstruct`.
            spread: As in `reconstruct`.

        Returns:
            Unit-scale clouds ``(B, num_points, 3)``.
        """
        _check_num_points(num_points)
        z = self.posterior_mean(points)
        with self._evaluating():
            clouds = self.generator.flow.sample(
                num_points, context=z, chunk_size=chunk_size, temperature=temperature, trim=trim,
                spread=spread,
            )  # fmt: skip
        return clouds * self.config.model.cloud_scale


class PSGNBaseline(_Recipe):
    """The PSGN-style baseline: an image encoder regressing a fixed set of points (Chamfer).

    Trained by the same loop and configuration as FlowGAN (``model.decoder="psgn"``), so the
    comparison uses the same image encoder, data and training budget.

    Arguments:
        config: The configuration; ``config.model.decoder`` must be ``"psgn"``.
    """

    def __init__(self, config: FlowGANConfig) -> None:
        super().__init__(config)
        if self.config.model.decoder != "psgn":
            raise ValueError(
                f"PSGNBaseline needs model.decoder='psgn', got {config.model.decoder!r}"
            )
        self.generator = PSGNGenerator(self.config)
        self.critic = None

    def reconstruct(self, images: Tensor, num_points: int = 2500, **_: object) -> Tensor:
        """Predict clouds ``(B, num_points, 3)``; the fixed set is resampled (with repeats if
        ``num_points`` exceeds it) when ``num_points`` differs from its size."""
        if not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points must be a positive integer, got {num_points!r}")
        with self._evaluating():
            clouds = self.generator.predict(self.prepare_images(images))
        fixed = clouds.shape[1]
        if num_points != fixed:
            generator = torch.Generator().manual_seed(0)
            repeats = -(-num_points // fixed)
            order = torch.cat([torch.randperm(fixed, generator=generator) for _ in range(repeats)])
            clouds = clouds[:, order[:num_points].to(clouds.device)]
        return clouds * self.config.model.cloud_scale


def build_model(config: FlowGANConfig) -> FlowGAN | PSGNBaseline:
    """Build the model that ``config.model.decoder`` names: `FlowGAN` or `PSGNBaseline`."""
    if config.model.decoder == "flow":
        return FlowGAN(config)
    if config.model.decoder == "psgn":
        return PSGNBaseline(config)
    raise ValueError(f"model.decoder must be 'flow' or 'psgn', got {config.model.decoder!r}")
