"""Differentiable training losses on point sets: Chamfer distance and approximate EMD."""

from __future__ import annotations

__all__: list[str] = []
