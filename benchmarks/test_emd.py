"""Benchmark: exact EMD (POT vs scipy) and the approximate EMDs at N = 2,048, with their errors.

Run: ``.venv/bin/python -m pytest benchmarks/test_emd.py --benchmark-only -q -s``. Each
benchmark solves the same pairs of noisy surface samples (torus, sphere, box; same-shape and
different-shape pairs) and stores in ``extra_info`` the time per pair, its ratio to POT's exact
solver measured in the same run, and the relative error of the approximate EMD against exact.
``PCFLOW_BENCH_EMD_POINTS`` and ``PCFLOW_BENCH_EMD_PAIRS`` change the size.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

from pcflow.metrics import earth_movers_distance
from pcflow.ops import pot_available

NUM_POINTS = int(os.environ.get("PCFLOW_BENCH_EMD_POINTS", "2048"))
NUM_PAIRS = int(os.environ.get("PCFLOW_BENCH_EMD_PAIRS", "4"))
_BASELINE: dict[str, float] = {}


def _surface(kind: int, num: int, generator: torch.Generator) -> torch.Tensor:
    if kind == 0:
        u, v = torch.rand(2, num, generator=generator) * 2 * math.pi
        points = torch.stack(
            [(0.7 + 0.25 * v.cos()) * u.cos(), (0.7 + 0.25 * v.cos()) * u.sin(), 0.25 * v.sin()],
            -1,
        )
    elif kind == 1:
        points = torch.randn(num, 3, generator=generator)
        points = points / points.norm(dim=1, keepdim=True)
    else:
        points = torch.rand(num, 3, generator=generator) * 2 - 1
        face = torch.randint(0, 3, (num,), generator=generator)
        points[torch.arange(num), face] = torch.sign(torch.rand(num, generator=generator) - 0.5)
        points = points * torch.tensor([0.8, 0.5, 0.3])
    return points + 0.01 * torch.randn(points.shape, generator=generator)


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    kinds = [(0, 0), (1, 2), (2, 2), (0, 1), (1, 1), (2, 0)]
    kinds = (kinds * math.ceil(NUM_PAIRS / len(kinds)))[:NUM_PAIRS]
    x = torch.stack([_surface(a, NUM_POINTS, generator) for a, _ in kinds])
    y = torch.stack([_surface(b, NUM_POINTS, generator) for _, b in kinds])
    return x, y


X, Y = _pairs()


def _exact_values() -> torch.Tensor:
    if "values" not in _BASELINE:
        start = time.perf_counter()
        values = earth_movers_distance(X.double(), Y.double(), solver="scipy", num_workers=1)
        _BASELINE["scipy_s"] = (time.perf_counter() - start) / NUM_PAIRS
        _BASELINE["values"] = values
    return _BASELINE["values"]


SETTINGS = [
    ("exact-pot-1thread", dict(method="exact", solver="pot", num_workers=1)),
    ("exact-scipy-1thread", dict(method="exact", solver="scipy", num_workers=1)),
    ("exact-pot-2threads", dict(method="exact", solver="pot", num_workers=2)),
    ("auction-tol0.05", dict(method="auction", tol=0.05)),
    ("auction-tol0.02", dict(method="auction", tol=0.02)),
    ("sinkhorn-tol0.05", dict(method="sinkhorn", tol=0.05)),
    ("sinkhorn-tol0.02", dict(method="sinkhorn", tol=0.02)),
    ("auction-tol0.02-1torchthread", dict(method="auction", tol=0.02, torch_threads=1)),
    ("sinkhorn-tol0.02-1torchthread", dict(method="sinkhorn", tol=0.02, torch_threads=1)),
]


@pytest.mark.parametrize(("name", "options"), SETTINGS, ids=[name for name, _ in SETTINGS])
def test_emd(benchmark, name: str, options: dict) -> None:
    if options.get("solver") == "pot" and not pot_available():
        pytest.skip("POT is not installed")
    exact = _exact_values()
    if "pot_s" not in _BASELINE and pot_available():
        start = time.perf_counter()
        earth_movers_distance(X, Y, solver="pot", num_workers=1)
        _BASELINE["pot_s"] = (time.perf_counter() - start) / NUM_PAIRS
    options = dict(options)
    threads = torch.get_num_threads()
    torch.set_num_threads(options.pop("torch_threads", threads))
    try:
        values = benchmark.pedantic(
            earth_movers_distance, args=(X, Y), kwargs=options, rounds=1, iterations=1
        )
    finally:
        torch.set_num_threads(threads)
    per_pair = benchmark.stats.stats.mean / NUM_PAIRS
    relative = values.double() / exact - 1
    baseline = _BASELINE.get("pot_s", _BASELINE["scipy_s"])
    benchmark.extra_info.update(
        {
            "points": NUM_POINTS,
            "pairs": NUM_PAIRS,
            "seconds_per_pair": per_pair,
            "speedup_vs_exact_pot_1thread": baseline / per_pair,
            "max_relative_error": float(relative.abs().max()),
            "mean_relative_error": float(relative.abs().mean()),
        }
    )
    print(
        f"\n{name}: {per_pair:.3f} s/pair, {baseline / per_pair:.2f}x exact POT (1 thread), "
        f"relative error max {float(relative.abs().max()):.4f} "
        f"mean {float(relative.abs().mean()):.4f}"
    )
