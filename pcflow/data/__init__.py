"""Datasets: the built-in synthetic dataset, ShapeNet and PASCAL3D+ loaders, transforms."""

from __future__ import annotations

__all__: list[str] = []
