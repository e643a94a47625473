"""Conditional flows over point sets: base distributions, transform stacks, the DPF-Nets decoder."""

from __future__ import annotations

from pcflow.flows.base import (
    ConditionalPointFlow,
    FreeVariancePointNormal,
    StandardPointNormal,
    num_draws,
    select_draws,
    sobol_normal,
)
from pcflow.flows.dpf import DPF_MASKS, dpf_flow
from pcflow.flows.reversible import memory_efficient_forward, memory_efficient_inverse
from pcflow.flows.sampling import SamplingOptions

__all__ = [
    "DPF_MASKS",
    "ConditionalPointFlow",
    "FreeVariancePointNormal",
    "SamplingOptions",
    "StandardPointNormal",
    "dpf_flow",
    "memory_efficient_forward",
    "memory_efficient_inverse",
    "num_draws",
    "select_draws",
    "sobol_normal",
]
