"""pytest-benchmark suite: pcflow's DPF flow against stock nflows, forward, inverse, training.

Each benchmark times pcflow's pass with pytest-benchmark and the stock nflows composition in the
same process (interleaved, by `flow_table.measure`), and stores the ratios, points per second
and the fraction of the fp32 ``torch.mm`` rate in ``benchmark.extra_info``. Sizes default to the
paper's (63 couplings, width 64, latent 512, B=16 x N=2048, float32); set
``PCFLOW_BENCH_LAYERS`` to fewer layers for a quicker run (ratios are per layer and carry over).
"""

from __future__ import annotations

import os

import pytest
import torch
from flow_table import build_ours, measure

LAYERS = int(os.environ.get("PCFLOW_BENCH_LAYERS", "63"))
BATCH, POINTS, CONTEXT, HIDDEN = 16, 2048, 512, 64


@pytest.fixture(scope="module")
def comparison() -> dict[str, float]:
    return measure(BATCH, POINTS, CONTEXT, LAYERS, HIDDEN, rounds=2)


@pytest.mark.parametrize("op", ["forward", "inverse", "train"])
def test_flow_throughput(benchmark, comparison, op):
    torch.manual_seed(0)
    flow = build_ours(CONTEXT, LAYERS, HIDDEN)
    points = torch.rand(BATCH, POINTS, 3) * 2 - 1
    latent = torch.randn(BATCH, CONTEXT)

    def forward():
        with torch.no_grad():
            return flow.log_prob(points, latent)

    def inverse():
        with torch.no_grad():
            return flow.sample(POINTS, latent)

    def train():
        z = latent.clone().requires_grad_(True)
        (-flow.log_prob(points, z).sum()).backward()

    fn = {"forward": forward, "inverse": inverse, "train": train}[op]
    benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=1)
    for key in (
        f"ratio_{op}",
        f"ours_{op}_points_per_s",
        f"nflows_{op}_points_per_s",
        f"ours_{op}_gflops",
        f"ours_{op}_fraction_of_mm",
        "mm_gflops",
    ):
        benchmark.extra_info[key] = comparison[key]
    benchmark.extra_info["points"] = BATCH * POINTS
    benchmark.extra_info["layers"] = LAYERS
