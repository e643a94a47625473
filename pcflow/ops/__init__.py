"""Low-level geometric operations: nearest neighbours and optimal assignment."""

from __future__ import annotations

from pcflow.ops.assignment import (
    Assignment,
    auction_assignment,
    exact_assignment,
    pot_available,
    sinkhorn_assignment,
)
from pcflow.ops.knn import KNN, knn_gather, knn_points

__all__ = [
    "KNN",
    "Assignment",
    "auction_assignment",
    "exact_assignment",
    "knn_gather",
    "knn_points",
    "pot_available",
    "sinkhorn_assignment",
]
