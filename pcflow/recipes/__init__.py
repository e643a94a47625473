"""Recipes: published methods composed from pcflow's parts."""

from __future__ import annotations

__all__: list[str] = []
