"""Low-level geometric operations: nearest neighbours and optimal assignment."""

from __future__ import annotations

from pcflow.ops.knn import KNN, knn_gather, knn_points

__all__ = [
    "KNN",
    "knn_gather",
    "knn_points",
]
