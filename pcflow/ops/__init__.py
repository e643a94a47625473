"""Low-level geometric operations: nearest neighbours and optimal assignment."""

from __future__ import annotations

__all__: list[str] = []
