"""Speed and error of the native auction EMD against exact EMD (POT); prints the table.

Run ``.venv/bin/python benchmarks/emd_table.py`` (``--help`` for sizes). For each cloud kind
(sphere-like: noisy unit spheres; thin structures: the built-in synthetic airplanes and lamps,
each pair two different objects of the category, unit sphere) and size, the same pairs are
solved by POT's network simplex (exact, one thread) and by the native auction (one thread,
certified relative gap ``--tol``), interleaved in one process so that the ratio survives a
noisy, shared machine. Both solvers run on the calling thread, so the process's CPU time of
each call is the work it did whatever else the machine runs; the table shows CPU time (wall
time in brackets). Errors are relative to the exact EMD of each pair.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pcflow.data.shapes import build_object, normalize_parts, sample_visible_surface
from pcflow.metrics import earth_movers_distance

__all__ = ["KINDS", "cloud", "pairs", "run"]

KINDS = ("sphere", "airplane", "lamp")


def cloud(kind: str, num: int, seed: int) -> torch.Tensor:
    """``(num, 3)`` float32 points: a noisy unit sphere or a built-in object's surface."""
    rng = np.random.default_rng(seed)
    if kind == "sphere":
        points = rng.normal(size=(num, 3))
        points = points / np.linalg.norm(points, axis=1, keepdims=True)
        points = points + 0.01 * rng.normal(size=(num, 3))
    else:
        parts = build_object(kind, rng)
        normalize_parts(parts)
        points, _ = sample_visible_surface(parts, num, rng)
    return torch.from_numpy(points).float()


def pairs(kind: str, num: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs of different clouds of one kind: ``x, y`` each ``(count, num, 3)``."""
    x = torch.stack([cloud(kind, num, 2 * index) for index in range(count)])
    y = torch.stack([cloud(kind, num, 2 * index + 1) for index in range(count)])
    return x, y


def run(sizes: list[int], count: int, tol: float) -> list[dict]:
    """Times and errors per (kind, size); exact and auction alternate pair by pair."""
    rows = []
    for num in sizes:
        for kind in KINDS:
            x, y = pairs(kind, num, count)
            exact_s, auction_s, exact_wall, auction_wall, errors = 0.0, 0.0, 0.0, 0.0, []
            for index in range(count):
                a, b = x[index : index + 1], y[index : index + 1]
                start, cpu = time.perf_counter(), time.process_time()
                exact = earth_movers_distance(a, b, "exact", solver="pot", num_workers=1)
                exact_s += time.process_time() - cpu
                exact_wall += time.perf_counter() - start
                start, cpu = time.perf_counter(), time.process_time()
                approximate = earth_movers_distance(a, b, "auction", tol=tol, num_workers=1)
                auction_s += time.process_time() - cpu
                auction_wall += time.perf_counter() - start
                errors.append(float(approximate.double() / exact.double() - 1))
            rows.append(
                {
                    "kind": kind,
                    "points": num,
                    "pairs": count,
                    "exact_s": exact_s / count,
                    "auction_s": auction_s / count,
                    "exact_wall_s": exact_wall / count,
                    "auction_wall_s": auction_wall / count,
                    "mean_error": float(np.mean(errors)),
                    "max_error": float(np.max(errors)),
                }
            )
    return rows


def print_table(rows: list[dict], tol: float) -> None:
    """The table of ``docs/benchmarks.md``."""
    print(
        f"| clouds | N | pairs | exact (POT), CPU s/pair (wall) | auction (tol {tol:g}), CPU "
        "s/pair (wall) | speed-up, CPU (wall) | mean relative error | max relative error |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['kind']} | {row['points']:,} | {row['pairs']} "
            f"| {row['exact_s']:.3f} ({row['exact_wall_s']:.3f}) "
            f"| {row['auction_s']:.4f} ({row['auction_wall_s']:.4f}) "
            f"| {row['exact_s'] / row['auction_s']:.1f}x "
            f"({row['exact_wall_s'] / row['auction_wall_s']:.1f}x) "
            f"| {100 * row['mean_error']:.3f} % | {100 * row['max_error']:.3f} % |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--pairs", type=int, default=4, help="pairs per kind and size")
    parser.add_argument("--tol", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)
    earth_movers_distance(*pairs("sphere", 64, 1), "auction")  # build or load the kernel first
    print_table(run(args.sizes, args.pairs, args.tol), args.tol)


if __name__ == "__main__":
    main()
