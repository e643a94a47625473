"""Utilities: atomic checkpoints and small helpers."""

from __future__ import annotations

__all__: list[str] = []
