"""Chamfer distance and nearest neighbours: pcflow's backends against naive ``cdist`` + ``min``.

The baseline is the naive implementation of PointFlow's evaluation code: the full ``(N, M)``
distance matrix by ``torch.cdist`` (chunked over rows where it would not fit), squared, then
``min`` along each axis. It is timed in the same run as pcflow, and the speed-ups go to
``extra_info`` (``speedup`` = naive time / pcflow time). A benchmark never asserts on time.

- ``test_batch_forward_backward``: B = 32, N = M = 2,048, forward + backward (target >= 20x).
- ``test_hundred_thousand_points``: one pair of 100,000-point clouds, both directions with
  gradient (target < 1 s and < 1 GiB extra memory). The naive baseline would take about a minute,
  so it runs on a subsample of the query rows (``NAIVE_ROWS`` of each direction, every target
  point) and is **extrapolated** linearly in the number of rows (its cost is exactly
  proportional to it); ``naive_extrapolated_seconds`` says so. Extra memory is the peak RSS
  (``VmHWM``, reset just before) of a fresh subprocess above its RSS just before the call.
- ``test_switch_point``: Chamfer forward at B = 32 for growing N = M, KD-tree vs brute-force
  tiles; ``bruteforce_over_kdtree`` > 1 where the KD-tree wins. The crossing sets
  ``pcflow.ops.knn.KDTREE_MIN_PAIRS``.

Run: ``.venv/bin/python -m pytest benchmarks/test_chamfer.py -p no:cacheprovider
--benchmark-columns=min,mean,rounds -s`` (a few minutes on 2 cores); the ratios print as they
are measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from pcflow.losses import chamfer_distance

NAIVE_ROWS = 2_000
NAIVE_CHUNK = 500


def naive_chamfer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PointFlow-style Chamfer: full squared distance matrix, min both ways, mean."""
    d = torch.cdist(x, y).square()
    return (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()


def best_time(function, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def report(benchmark, **info) -> None:
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info))


def test_batch_forward_backward(benchmark):
    torch.manual_seed(0)
    x = torch.rand(32, 2048, 3, requires_grad=True)
    y = torch.rand(32, 2048, 3, requires_grad=True)

    def naive():
        naive_chamfer(x, y).backward()

    def ours():
        chamfer_distance(x, y)[0].backward()

    def ours_bruteforce():
        chamfer_distance(x, y, backend="bruteforce")[0].backward()

    ours()  # warm up the thread pool
    naive_seconds = best_time(naive, 2)
    bruteforce_seconds = best_time(ours_bruteforce, 2)
    benchmark.pedantic(ours, rounds=5, iterations=1)
    ours_seconds = benchmark.stats.stats.min
    report(
        benchmark,
        case="B=32 N=M=2048 forward+backward, backend=auto (kdtree)",
        naive_seconds=round(naive_seconds, 4),
        ours_seconds=round(ours_seconds, 4),
        speedup=round(naive_seconds / ours_seconds, 1),
        bruteforce_seconds=round(bruteforce_seconds, 4),
        bruteforce_speedup=round(naive_seconds / bruteforce_seconds, 2),
    )


_MEMORY_SCRIPT = """
import json, time, torch
from pcflow.losses import chamfer_distance


def status(field):  # kB figures of /proc/self/status, in bytes
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024


torch.manual_seed(0)
x = torch.rand(1, 100_000, 3, requires_grad=True)
y = torch.rand(1, 100_000, 3, requires_grad=True)
chamfer_distance(x[:, :1000], y[:, :1000])[0].backward()  # imports and pools, not counted
x.grad = y.grad = None
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak (VmHWM), which a forked child inherits from its parent
before = status("VmRSS")
start = time.perf_counter()
loss, _ = chamfer_distance(x, y)
loss.backward()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "extra_bytes": max(0, status("VmHWM") - before)}))
"""


def naive_chunked_subsample(x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of the naive chunked forward + backward on ``NAIVE_ROWS`` query rows each way."""
    start = time.perf_counter()
    for query, target in ((x, y), (y, x)):
        for i in range(0, NAIVE_ROWS, NAIVE_CHUNK):
            rows = query[:, i : i + NAIVE_CHUNK]
            d = torch.cdist(rows, target).square()
            (d.min(2).values.sum() / query.shape[1]).backward()
    return time.perf_counter() - start


def test_hundred_thousand_points(benchmark):
    torch.manual_seed(0)
    x = torch.rand(1, 100_000, 3, requires_grad=True)
    y = torch.rand(1, 100_000, 3, requires_grad=True)

    def ours():
        chamfer_distance(x, y)[0].backward()

    ours()
    subsample_seconds = naive_chunked_subsample(x, y)
    naive_seconds = subsample_seconds * x.shape[1] / NAIVE_ROWS
    benchmark.pedantic(ours, rounds=5, iterations=1)
    ours_seconds = benchmark.stats.stats.min
    measured = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    memory = json.loads(measured.stdout.strip().splitlines()[-1])
    report(
        benchmark,
        case="N=M=100000 one pair, both directions, forward+backward, backend=auto (kdtree)",
        ours_seconds=round(ours_seconds, 4),
        ours_seconds_fresh_process=round(memory["seconds"], 4),
        ours_extra_memory_mib=round(memory["extra_bytes"] / 2**20, 1),
        naive_subsample_rows=NAIVE_ROWS,
        naive_subsample_seconds=round(subsample_seconds, 3),
        naive_extrapolated_seconds=round(naive_seconds, 1),
        speedup_vs_extrapolated_naive=round(naive_seconds / ours_seconds, 1),
    )


@pytest.mark.parametrize("num_points", [32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048])
def test_switch_point(benchmark, num_points):
    torch.manual_seed(0)
    x = torch.rand(32, num_points, 3)
    y = torch.rand(32, num_points, 3)

    def kdtree():
        chamfer_distance(x, y, backend="kdtree")

    def bruteforce():
        chamfer_distance(x, y, backend="bruteforce")

    kdtree()
    rounds = 15 if num_points <= 512 else 3
    bruteforce_seconds = best_time(bruteforce, rounds)
    benchmark.pedantic(kdtree, rounds=rounds, iterations=1)
    kdtree_seconds = benchmark.stats.stats.min
    report(
        benchmark,
        case=f"B=32 N=M={num_points} forward",
        pairs_per_shape=num_points * num_points,
        kdtree_seconds=round(kdtree_seconds, 5),
        bruteforce_seconds=round(bruteforce_seconds, 5),
        bruteforce_over_kdtree=round(bruteforce_seconds / kdtree_seconds, 2),
    )
