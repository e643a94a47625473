"""Low-level geometric operations: nearest neighbours, optimal assignment, farthest point
sampling."""

from __future__ import annotations

from pcflow.ops.assignment import (
    EMD_METHODS,
    Assignment,
    assign,
    auction_assignment,
    exact_assignment,
    matched_distances,
    native_auction_available,
    pot_available,
    sinkhorn_assignment,
)
from pcflow.ops.knn import KNN, knn_gather, knn_points
from pcflow.ops.sampling import FarthestPoints, sample_farthest_points

__all__ = [
    "EMD_METHODS",
    "KNN",
    "Assignment",
    "FarthestPoints",
    "assign",
    "auction_assignment",
    "exact_assignment",
    "knn_gather",
    "knn_points",
    "matched_distances",
    "native_auction_available",
    "pot_available",
    "sample_farthest_points",
    "sinkhorn_assignment",
]
