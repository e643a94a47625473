"""Evaluation metrics on point sets: CD, EMD, F-score, generation metrics (MMD, COV, 1-NNA, JSD)."""

from __future__ import annotations

from pcflow.metrics.chamfer import chamfer_per_shape
from pcflow.metrics.emd import earth_movers_distance
from pcflow.metrics.fscore import FScore, f_score
from pcflow.metrics.generation import (
    coverage,
    generation_metrics,
    minimum_matching_distance,
    nearest_neighbour_accuracy,
    pairwise_chamfer,
    pairwise_emd,
)
from pcflow.metrics.jsd import jensen_shannon_divergence

__all__ = [
    "FScore",
    "chamfer_per_shape",
    "coverage",
    "earth_movers_distance",
    "f_score",
    "generation_metrics",
    "jensen_shannon_divergence",
    "minimum_matching_distance",
    "nearest_neighbour_accuracy",
    "pairwise_chamfer",
    "pairwise_emd",
]
