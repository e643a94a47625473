"""Reading and writing point clouds (PLY)."""

from __future__ import annotations

__all__: list[str] = []
