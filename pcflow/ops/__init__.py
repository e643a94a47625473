"""Low-level geometric operations: nearest neighbours, optimal assignment, farthest point
sampling."""

from __future__ import annotations

from pcflow.ops.assignment import (
    EMD_DEFAULT_METHOD,
    EMD_DEFAULT_TOL,
    EMD_METHODS,
    Assignment,
    assign,
    auction_assignment,
    exact_assignment,
    matched_distances,
    native_auction_available,
    pot_available,
    resolve_emd_method,
    scipy_available,
    sinkhorn_assignment,
)
from pcflow.ops.knn import KNN, knn_gather, knn_points
from pcflow.ops.sampling import FarthestPoints, sample_farthest_points

__all__ = [
    "EMD_DEFAULT_METHOD",
    "EMD_DEFAULT_TOL",
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
    "resolve_emd_method",
    "sample_farthest_points",
    "scipy_available",
    "sinkhorn_assignment",
]
