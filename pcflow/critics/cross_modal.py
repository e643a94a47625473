"""The cross-modal critic: does this point cloud fit this image?"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from pcflow._checks import check_points, check_same_batch
from pcflow.encoders.pointnet import PointNetEncoder, mlp_layers
from pcflow.encoders.resnet import ResNetImageEncoder, check_images

__all__ = ["CrossModalCritic"]

_NORMS = (None, "batch", "layer")


class CrossModalCritic(nn.Module):
    """Score (point cloud, image) pairs with one unbounded logit per pair, as FlowGAN's critic.

    Image branch: a ResNet18 on ``in_channels`` channels with its last layer giving
    ``image_features`` (128). Point branch: a PointNet ``3 -> 64 -> 64 -> point_features`` (128),
    max pooled, shared by real and generated clouds. The two features are concatenated and
    an MLP ``hidden_features`` (128 -> 64 -> 32 -> 16) with normalisation and
    LeakyReLU(0.2) between layers gives one logit; there is no sigmoid, the GAN loss
    (`pcflow.critics.critic_loss`) decides how logits are read. Nothing is detached:
    gradients flow to the input points, so a generator that produced them is trained through
    the critic.

    Normalisation (``norm``, for the point branch and the MLP): ``"batch"`` is the paper's
    BatchNorm. In training mode it makes each pair's logit depend on the other pairs of the
    batch, so per-sample gradient penalties (`pcflow.critics.gradient_penalty`,
    `pcflow.critics.r1_penalty`) are ill-defined; those functions raise for this critic
    in training mode with ``norm="batch"``. Use ``norm="layer"`` or ``None`` with WGAN-GP or R1.
    The image branch's BatchNorm couples only the images, which are shared between real and
    generated pairs and held fixed by the point penalties.

    References:
        Wei, Vosselman, Yang. "Flow-based GAN for 3D Point Cloud Generation from a Single
        Image." BMVC 2022.

    Arguments:
        in_channels: Image channels (FlowGAN: 4, grey + RGB).
        point_features: Size of the pooled point feature.
        image_features: Size of the image feature.
        hidden_features: Widths of the MLP's hidden layers; a final layer maps to one logit.
        norm: ``"batch"`` (paper), ``"layer"`` or ``None``, see above.
        point_hidden_features: Hidden widths of the point branch's PointNet.
        negative_slope: Slope of the LeakyReLU.
        image_weights: Optional local torchvision resnet18 state dict for the image branch
            (see `pcflow.encoders.ResNetImageEncoder`).
        image_arch: The image branch's architecture: ``"resnet18"`` (paper), ``"small"``
            (`pcflow.encoders.SmallResNet`, for CPU budgets) or ``"small_gn"`` (the same with
            GroupNorm).

    Example:
        >>> import torch
        >>> from pcflow.critics import CrossModalCritic
        >>> critic = CrossModalCritic(in_channels=4).eval()
        >>> critic(torch.randn(2, 500, 3), torch.rand(2, 4, 64, 64)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        in_channels: int = 4,
        point_features: int = 128,
        image_features: int = 128,
        hidden_features: Sequence[int] = (128, 64, 32, 16),
        norm: str | None = "batch",
        *,
        point_hidden_features: Sequence[int] = (64, 64),
        negative_slope: float = 0.2,
        image_weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
        image_arch: str = "resnet18",
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
        self.in_channels = in_channels
        self.norm = norm
        self.image_encoder = ResNetImageEncoder(
            image_arch, out_features=image_features, in_channels=in_channels, weights=image_weights
        )
        self.point_encoder = PointNetEncoder(
            in_features=3,
            out_features=point_features,
            hidden_features=point_hidden_features,
            norm=norm,
        )
        widths = [point_features + image_features, *hidden_features]
        layers = mlp_layers(widths, norm, lambda: nn.LeakyReLU(negative_slope))
        layers.append(nn.Linear(widths[-1], 1))
        self.mlp = nn.Sequential(*layers)

    @property
    def couples_points_across_batch(self) -> bool:
        """Whether, in the current mode, a pair's logit depends on the other pairs' points."""
        return self.training and self.norm == "batch"

    def forward(self, points: Tensor, images: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Score each (point cloud, image) pair.

        Arguments:
            points: Point clouds ``(B, N, 3)``, real or generated.
            images: The images they should fit, ``(B, in_channels, H, W)``, ``H, W >= 32``.
            lengths: Optional number of valid points per cloud, integer ``(B,)``.

        Returns:
            Logits ``(B,)`` (no sigmoid).
        """
        check_points("points", points, 3)
        check_images("images", images, self.in_channels)
        check_same_batch("points", points, "images", images)
        point_features = self.point_encoder(points, lengths)
        image_features = self.image_encoder(images)
        fused = torch.cat([point_features, image_features], dim=-1)
        return self.mlp(fused).squeeze(-1)
