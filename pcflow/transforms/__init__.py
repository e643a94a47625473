"""nflows-compatible transforms of point sets ``(B, N, D)`` with a per-shape context ``(B, C)``."""

from __future__ import annotations

from pcflow.transforms.base import PointTransform
from pcflow.transforms.coupling import PointAffineCoupling, PointCoupling, PointSplineCoupling
from pcflow.transforms.normalization import PointActNorm
from pcflow.transforms.permutations import PointPermutation

__all__ = [
    "PointActNorm",
    "PointAffineCoupling",
    "PointCoupling",
    "PointPermutation",
    "PointSplineCoupling",
    "PointTransform",
]
