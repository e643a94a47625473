"""Encoders: point clouds and images to shape latents, and latent distributions."""

from __future__ import annotations

__all__: list[str] = []
