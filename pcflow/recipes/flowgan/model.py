"""The FlowGAN model, composed from pcflow's parts, and the PSGN-style baseline."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcflow.critics import CrossModalCritic
from pcflow.encoders import GaussianHead, PointNetEncoder, ResNetImageEncoder
from pcflow.encoders.latent import DiagonalGaussian
from pcflow.recipes.flowgan.config import FlowGANConfig

__all__ = [
    "FlowGAN",
    "FlowGANGenerator",
    "PSGNBaseline",
    "PSGNGenerator",
    "build_model",
    "check_rgb_images",
    "prepare_images",
]

# Per-channel normalisation of the encoders' input: ImageNet statistics for RGB, and their
# luminance-weighted mean for the grey channel (the paper feeds grey + RGB, normalised per channel).
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)
_GREY_MEAN = sum(w * m for w, m in zip(_LUMA, _RGB_MEAN))
_GREY_STD = sum(w * s for w, s in zip(_LUMA, _RGB_STD))


def check_rgb_images(name: str, images: Tensor) -> None:
    """Check RGB images ``(B, 3, H, W)``, floating point, finite, in ``[0, 1]``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of RGB images shaped (B, 3, H, W)")
    shape = "(" + ", ".join(str(s) for s in images.shape) + ")"
    if images.dim() != 4 or images.shape[1] != 3:
        hint = ""
        if images.dim() == 4 and images.shape[1] == 4:
            hint = " (RGBA? composite it on a white background first)"
        elif images.dim() == 4 and images.shape[-1] in (3, 4):
            hint = " (channels last? use images.permute(0, 3, 1, 2))"
        elif images.dim() == 3:
            hint = " (one image? add the batch dimension with images[None])"
        raise ValueError(f"{name} must have shape (B, 3, H, W), got shape {shape}{hint}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be floating point in [0, 1], got dtype {images.dtype} "
            "(uint8 images: divide by 255)"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch, shape {shape}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite, but holds NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")


def prepare_images(images: Tensor, size: int, channels: int = 4) -> Tensor:
    """Turn RGB images in ``[0, 1]`` into the encoders' input.

    Images are resized to ``size x size`` (bilinear, antialiased) when they differ, given a
    grey channel in front when ``channels == 4`` (the paper's grey + RGB), and normalised per
    channel.

    Arguments:
        images: RGB images ``(B, 3, H, W)`` in ``[0, 1]``.
        size: The encoders' image height and width.
        channels: 4 (grey + RGB) or 3 (RGB).

    Returns:
        Normalised images ``(B, channels, size, size)``.
    """
    check_rgb_images("images", images)
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 (RGB) or 4 (grey + RGB), got {channels}")
    if images.shape[-2:] != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(_RGB_MEAN, dtype=images.dtype, device=images.device)
    std = torch.tensor(_RGB_STD, dtype=images.dtype, device=images.device)
    rgb = (images - mean[:, None, None]) / std[:, None, None]
    if channels == 3:
        return rgb
    luma = torch.tensor(_LUMA, dtype=images.dtype, device=images.device)
    grey = torch.einsum("bchw,c->bhw", images, luma)[:, None]
    return torch.cat([(grey - _GREY_MEAN) / _GREY_STD, rgb], dim=1)


def _check_num_points(num_points: int) -> None:
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points!r}")


def _check_clouds(name: str, points: Tensor, batch: int) -> None:
    from pcflow._checks import check_points

    check_points(name, points, 3)
    if points.shape[0] != batch:
        raise ValueError(
            f"{name} has batch size {points.shape[0]} but the images have batch size {batch}"
        )


class FlowGANGenerator(nn.Module):
    """FlowGAN's generator: the VAE whose decoder is a conditional point flow.

    Parts: a PointNet over the ground-truth cloud with a one-layer Gaussian head (the
    posterior ``q(z | points)``), a ResNet over the image with a one-layer Gaussian head (the
    image-conditioned Gaussian ``p(z | image)``, the "prior" of training), and the DPF-Nets flow
    ``p(points | z)`` from `pcflow.flows.dpf_flow`.

    ``forward`` returns the per-shape terms of the loss (on clouds divided by
    ``config.model.cloud_scale``) and, when asked, clouds sampled from the image-conditioned
    latent through the flow, differentiably, for the critic.

    Arguments:
        config: The run's configuration (its ``model`` and ``loss`` sections are used).
    """

    def __init__(self, config: FlowGANConfig) -> None:
        super().__init__()
        from pcflow.flows import dpf_flow

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
        self, images: Tensor, points: Tensor, points_target: Tensor, num_fake_points: int = 0
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

        Returns:
            A dict of ``(B,)`` tensors: ``"nll_points"`` (summed over points and coordinates,
            constant included), ``"nll_latent"`` (``-log p(z | image)`` at the posterior
            sample), ``"entropy"`` (of ``q(z | points)``), ``"loss"`` (their weighted sum, see
            `LossConfig`), and ``"fake"`` ``(B, num_fake_points, 3)`` when asked.
        """
        weights = self.config.loss
        posterior = self.posterior(points)
        z = posterior.rsample()
        image_distribution = self.image_distribution(images)
        nll_points = -self.flow.log_prob(points_target, context=z)
        nll_latent = -image_distribution.log_prob(z)
        entropy = posterior.entropy()
        loss = (
            weights.points_weight * nll_points
            + weights.prior_weight * nll_latent
            - weights.entropy_weight * entropy
        )
        terms = {
            "loss": loss,
            "nll_points": nll_points,
            "nll_latent": nll_latent,
            "entropy": entropy,
        }
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
        self, images: Tensor, points: Tensor, points_target: Tensor, num_fake_points: int = 0
    ) -> dict[str, Tensor]:
        """Per-shape Chamfer loss ``{"loss": (B,), "chamfer": (B,)}`` against ``points_target``."""
        from pcflow.losses import chamfer_distance

        del points, num_fake_points  # the baseline sees only the image
        chamfer, _ = chamfer_distance(self.predict(images), points_target, batch_reduction=None)
        return {"loss": chamfer, "chamfer": chamfer}


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

        Returns:
            Unit-scale clouds ``(B, num_points, 3)``.
        """
        _check_num_points(num_points)
        with self._evaluating():
            distribution = self.image_distribution(images)
            z = distribution.rsample() if sample_latent else distribution.mean
            clouds = self.generator.flow.sample(
                num_points, context=z, chunk_size=chunk_size, temperature=temperature
            )
        return clouds * self.config.model.cloud_scale

    def posterior_mean(self, points: Tensor) -> Tensor:
        """The mean of ``q(z | points)``, ``(B, C)``, for unit-scale clouds ``(B, N, 3)``."""
        from pcflow._checks import check_points

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

        Returns:
            Unit-scale clouds ``(B, num_points, 3)``.
        """
        _check_num_points(num_points)
        z = self.posterior_mean(points)
        with self._evaluating():
            clouds = self.generator.flow.sample(
                num_points, context=z, chunk_size=chunk_size, temperature=temperature
            )
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
