"""Per-coordinate activation normalisation of point sets, initialised from the first batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pcflow.transforms.base import PointTransform

__all__ = ["PointActNorm"]


class PointActNorm(PointTransform):
    """A per-coordinate affine map ``y = x * exp(log_scale) + shift``, data-initialised.

    On its first forward call in training mode the layer sets ``log_scale`` and ``shift`` so
    that the outputs of that batch have zero mean and unit variance per coordinate, pooled over
    shapes and points. Unlike BatchNorm it keeps no running statistics afterwards, so each
    point's map does not depend on the other points: the density stays exact.

    Arguments:
        features: Number of coordinates ``D``.
        eps: Added to the standard deviation at initialisation.

    References:
        Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions." NeurIPS 2018.

    Example:
        >>> import torch
        >>> layer = PointActNorm(3)
        >>> outputs, logabsdet = layer(torch.randn(4, 100, 3) * 5 + 2)
        >>> bool(outputs.mean((0, 1)).abs().max() < 1e-4)
        True
    """

    def __init__(self, features: int = 3, eps: float = 1e-6) -> None:
        super().__init__(features, None)
        self.eps = float(eps)
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, inputs: Tensor) -> None:
        flat = inputs.reshape(-1, self.features)
        std = flat.std(0, unbiased=False) if flat.shape[0] > 1 else torch.ones_like(flat[0])
        mean = flat.mean(0)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.shift.copy_(-mean * torch.exp(self.log_scale))
        self.initialized.fill_(True)

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(inputs)
        outputs = torch.addcmul(self.shift, inputs, torch.exp(self.log_scale))
        logabsdet = self.log_scale.sum().expand(inputs.shape[:2])
        return outputs, logabsdet

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        outputs = (inputs - self.shift) * torch.exp(-self.log_scale)
        logabsdet = (-self.log_scale.sum()).expand(inputs.shape[:2])
        return outputs, logabsdet
