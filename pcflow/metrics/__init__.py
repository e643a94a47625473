"""Evaluation metrics on point sets: CD, EMD, F-score and generation metrics (MMD, COV, 1-NNA)."""

from __future__ import annotations

from pcflow.metrics.chamfer import chamfer_per_shape
from pcflow.metrics.fscore import FScore, f_score

__all__ = [
    "FScore",
    "chamfer_per_shape",
    "f_score",
]
