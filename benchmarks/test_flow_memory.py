"""Peak memory of a DPF-Nets training step at the paper's batch: plain, memory-efficient, fused.

Every configuration runs in a fresh subprocess (``benchmarks/peak_memory.py --one``), because
peak RSS is a high-water mark of the whole process. The figures go to ``extra_info``:
``plain_peak_rss_gib`` and ``efficient_peak_rss_gib`` (the PyTorch path storing activations, and
recomputing them), ``fused_peak_rss_gib`` (the fused kernel, which recomputes), and each step's
time over the plain step's, measured in the same run. The timed
quantity of pytest-benchmark is the pair of subprocesses; it is not the figure of interest.

Run: ``.venv/bin/python -m pytest benchmarks/test_flow_memory.py -s`` (about 5 to 20 minutes on
2 shared cores); ``.venv/bin/python benchmarks/peak_memory.py`` prints the same as a table.
The paper's batch: 64 shapes x 2,500 points, latent 512, hidden width 64, float32.
"""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from peak_memory import CONFIGURATIONS, run_in_subprocess

PAPER = {"batch_size": 64, "num_points": 2500, "context_features": 512, "hidden_features": 64}


@pytest.mark.parametrize("num_layers", [21, 63])
def test_training_step_peak_memory(benchmark, num_layers):
    results = {}

    def every():
        for name, flags in CONFIGURATIONS.items():
            results[name] = run_in_subprocess(num_layers, **flags, steps=2, **PAPER)

    benchmark.pedantic(every, rounds=1, iterations=1)
    plain, efficient, fused = results["plain"], results["efficient"], results["fused"]
    benchmark.extra_info.update(
        {
            "num_layers": num_layers,
            **PAPER,
            "plain_peak_rss_gib": round(plain["peak_rss_gib"], 3),
            "efficient_peak_rss_gib": round(efficient["peak_rss_gib"], 3),
            "peak_ratio_plain_over_efficient": round(
                plain["peak_rss_gib"] / efficient["peak_rss_gib"], 2
            ),
            "rss_before_step_gib": round(efficient["rss_before_step_gib"], 3),
            "plain_step_seconds": round(plain["step_seconds"], 2),
            "efficient_step_seconds": round(efficient["step_seconds"], 2),
            "time_ratio": round(efficient["step_seconds"] / plain["step_seconds"], 2),
            "fused_peak_rss_gib": round(fused["peak_rss_gib"], 3),
            "fused_step_seconds": round(fused["step_seconds"], 2),
            "fused_time_ratio": round(fused["step_seconds"] / plain["step_seconds"], 2),
        }
    )
    print(f"\n{num_layers} layers: {benchmark.extra_info}")


def test_float32_gradient_drift(benchmark):
    """Gradient error of the float32 memory-efficient path over 63 layers, vs float64 autograd.

    Records the relative error (largest over inputs, latent and parameters) of plain float32
    autograd and of the float32 memory-efficient path, both against float64 plain autograd,
    and the error of the memory-efficient path against plain float32 (the drift of recomputation).
    """
    from nflows.transforms import CompositeTransform

    from pcflow.flows import dpf_flow
    from pcflow.flows.fused import run_fused
    from pcflow.flows.reversible import memory_efficient_forward

    torch.manual_seed(0)
    layers = dpf_flow(context_features=512, num_layers=63, hidden_features=64).layers
    with torch.no_grad():  # away from the near-identity initialisation, as after training
        for param in (p for layer in layers for p in layer.parameters()):
            param.add_(0.05 * torch.randn_like(param))
    points = 0.5 * torch.randn(4, 256, 3, dtype=torch.float64)
    latent = torch.randn(4, 512, dtype=torch.float64)

    def gradients(dtype, efficient, fused=False):
        stack = [copy.deepcopy(layer).to(dtype) for layer in layers]
        x = points.to(dtype).clone().requires_grad_(True)
        z = latent.to(dtype).clone().requires_grad_(True)
        if fused:
            outputs, logabsdet = run_fused(stack, x, z, False)
        elif efficient:
            outputs, logabsdet = memory_efficient_forward(stack, x, z)
        else:
            outputs, logabsdet = CompositeTransform(stack)(x, z)
        (0.5 * outputs.square().sum() - logabsdet.sum()).backward()
        grads = [x.grad, z.grad] + [p.grad for layer in stack for p in layer.parameters()]
        return [g.double() for g in grads]

    def worst(actual, expected):
        return max(float((a - e).norm() / e.norm()) for a, e in zip(actual, expected))

    reference = gradients(torch.float64, False)
    plain32 = gradients(torch.float32, False)
    efficient32 = benchmark.pedantic(gradients, (torch.float32, True), rounds=1, iterations=1)
    fused32 = gradients(torch.float32, False, fused=True)
    benchmark.extra_info.update(
        {
            "plain_float32_vs_float64": f"{worst(plain32, reference):.2e}",
            "efficient_float32_vs_float64": f"{worst(efficient32, reference):.2e}",
            "efficient_float32_vs_plain_float32": f"{worst(efficient32, plain32):.2e}",
            "fused_float32_vs_float64": f"{worst(fused32, reference):.2e}",
        }
    )
    print(f"\nfloat32 drift over 63 layers: {benchmark.extra_info}")
