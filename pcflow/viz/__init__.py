"""Pictures of point clouds."""

from __future__ import annotations

__all__: list[str] = []
