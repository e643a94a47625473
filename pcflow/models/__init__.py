"""Models built from the parts: the latent point flow (encoder, Gaussian head, point flow, prior)
and the PSGN-style point-set regressor."""

from __future__ import annotations

from pcflow.models.latent_flow import ELBOTerms, LatentPointFlow, evaluating
from pcflow.models.priors import (
    ConditionalGaussianPrior,
    FlowPrior,
    LatentPrior,
    StandardNormalPrior,
)
from pcflow.models.regressor import PointSetRegressor

__all__ = [
    "ConditionalGaussianPrior",
    "ELBOTerms",
    "FlowPrior",
    "LatentPointFlow",
    "LatentPrior",
    "PointSetRegressor",
    "StandardNormalPrior",
    "evaluating",
]
