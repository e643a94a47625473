"""nflows-compatible transforms of point sets ``(B, N, D)`` with a per-shape context ``(B, C)``."""

from __future__ import annotations

__all__: list[str] = []
