"""Throughput of pcflow's DPF flow against the stock nflows composition; prints the table.

Run ``.venv/bin/python benchmarks/flow_table.py`` (``--help`` for sizes). Both flows are built at
the same size (the paper's: 63 couplings, hidden width 64, latent 512, B=16 shapes x N=2048
points, float32) and timed interleaved in one process, so that the ratios survive a noisy,
shared machine. The baseline is nflows' ``AffineCouplingTransform`` with a
``ResidualNet(context_features=512, hidden_features=64, num_blocks=1, activation=relu)`` over the
flattened points, the latent repeated for every point: the same coupling math without the
per-shape projection of the latent.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms import AffineCouplingTransform, CompositeTransform
from torch.nn import functional as F

from pcflow.flows import DPF_MASKS, ConditionalPointFlow, dpf_flow

__all__ = [
    "build_baseline",
    "build_ours",
    "flow_flops_per_point",
    "measure",
    "measure_variants",
    "print_table",
    "print_variants",
    "profile",
]


def build_ours(context: int, layers: int, hidden: int) -> ConditionalPointFlow:
    """The flow under test: `pcflow.flows.dpf_flow`."""
    return dpf_flow(context_features=context, num_layers=layers, hidden_features=hidden)


def build_baseline(context: int, layers: int, hidden: int) -> Flow:
    """Stock nflows: affine couplings with a context ResidualNet, same masks, width, depth."""

    def net(in_features: int, out_features: int) -> ResidualNet:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features=hidden,
            context_features=context,
            num_blocks=1,
            activation=F.relu,
        )

    transforms = [
        AffineCouplingTransform(
            torch.tensor(DPF_MASKS[(j // 3) % 2][j % 3]) * 2 - 1, transform_net_create_fn=net
        )
        for j in range(layers)
    ]
    return Flow(CompositeTransform(transforms), StandardNormal([3]))


def flow_flops_per_point(flow: ConditionalPointFlow) -> int:
    """Model FLOPs of one point's forward pass through all layers (2 x multiply-adds)."""
    return sum(layer.model_flops_per_point() for layer in flow.layers)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    batch: int = 16,
    num_points: int = 2048,
    context: int = 512,
    layers: int = 63,
    hidden: int = 64,
    rounds: int = 3,
    threads: int | None = None,
    compile_ours: bool = False,
    seed: int = 0,
    fused: bool = True,
) -> dict[str, float]:
    """Time forward (log_prob), inverse (sample) and a training step of both flows, interleaved.

    Every quantity is the fastest of ``rounds`` calls (as ``timeit`` advises: slower calls
    measure the other jobs on a shared machine, not the code), for both flows and the matmul.

    Returns:
        Seconds per call for ``"ours_<op>"`` and ``"nflows_<op>"`` (op in ``forward``,
        ``inverse``, ``train``), ``"mm_seconds"`` of a 2048x2048 fp32 ``torch.mm``, the
        derived ``"ratio_<op>"`` (nflows time / ours), points per second and GFLOP/s.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ours = build_ours(context, layers, hidden)
    ours.fused = fused
    base = build_baseline(context, layers, hidden)
    points = torch.rand(batch, num_points, 3) * 2 - 1
    latent = torch.randn(batch, context)
    flat_points = points.reshape(-1, 3)
    flat_latent = latent.repeat_interleave(num_points, 0)
    noise = torch.randn(batch, num_points, 3)
    flat_noise = noise.reshape(-1, 3)

    ours_log_prob = ours.log_prob
    ours_sample = ours._run
    if compile_ours:
        ours_log_prob = torch.compile(ours.log_prob)
        ours_sample = torch.compile(ours._run)

    def ours_train() -> None:
        z = latent.clone().requires_grad_(True)
        loss = -ours_log_prob(points, z).sum()
        loss.backward()

    def base_train() -> None:
        z = flat_latent.clone().requires_grad_(True)
        loss = -base.log_prob(flat_points, z).sum()
        loss.backward()

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()

        return run

    ops = {
        "ours_forward": no_grad(lambda: ours_log_prob(points, latent)),
        "nflows_forward": no_grad(lambda: base.log_prob(flat_points, flat_latent)),
        "ours_inverse": no_grad(lambda: ours_sample(noise, latent, True, False)),
        "nflows_inverse": no_grad(lambda: base._transform.inverse(flat_noise, flat_latent)),
        "ours_train": ours_train,
        "nflows_train": base_train,
    }
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    ops["mm_seconds"] = lambda: torch.mm(a, b)
    for fn in ops.values():  # warm-up (and compilation)
        fn()
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, fn in ops.items():
            times[name].append(_time(fn))
    result = {name: min(values) for name, values in times.items()}
    total = batch * num_points
    flops = flow_flops_per_point(ours) * total
    mm_rate = 2 * 2048**3 / result["mm_seconds"]
    result["mm_gflops"] = mm_rate / 1e9
    for op, factor in (("forward", 1), ("inverse", 1), ("train", 3)):
        result[f"ratio_{op}"] = result[f"nflows_{op}"] / result[f"ours_{op}"]
        result[f"ours_{op}_points_per_s"] = total / result[f"ours_{op}"]
        result[f"nflows_{op}_points_per_s"] = total / result[f"nflows_{op}"]
        result[f"ours_{op}_gflops"] = factor * flops / result[f"ours_{op}"] / 1e9
        result[f"ours_{op}_fraction_of_mm"] = factor * flops / result[f"ours_{op}"] / mm_rate
    return result


def measure_variants(
    batch: int = 16,
    num_points: int = 2048,
    context: int = 512,
    layers: int = 63,
    hidden: int = 64,
    rounds: int = 3,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """pcflow's three passes on each instruction-set variant of the kernel this CPU runs.

    The variants and a 2048x2048 fp32 ``torch.mm`` are timed interleaved in one process (the
    fastest of ``rounds``), so the fractions of the matmul rate compare within the run.

    Returns:
        Per variant: ``"<op>_points_per_s"`` and ``"<op>_fraction_of_mm"`` for op in
        ``forward``, ``inverse``, ``train``; ``"mm_gflops"`` under the key ``"mm"``.
    """
    from pcflow import _native
    from pcflow.flows import fused

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    flow = build_ours(context, layers, hidden)
    points = torch.rand(batch, num_points, 3) * 2 - 1
    latent = torch.randn(batch, context)
    noise = torch.randn(batch, num_points, 3)

    def train() -> None:
        z = latent.clone().requires_grad_(True)
        (-flow.log_prob(points, z).sum()).backward()

    passes = {
        "forward": lambda: flow.log_prob(points, latent),
        "inverse": lambda: flow._run(noise, latent, True, False),
        "train": train,
    }
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    variants = _native.cpu_variants()
    times: dict[tuple[str, str], list[float]] = {}
    mm: list[float] = []
    for round_ in range(rounds + 1):  # round 0 warms up
        for variant in variants:
            with fused.use_variant(variant):
                for op, fn in passes.items():
                    if op == "train":
                        elapsed = _time(fn)
                    else:
                        with torch.no_grad():
                            elapsed = _time(fn)
                    if round_:
                        times.setdefault((variant, op), []).append(elapsed)
        elapsed = _time(lambda: torch.mm(a, b))
        if round_:
            mm.append(elapsed)
    mm_rate = 2 * 2048**3 / min(mm)
    flops = flow_flops_per_point(flow) * batch * num_points
    result: dict[str, dict[str, float]] = {"mm": {"mm_gflops": mm_rate / 1e9}}
    for variant in variants:
        row = result.setdefault(variant, {})
        for op, factor in (("forward", 1), ("inverse", 1), ("train", 3)):
            best = min(times[(variant, op)])
            row[f"{op}_points_per_s"] = batch * num_points / best
            row[f"{op}_fraction_of_mm"] = factor * flops / best / mm_rate
    return result


def print_variants(result: dict[str, dict[str, float]]) -> None:
    """Print the per-variant markdown table of the docs' benchmarks page."""
    print(
        "| variant | log_prob points/s | of mm | sample points/s | of mm | train points/s | of mm |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant, row in result.items():
        if variant == "mm":
            continue
        cells = [
            f"{row[f'{op}_points_per_s']:,.0f} | {100 * row[f'{op}_fraction_of_mm']:.0f}%"
            for op in ("forward", "inverse", "train")
        ]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    print(f"\ntorch.mm 2048x2048 fp32: {result['mm']['mm_gflops']:.1f} GFLOP/s (same run)")


def print_table(result: dict[str, float]) -> None:
    """Print the markdown table of the docs' benchmarks page."""
    print("| pass | pcflow points/s | nflows points/s | speed-up | pcflow GFLOP/s | of mm |")
    print("| --- | --- | --- | --- | --- | --- |")
    for op, label in (("forward", "log_prob"), ("inverse", "sample"), ("train", "train step")):
        print(
            f"| {label} | {result[f'ours_{op}_points_per_s']:,.0f} "
            f"| {result[f'nflows_{op}_points_per_s']:,.0f} | {result[f'ratio_{op}']:.1f}x "
            f"| {result[f'ours_{op}_gflops']:.1f} "
            f"| {100 * result[f'ours_{op}_fraction_of_mm']:.0f}% |"
        )
    print(f"\ntorch.mm 2048x2048 fp32: {result['mm_gflops']:.1f} GFLOP/s (same run)")


def profile(
    batch: int = 16,
    num_points: int = 2048,
    context: int = 512,
    layers: int = 63,
    hidden: int = 64,
    rounds: int = 3,
    threads: int | None = None,
) -> None:
    """Print where the time of pcflow's forward pass and training step goes (fused kernel).

    Parts: packing the layers' weights and FiLM terms for the kernel (``_stack``, Python, once
    per call), the kernel's forward pass, its backward pass (which evaluates every layer again
    before back-propagating: 3 products of the hidden layer per layer and network, against 1
    in the forward pass), and the rest (input checks, base density, autograd bookkeeping).
    """
    from pcflow.flows import fused

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    flow = build_ours(context, layers, hidden)
    points = torch.rand(batch, num_points, 3) * 2 - 1
    latent = torch.randn(batch, context)
    assert fused.fused_available(), "the fused kernel is not available"
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)

    def best(fn: Callable[[], object]) -> float:
        fn()
        return min(_time(fn) for _ in range(rounds))

    with torch.no_grad():
        stacked = fused._stack(flow.layers, points, latent)
        layout, *weights = stacked
        every = fused.CHECKPOINT_EVERY
        outputs, logabsdet, checkpoints = fused.affine_couplings(
            points, layout, *weights, False, every
        )
        grad_out, grad_ld = torch.randn_like(outputs), torch.randn_like(logabsdet)
        times = {
            "log_prob, whole call": best(lambda: flow.log_prob(points, latent)),
            "packing weights (_stack)": best(lambda: fused._stack(flow.layers, points, latent)),
            "kernel forward": best(
                lambda: fused.affine_couplings(points, layout, *weights, False, every)
            ),
            "kernel backward": best(
                lambda: fused.affine_couplings_backward(
                    outputs, checkpoints, grad_out, grad_ld, layout, *weights, False, every
                )
            ),
        }
        mm = best(lambda: torch.mm(a, b))

    def train() -> None:
        z = latent.clone().requires_grad_(True)
        (-flow.log_prob(points, z).sum()).backward()

    times["train step, whole call"] = best(train)
    flops = flow_flops_per_point(flow) * batch * num_points
    mm_rate = 2 * 2048**3 / mm
    print("| part | seconds | share of its call | of mm rate |")
    print("| --- | --- | --- | --- |")
    forward = times["log_prob, whole call"]
    step = times["train step, whole call"]
    rows = [
        ("log_prob, whole call", forward, 1, flops),
        ("  packing weights (_stack)", times["packing weights (_stack)"], forward, 0),
        ("  kernel forward", times["kernel forward"], forward, flops),
        ("train step, whole call", step, 1, 3 * flops),
        ("  kernel forward", times["kernel forward"], step, flops),
        ("  kernel backward (recomputes)", times["kernel backward"], step, 3 * flops),
        ("  packing + autograd + rest", step - times["kernel forward"] - times["kernel backward"],
         step, 0),
    ]  # fmt: skip
    for name, seconds, whole, work in rows:
        share = "" if whole == 1 else f"{100 * seconds / whole:.0f}%"
        rate = f"{100 * work / seconds / mm_rate:.0f}%" if work else ""
        print(f"| {name} | {seconds:.3f} | {share} | {rate} |")
    print(f"\ntorch.mm 2048x2048 fp32: {mm_rate / 1e9:.1f} GFLOP/s (same run); model FLOPs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num-points", type=int, default=2048)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--layers", type=int, default=63)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile pcflow's passes")
    parser.add_argument(
        "--no-fused", action="store_true", help="time pcflow's PyTorch path, not its fused kernel"
    )
    parser.add_argument(
        "--profile", action="store_true", help="where pcflow's time goes, instead of the table"
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="pcflow's passes on every instruction-set variant this CPU runs (no nflows)",
    )
    parser.add_argument(
        "--variant",
        choices=["generic", "avx2", "avx512"],
        default=None,
        help="the kernel's instruction-set variant (default: the best this CPU runs)",
    )
    args = parser.parse_args()
    if args.variant is not None:
        os.environ["PCFLOW_ISA"] = args.variant  # read when the kernel first loads
    from pcflow.flows import fused

    if not args.no_fused:
        print(f"fused kernel: {fused.kernel_info()}")
    if args.variants:
        print_variants(
            measure_variants(
                args.batch, args.num_points, args.context, args.layers, args.hidden, args.rounds,
                args.threads,
            )
        )  # fmt: skip
        return
    if args.profile:
        profile(
            args.batch, args.num_points, args.context, args.layers, args.hidden, args.rounds,
            args.threads,
        )  # fmt: skip
        return
    result = measure(
        args.batch, args.num_points, args.context, args.layers, args.hidden, args.rounds,
        args.threads, args.compile, fused=not args.no_fused,
    )  # fmt: skip
    print_table(result)


if __name__ == "__main__":
    main()
