"""A fixed set of points regressed from an input's features: the PSGN-style baseline's model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pcflow._checks import check_positive_int

__all__ = ["PointSetRegressor"]


class PointSetRegressor(nn.Module):
    """An encoder and an MLP that regress a fixed set of ``num_points`` points (PSGN-style).

    ``encoder`` maps an input (an image, ...) to features ``(B, F)``; ``ReLU, Linear(F, 4F),
    ReLU, Linear(4F, 3K)`` turns them into ``K`` points. Trained with a Chamfer distance, it
    is the usual baseline of single-view reconstruction.

    References:
        Fan, Su, Guibas. "A Point Set Generation Network for 3D Object Reconstruction from a
        Single Image." CVPR 2017.

    Arguments:
        encoder: ``inputs -> (B, F)``.
        features: ``F``.
        num_points: ``K``, the points regressed.

    Example:
        >>> import torch
        >>> model = PointSetRegressor(torch.nn.Linear(6, 16), 16, num_points=100)
        >>> model(torch.randn(2, 6)).shape
        torch.Size([2, 100, 3])
        >>> PointSetRegressor.resample(model(torch.randn(2, 6)), 250).shape
        torch.Size([2, 250, 3])
    """

    def __init__(self, encoder: nn.Module, features: int, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Linear(features, 4 * features),
            nn.ReLU(),
            nn.Linear(4 * features, 3 * num_points),
        )

    def forward(self, inputs: Tensor) -> Tensor:
        """The regressed points ``(B, num_points, 3)``."""
        return self.head(self.encoder(inputs)).unflatten(-1, (self.num_points, 3))

    @staticmethod
    def resample(clouds: Tensor, num_points: int) -> Tensor:
        """Clouds ``(B, K, 3)`` as ``num_points`` points each: the same random order of the
        ``K`` points for every cloud (seed 0), repeated whole as often as needed."""
        check_positive_int("num_points", num_points)
        fixed = clouds.shape[1]
        if num_points == fixed:
            return clouds
        generator = torch.Generator().manual_seed(0)
        repeats = -(-num_points // fixed)
        order = torch.cat([torch.randperm(fixed, generator=generator) for _ in range(repeats)])
        return clouds[:, order[:num_points].to(clouds.device)]
