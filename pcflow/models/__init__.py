"""Latent-variable models built from the parts: encoder, Gaussian head, point flow and prior."""

from __future__ import annotations

from pcflow.models.latent_flow import ELBOTerms, LatentPointFlow, evaluating
from pcflow.models.priors import (
    ConditionalGaussianPrior,
    FlowPrior,
    LatentPrior,
    StandardNormalPrior,
)

__all__ = [
    "ConditionalGaussianPrior",
    "ELBOTerms",
    "FlowPrior",
    "LatentPointFlow",
    "LatentPrior",
    "StandardNormalPrior",
    "evaluating",
]
