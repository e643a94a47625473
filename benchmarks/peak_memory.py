"""Peak memory (RSS) and time of a DPF-Nets training step, one configuration per process.

Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is a high-water mark of the whole
process, so every configuration must run in a fresh interpreter: ``--one`` measures the current
process and prints one JSON line; without ``--one`` the script runs each configuration of the
table in its own subprocess and prints a Markdown table.

The training step is the one the paper's generator takes for its point decoder: the negative
log-likelihood of the points (summed, as in the paper) under ``dpf_flow`` given a shape latent,
then backward to every parameter and to the latent.

Usage::

    .venv/bin/python benchmarks/peak_memory.py                 # the paper's batch, 21 and 63 layers
    .venv/bin/python benchmarks/peak_memory.py --one --num-layers 63 --memory-efficient --no-fused

Three configurations per depth: the PyTorch path storing activations (plain autograd), the
PyTorch path recomputing them (``memory_efficient=True``), and the fused kernel (the default on
float32 CPU tensors; its backward pass always recomputes, whatever ``memory_efficient`` says).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

__all__ = ["measure", "run_in_subprocess"]

GIB = 2**30


def _rss_bytes(maxrss: int) -> int:
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux reports KiB


def _current_rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(
    num_layers: int,
    memory_efficient: bool,
    fused: bool = True,
    batch_size: int = 64,
    num_points: int = 2500,
    context_features: int = 512,
    hidden_features: int = 64,
    steps: int = 2,
    threads: int | None = None,
) -> dict[str, float | int | bool]:
    """Build the flow, take ``steps`` training steps, return peak RSS and the fastest step time.

    The first step initialises the flow's ActNorm layers (as training does); every step counts
    towards the peak, the fastest one gives the time.
    """
    import torch

    from pcflow.flows import dpf_flow

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    flow = dpf_flow(
        context_features=context_features,
        num_layers=num_layers,
        hidden_features=hidden_features,
        memory_efficient=memory_efficient,
    )
    flow.fused = fused
    points = 0.5 * torch.randn(batch_size, num_points, 3)
    latent = torch.randn(batch_size, context_features, requires_grad=True)
    before = _current_rss()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        flow.zero_grad(set_to_none=True)
        latent.grad = None
        loss = -flow.log_prob(points, latent).sum()
        loss.backward()
        times.append(time.perf_counter() - start)
        assert latent.grad is not None and torch.isfinite(latent.grad).all()
        del loss
    peak = _rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return {
        "num_layers": num_layers,
        "memory_efficient": memory_efficient,
        "fused": fused,
        "batch_size": batch_size,
        "num_points": num_points,
        "peak_rss_gib": peak / GIB,
        "rss_before_step_gib": before / GIB,
        "step_seconds": min(times),
        "threads": torch.get_num_threads(),
    }


def run_in_subprocess(
    num_layers: int, memory_efficient: bool, fused: bool = True, **options
) -> dict:
    """Run `measure` in a fresh interpreter (so the peak is this configuration's alone).

    ``options`` are `measure`'s keyword arguments, plus ``max_memory_gib`` (see ``--help``).
    """
    command = [sys.executable, os.path.abspath(__file__), "--one", "--num-layers", str(num_layers)]
    if memory_efficient:
        command.append("--memory-efficient")
    if not fused:
        command.append("--no-fused")
    for name, value in options.items():
        if value is not None:
            command += ["--" + name.replace("_", "-"), str(value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed with exit code {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


CONFIGURATIONS = {
    "plain": {"memory_efficient": False, "fused": False},
    "efficient": {"memory_efficient": True, "fused": False},
    "fused": {"memory_efficient": False, "fused": True},
}
"""The three configurations of the table: PyTorch path plain and memory-efficient, fused kernel."""


def _table(layer_counts: list[int], **options) -> str:
    rows = [
        "| layers | PyTorch path, plain: peak GiB | PyTorch path, memory-efficient: peak GiB "
        "(time vs plain) | fused kernel: peak GiB (time vs plain) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for num_layers in layer_counts:
        runs = {
            name: run_in_subprocess(num_layers, **flags, **options)
            for name, flags in CONFIGURATIONS.items()
        }
        base = runs["plain"]["step_seconds"]
        cells = [f"{runs['plain']['peak_rss_gib']:.2f}"] + [
            f"{runs[name]['peak_rss_gib']:.2f} ({runs[name]['step_seconds'] / base:.2f}x)"
            for name in ("efficient", "fused")
        ]
        rows.append(f"| {num_layers} | " + " | ".join(cells) + " |")
        print(json.dumps(runs), file=sys.stderr)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", action="store_true", help="measure in this process only")
    parser.add_argument("--num-layers", type=int, nargs="+", default=[21, 63])
    parser.add_argument("--memory-efficient", action="store_true")
    parser.add_argument("--no-fused", action="store_true", help="use the PyTorch path")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-points", type=int, default=2500)
    parser.add_argument("--context-features", type=int, default=512)
    parser.add_argument("--hidden-features", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--max-memory-gib",
        type=float,
        default=None,
        help="cap the address space (RLIMIT_AS) so a configuration that does not fit fails "
        "with MemoryError instead of pushing a shared machine into the OOM killer",
    )
    args = parser.parse_args(argv)
    if args.max_memory_gib is not None:
        limit = int(args.max_memory_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    options = {
        "batch_size": args.batch_size,
        "num_points": args.num_points,
        "context_features": args.context_features,
        "hidden_features": args.hidden_features,
        "steps": args.steps,
        "threads": args.threads,
        "max_memory_gib": args.max_memory_gib,
    }
    if args.one:
        del options["max_memory_gib"]  # already applied to this process
        flags = {"memory_efficient": args.memory_efficient, "fused": not args.no_fused}
        print(json.dumps(measure(args.num_layers[0], **flags, **options)))
    else:
        print(_table(args.num_layers, **options))


if __name__ == "__main__":
    main()
