"""Evaluation metrics on point sets: CD, EMD, F-score, generation metrics (MMD, COV, 1-NNA, JSD),
and reconstruction tables per category."""

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
from pcflow.metrics.protocol import (
    NORMALIZATIONS,
    PROTOCOL_COLUMNS,
    PointFlowStatistics,
    ProtocolTable,
    box_normalize,
    category_clouds,
    generation_protocol,
    normalize_clouds,
    oracle_clouds,
    protocol_scores,
)
from pcflow.metrics.reconstruction import (
    MeanCloudBaseline,
    Predictor,
    check_prediction,
    evaluate_reconstruction,
)
from pcflow.metrics.tables import METRICS, EvaluationResult, comparison_table

__all__ = [
    "METRICS",
    "NORMALIZATIONS",
    "PROTOCOL_COLUMNS",
    "EvaluationResult",
    "FScore",
    "MeanCloudBaseline",
    "PointFlowStatistics",
    "Predictor",
    "ProtocolTable",
    "box_normalize",
    "category_clouds",
    "chamfer_per_shape",
    "check_prediction",
    "comparison_table",
    "coverage",
    "earth_movers_distance",
    "evaluate_reconstruction",
    "f_score",
    "generation_metrics",
    "generation_protocol",
    "jensen_shannon_divergence",
    "minimum_matching_distance",
    "nearest_neighbour_accuracy",
    "normalize_clouds",
    "oracle_clouds",
    "pairwise_chamfer",
    "pairwise_emd",
    "protocol_scores",
]
