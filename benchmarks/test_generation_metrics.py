"""Benchmark: generation metrics (MMD/COV/1-NNA with CD and EMD, JSD), 100 vs 100 clouds.

Run: ``.venv/bin/python -m pytest benchmarks/test_generation_metrics.py --benchmark-only -q -s``.
Times the three matrices that ``generation_metrics`` needs (``S x R``, ``S x S`` upper
triangle, ``R x R`` upper triangle) for ``S = R = 100`` clouds of 2,048 points with Chamfer
(KD-tree fast path), against the naive ``cdist`` + ``min`` Chamfer of PointFlow's evaluation code
measured in the same run on a subset and scaled by the pair count. EMD matrices cost about a
pair's EMD times the 19,900 pairs: they are timed on ``PCFLOW_BENCH_EMD_CLOUDS`` clouds per set
(default 3) and extrapolated in ``extra_info``. ``test_generation_metrics_all`` times the
whole ``generation_metrics`` call, every metric, with the native auction EMD (several minutes;
``PCFLOW_BENCH_CLOUDS`` sets the clouds per set).
"""

from __future__ import annotations

import os
import time

import torch

from pcflow.metrics import generation_metrics, pairwise_chamfer, pairwise_emd

NUM_CLOUDS = int(os.environ.get("PCFLOW_BENCH_CLOUDS", "100"))
EMD_CLOUDS = int(os.environ.get("PCFLOW_BENCH_EMD_CLOUDS", "3"))
NUM_POINTS = 2048


def _clouds(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    clouds = torch.randn(count, NUM_POINTS, 3, generator=generator)
    return clouds / clouds.norm(dim=2, keepdim=True) * (1 + 0.1 * torch.rand(count, 1, 1))


def _pairs(count: int) -> int:
    return count * count + count * (count - 1)


def _all_matrices(function, generated: torch.Tensor, reference: torch.Tensor) -> None:
    function(generated, reference)
    function(generated, None)
    function(reference, None)


def _naive_chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    squared = torch.cdist(a, b).square()
    return squared.min(2).values.mean(1) + squared.min(1).values.mean(1)


def test_pairwise_chamfer_100_vs_100(benchmark) -> None:
    generated, reference = _clouds(NUM_CLOUDS, 0), _clouds(NUM_CLOUDS, 1)
    subset = 64
    start = time.perf_counter()
    for chunk in range(0, subset, 8):
        _naive_chamfer(generated[chunk : chunk + 8], reference[chunk : chunk + 8])
    naive_per_pair = (time.perf_counter() - start) / subset
    benchmark.pedantic(
        _all_matrices,
        args=(lambda a, b: pairwise_chamfer(a, b, batch_size=256), generated, reference),
        rounds=1,
        iterations=1,
    )
    seconds = benchmark.stats.stats.mean
    naive = naive_per_pair * _pairs(NUM_CLOUDS)
    benchmark.extra_info.update(
        {
            "clouds_per_set": NUM_CLOUDS,
            "pairs": _pairs(NUM_CLOUDS),
            "seconds": seconds,
            "naive_cdist_seconds_extrapolated": naive,
            "speedup_vs_naive": naive / seconds,
        }
    )
    print(
        f"\nCD matrices, {NUM_CLOUDS} vs {NUM_CLOUDS}: {seconds:.1f} s; naive cdist+min "
        f"(extrapolated from {subset} pairs) {naive:.1f} s; {naive / seconds:.1f}x"
    )


def _emd_benchmark(benchmark, method: str, torch_threads: int | None = None, **options) -> None:
    generated, reference = _clouds(EMD_CLOUDS, 0), _clouds(EMD_CLOUDS, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or threads)
    try:
        _time_emd(benchmark, method, generated, reference, options)
    finally:
        torch.set_num_threads(threads)


def _time_emd(benchmark, method: str, generated, reference, options: dict) -> None:
    benchmark.pedantic(
        _all_matrices,
        args=(
            lambda a, b: pairwise_emd(a, b, method=method, batch_size=64, **options),
            generated,
            reference,
        ),
        rounds=1,
        iterations=1,
    )
    seconds = benchmark.stats.stats.mean
    per_pair = seconds / _pairs(EMD_CLOUDS)
    extrapolated = per_pair * _pairs(100)
    benchmark.extra_info.update(
        {
            "clouds_per_set": EMD_CLOUDS,
            "seconds": seconds,
            "seconds_per_pair": per_pair,
            "seconds_100_vs_100_extrapolated": extrapolated,
        }
    )
    print(
        f"\nEMD ({method}) matrices, {EMD_CLOUDS} vs {EMD_CLOUDS}: {seconds:.1f} s, "
        f"{per_pair:.3f} s/pair; 100 vs 100 extrapolated: {extrapolated / 60:.1f} min"
    )


def test_pairwise_emd_exact(benchmark) -> None:
    _emd_benchmark(benchmark, "exact")


def test_pairwise_emd_auction(benchmark) -> None:
    _emd_benchmark(benchmark, "auction", tol=0.01)


def test_generation_metrics_all(benchmark) -> None:
    # Clouds inside the ball of radius 0.5, as JSD's grid needs (their radius is at most 1.1).
    generated, reference = _clouds(NUM_CLOUDS, 0) / 2.2, _clouds(NUM_CLOUDS, 1) / 2.2
    # On a shared machine the wall time measures the other jobs too; the process's CPU time
    # over the cores it used is what an unshared machine would take.
    cpu_start = time.process_time()
    scores = benchmark.pedantic(
        generation_metrics,
        args=(generated, reference),
        kwargs=dict(metrics=("cd", "emd", "jsd"), emd_method="auction", progress=True),
        rounds=1,
        iterations=1,
    )
    seconds = benchmark.stats.stats.mean
    cpu_seconds = time.process_time() - cpu_start
    benchmark.extra_info.update(
        {"clouds_per_set": NUM_CLOUDS, "seconds": seconds, "cpu_seconds": cpu_seconds, **scores}
    )
    print(
        f"\ngeneration_metrics, {NUM_CLOUDS} vs {NUM_CLOUDS}, every metric: {seconds:.0f} s wall, "
        f"{cpu_seconds:.0f} s CPU time ({cpu_seconds / os.cpu_count():.0f} s over "
        f"{os.cpu_count()} cores)"
    )
    print(scores)
