"""Time the fused kernel's passes with two builds of its libraries, interleaved in one process.

For changes to how the libraries are built (toolchain, linker, glibc target) that must leave
their speed alone. Each folder holds ``fused_affine`` libraries named as `pcflow._native`
names them (e.g. one made by ``_native.build(..., portable=True)``, one by a plain build);
every variant this CPU runs and both folders have is timed on ``flow_table``'s three passes
(forward ``log_prob``, inverse, a training step), the fastest of ``--rounds``, and the ratio
``after / before`` is printed per pass. Times are the process's CPU time (one thread by
default), which a busy machine's other jobs inflate far less than the wall clock.

    PYTHONPATH=$PWD .venv/bin/python scripts/compare_kernel_builds.py BEFORE_DIR AFTER_DIR
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from flow_table import build_ours

from pcflow import _native
from pcflow.flows import fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-points", type=int, default=2048)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--layers", type=int, default=63)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    builds = {"before": args.before, "after": args.after}
    variants = [
        variant
        for variant in _native.cpu_variants()
        if all(
            (d / _native.library_name("fused_affine", variant)).is_file() for d in builds.values()
        )
    ]
    if not variants:
        raise SystemExit("neither folder holds a fused_affine library for a variant this CPU runs")
    torch.manual_seed(0)
    flow = build_ours(args.context, args.layers, args.hidden)
    points = torch.rand(args.batch, args.num_points, 3) * 2 - 1
    latent = torch.randn(args.batch, args.context)
    noise = torch.randn(args.batch, args.num_points, 3)

    def train() -> None:
        z = latent.clone().requires_grad_(True)
        (-flow.log_prob(points, z).sum()).backward()

    passes = {
        "forward": lambda: flow.log_prob(points, latent),
        "inverse": lambda: flow._run(noise, latent, True, False),
        "train": train,
    }
    libraries = {
        (variant, label): folder / _native.library_name("fused_affine", variant)
        for variant in variants
        for label, folder in builds.items()
    }
    loaded = {key: (ctypes.CDLL(str(path)), path) for key, path in libraries.items()}
    times: dict[tuple[str, str, str], float] = {}
    # Before and after alternate call by call, so that a busy machine slows both alike.
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for variant in variants:
            for op, fn in passes.items():
                for label in builds:
                    _native._loaded[("fused_affine", variant)] = loaded[(variant, label)]
                    with fused.use_variant(variant), torch.set_grad_enabled(op == "train"):
                        start = time.process_time()
                        fn()
                        elapsed = time.process_time() - start
                    key = (variant, op, label)
                    if round_:
                        times[key] = min(times.get(key, float("inf")), elapsed)
    print(f"B={args.batch} N={args.num_points} L={args.layers} H={args.hidden}, "
          f"{args.threads} thread(s), CPU time, fastest of {args.rounds}")  # fmt: skip
    for variant in variants:
        for op in passes:
            before, after = times[(variant, op, "before")], times[(variant, op, "after")]
            print(f"{variant:8s} {op:8s} before {before * 1e3:8.1f} ms  after {after * 1e3:8.1f} ms"
                  f"  after/before {after / before:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
