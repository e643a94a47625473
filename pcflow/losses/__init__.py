"""Differentiable training losses on point sets: Chamfer distance and approximate EMD."""

from __future__ import annotations

from pcflow.losses.chamfer import chamfer_distance

__all__ = [
    "chamfer_distance",
]
