"""Conditional flows over point sets: base distributions, transform stacks, the DPF-Nets decoder."""

from __future__ import annotations

__all__: list[str] = []
