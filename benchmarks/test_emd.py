"""Benchmark: exact EMD (POT) against the approximate EMDs at N = 2,048, with their errors.

Run: ``.venv/bin/python -m pytest benchmarks/test_emd.py --benchmark-only -q -s``. Each
benchmark solves the same pairs (``benchmarks/emd_table.py``: noisy unit spheres, and
different built-in airplanes and lamps, thin structures) and stores in ``extra_info`` the time
per pair, its ratio to POT's exact solver on one thread measured in the same run, and the
relative error of the approximate EMD against exact. ``PCFLOW_BENCH_EMD_POINTS`` and
``PCFLOW_BENCH_EMD_PAIRS`` (pairs per kind) change the size. The table of
``docs/benchmarks.md`` comes from ``benchmarks/emd_table.py``, which interleaves the solvers.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from emd_table import KINDS, pairs

from pcflow.metrics import earth_movers_distance
from pcflow.ops import pot_available

NUM_POINTS = int(os.environ.get("PCFLOW_BENCH_EMD_POINTS", "2048"))
PAIRS_PER_KIND = int(os.environ.get("PCFLOW_BENCH_EMD_PAIRS", "2"))
_BASELINE: dict[str, float] = {}


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    parts = [pairs(kind, NUM_POINTS, PAIRS_PER_KIND) for kind in KINDS]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


X, Y = _pairs()
NUM_PAIRS = X.shape[0]


def _exact_values() -> torch.Tensor:
    if "values" not in _BASELINE:
        start = time.perf_counter()
        solver = "pot" if pot_available() else "scipy"
        values = earth_movers_distance(
            X.double(), Y.double(), "exact", solver=solver, num_workers=1
        )
        _BASELINE["exact_s"] = (time.perf_counter() - start) / NUM_PAIRS
        _BASELINE["values"] = values
    return _BASELINE["values"]


SETTINGS = [
    ("exact-pot-1thread", dict(method="exact", solver="pot", num_workers=1)),
    ("exact-pot-2threads", dict(method="exact", solver="pot", num_workers=2)),
    ("auction-native-tol0.01-1thread", dict(method="auction", tol=0.01, num_workers=1)),
    ("auction-native-tol0.01-2threads", dict(method="auction", tol=0.01, num_workers=2)),
    ("auction-native-tol0.05-1thread", dict(method="auction", tol=0.05, num_workers=1)),
    ("auction-torch-tol0.02-1torchthread", dict(backend="torch", tol=0.02, torch_threads=1)),
    ("sinkhorn-tol0.02-1torchthread", dict(method="sinkhorn", tol=0.02, torch_threads=1)),
]


def _torch_auction(x: torch.Tensor, y: torch.Tensor, tol: float) -> torch.Tensor:
    from pcflow.ops import auction_assignment, matched_distances

    permutation = auction_assignment(x, y, tol=tol, backend="torch").permutation
    return matched_distances(x.double(), y.double(), permutation).mean(1)


@pytest.mark.parametrize(("name", "options"), SETTINGS, ids=[name for name, _ in SETTINGS])
def test_emd(benchmark, name: str, options: dict) -> None:
    if options.get("solver") == "pot" and not pot_available():
        pytest.skip("POT is not installed")
    exact = _exact_values()
    options = dict(options)
    threads = torch.get_num_threads()
    torch.set_num_threads(options.pop("torch_threads", threads))
    if options.pop("backend", None) == "torch":
        function, args = _torch_auction, (X, Y, options.pop("tol"))
    else:
        function, args = earth_movers_distance, (X, Y)
    try:
        values = benchmark.pedantic(function, args=args, kwargs=options, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(threads)
    per_pair = benchmark.stats.stats.mean / NUM_PAIRS
    relative = values.double() / exact - 1
    baseline = _BASELINE["exact_s"]
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
        f"relative error max {float(relative.abs().max()):.5f} "
        f"mean {float(relative.abs().mean()):.5f}"
    )
