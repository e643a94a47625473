"""Evaluation metrics on point sets: CD, EMD, F-score and generation metrics (MMD, COV, 1-NNA)."""

from __future__ import annotations

__all__: list[str] = []
