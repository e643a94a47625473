"""Differentiable training losses on point sets: Chamfer distance and approximate EMD."""

from __future__ import annotations

from pcflow.losses.chamfer import chamfer_distance
from pcflow.losses.emd import emd_loss

__all__ = [
    "chamfer_distance",
    "emd_loss",
]
