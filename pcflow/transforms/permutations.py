"""Permutations of the coordinates of every point of a set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pcflow.transforms.base import PointTransform

__all__ = ["PointPermutation"]


class PointPermutation(PointTransform):
    """Permute the ``D`` coordinates of every point: ``outputs[..., i] = inputs[..., perm[i]]``.

    Volume-preserving, so the log-determinant is zero. Any per-shape context is ignored.

    Arguments:
        permutation: A permutation of ``range(D)``.

    Example:
        >>> import torch
        >>> layer = PointPermutation([2, 0, 1])
        >>> layer(torch.tensor([[[1.0, 2.0, 3.0]]]))[0]
        tensor([[[3., 1., 2.]]])
    """

    def __init__(self, permutation: Sequence[int] | Tensor) -> None:
        perm = torch.as_tensor(permutation, dtype=torch.long).reshape(-1)
        if perm.numel() == 0 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"permutation must be a permutation of range(D), got {perm.tolist()}")
        super().__init__(perm.numel(), None)
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def forward_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        outputs = inputs.index_select(2, self.permutation)
        return outputs, inputs.new_zeros(inputs.shape[:2])

    def inverse_points(self, inputs: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        outputs = inputs.index_select(2, self.inverse_permutation)
        return outputs, inputs.new_zeros(inputs.shape[:2])
