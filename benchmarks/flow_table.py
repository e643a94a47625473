"""Throughput of pcflow's DPF flow against the stock nflows composition; prints the table.

Run ``.venv/bin/python benchmarks/flow_table.py`` (``--help`` for sizes). Both flows are built at
the same size (the paper's: 63 couplings, hidden width 64, latent 512, B=16 shapes x N=2048
points, float32) and timed interleaved in one process, so that the ratios survive a noisy,
shared machine. The baseline is nflows' ``AffineCouplingTransform`` with a
``ResidualNet(context_features=512, hidden_features=64, num_blocks=1, activation=relu)`` over the
flattened points, the latent repeated for every point: the same coupling math without the
per-shape projection of the latent.

``--variants`` times pcflow's passes on every instruction-set variant of the fused kernel that
this CPU runs, against two matmul references from the same run: torch's fp32 ``torch.mm`` as it
runs here (uncapped), and the same ``torch.mm`` in a helper process whose MKL (and oneDNN) is
capped to the variant's instruction set (`ISA_CAPS`), which is the matmul rate a CPU with only
that instruction set would measure.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms import AffineCouplingTransform, CompositeTransform
from torch.nn import functional as F

from pcflow.flows import DPF_MASKS, ConditionalPointFlow, dpf_flow

__all__ = [
    "ISA_CAPS",
    "MKL_ISA_NAMES",
    "CappedMatmul",
    "VariantTable",
    "build_baseline",
    "build_ours",
    "capped_environment",
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


ISA_CAPS: dict[str, dict[str, str]] = {
    "avx512": {
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "ATEN_CPU_CAPABILITY": "avx512",
    },
    "avx2": {
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
    },
    # MKL's lowest level is SSE4.2 (the generic kernel is x86-64's SSE2); neither has FMA.
    "generic": {
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "ATEN_CPU_CAPABILITY": "default",
    },
}
"""Per kernel variant: the environment that caps torch's matmul to the variant's instruction set.

``torch.mm`` in float32 on the CPU calls MKL's ``sgemm`` (torch's CPU wheels are built with MKL;
oneDNN is not used for float32 ``mm``), which reads ``MKL_ENABLE_INSTRUCTIONS`` once, at its
first call; ``ONEDNN_MAX_CPU_ISA`` and ``ATEN_CPU_CAPABILITY`` cap torch's other CPU kernels the
same way. `CappedMatmul` runs the matmul in a process started with these variables.
"""

# MKL names the instruction set it dispatched to like this in its verbose banner.
MKL_ISA_NAMES = {"AVX512": "AVX-512", "AVX2": "AVX2", "SSE4_2": "SSE4.2"}

_MATMUL_WORKER = """
import ctypes, os, sys, time
import torch

size, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
a, b = torch.randn(size, size), torch.randn(size, size)
print("cap", os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""), flush=True)
print("mkl", int(torch.backends.mkl.is_available()), flush=True)
if torch.backends.mkl.is_available():
    # MKL's first call prints its banner, which names the instruction set it chose.
    with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
        torch.mm(a[:64, :64], b[:64, :64])
    ctypes.CDLL(None).fflush(None)  # MKL writes through C's stdio buffer
print("ready", flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    torch.mm(a, b)
    print(time.perf_counter() - start, flush=True)
"""


def capped_environment(variant: str) -> dict[str, str]:
    """This process's environment with torch's matmul capped to ``variant``'s instruction set.

    Raises:
        ValueError: ``variant`` is not one of `ISA_CAPS`.
    """
    if variant not in ISA_CAPS:
        raise ValueError(f"variant must be one of {', '.join(ISA_CAPS)}, got {variant!r}")
    return {**os.environ, **ISA_CAPS[variant]}


class CappedMatmul:
    """A ``size x size`` fp32 ``torch.mm`` in a helper process capped to a variant's ISA.

    The process starts with `capped_environment` and stays up, so its matmul can be timed
    interleaved with the parent's work (one call at a time: the parent waits for it). It uses
    the parent's torch thread count.

    Attributes:
        cap: ``MKL_ENABLE_INSTRUCTIONS`` as the helper process read it.
        mkl: whether the helper's torch calls MKL (without MKL the cap has no effect).
        mkl_isa: the instruction set MKL reported choosing (``"AVX2"``, ``"AVX-512"``,
            ``"SSE4.2"``), ``""`` without MKL or a banner, or where the banner names none (on
            other vendors' CPUs than Intel's).
    """

    def __init__(self, variant: str, size: int = 2048, threads: int | None = None) -> None:
        self.variant = variant
        threads = threads or torch.get_num_threads()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _MATMUL_WORKER, str(size), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=capped_environment(variant),
        )
        self.cap, self.mkl, self.mkl_isa = "", False, ""
        self._started = False

    def _start(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.strip()
            if line == "ready":
                self._started = True
                return
            if line.startswith("cap"):
                self.cap = line[3:].strip()
            elif line.startswith("mkl "):
                self.mkl = line.split()[1] == "1"
            elif line.startswith("MKL_VERBOSE") and not self.mkl_isa:
                found = re.search(r"\(Intel\(R\) ([^)]+)\)", line)
                self.mkl_isa = found.group(1) if found else ""
        raise RuntimeError(
            f"the {self.variant} matmul process exited (status {self._process.wait()}) "
            "before it was ready"
        )

    def started(self) -> CappedMatmul:
        """Wait until the helper process is ready (its torch imported); returns ``self``."""
        if not self._started:
            self._start()
        return self

    def time(self) -> float:
        """Seconds of one matmul in the helper process."""
        self.started()
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("mm\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(
                f"the {self.variant} matmul process exited (status {self._process.wait()})"
            )
        return float(answer)

    def close(self) -> None:
        """End the helper process."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> CappedMatmul:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class VariantTable:
    """The per-variant throughput of `measure_variants`.

    Attributes:
        mm_gflops: the uncapped fp32 ``torch.mm`` rate of this process.
        rows: per variant, ``"<op>_points_per_s"``, ``"<op>_fraction_of_mm"`` (of the
            uncapped matmul) and ``"<op>_fraction_of_isa_mm"`` (of the matmul capped to the
            variant's instruction set, NaN without MKL), for op in ``forward``, ``inverse``,
            ``train``; and ``"isa_mm_gflops"``.
        mkl_isa: per variant, the instruction set MKL reported under the cap (``""`` where
            it named none, as on other vendors' CPUs than Intel's).
        load: the 1-minute load average before and after the run.
    """

    mm_gflops: float
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    mkl_isa: dict[str, str] = field(default_factory=dict)
    load: tuple[float, float] = (math.nan, math.nan)


def measure_variants(
    batch: int = 16,
    num_points: int = 2048,
    context: int = 512,
    layers: int = 63,
    hidden: int = 64,
    rounds: int = 3,
    threads: int | None = None,
    mm_size: int = 2048,
) -> VariantTable:
    """pcflow's three passes on each instruction-set variant of the kernel this CPU runs.

    The variants, an uncapped ``mm_size`` fp32 ``torch.mm`` and, per variant, the same matmul
    capped to the variant's instruction set (`CappedMatmul`, one helper process each) are
    timed interleaved (the fastest of ``rounds``), so the fractions compare within the run.
    On a CPU with only a variant's instruction set, its fraction of the capped matmul is the
    one that CPU would measure. On a busy machine prefer ``threads=1``: another job on one
    core slows a two-thread matmul more than the kernel (measured: the AVX2-capped matmul
    fell below its one-thread rate), which inflates the fractions.
    """
    from pcflow import _native
    from pcflow.flows import fused

    if threads is not None:
        torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
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
    a, b = torch.randn(mm_size, mm_size), torch.randn(mm_size, mm_size)
    variants = _native.cpu_variants()
    capped: dict[str, CappedMatmul] = {}
    times: dict[tuple[str, str], list[float]] = {}
    mm: list[float] = []
    isa_mm: dict[str, list[float]] = {variant: [] for variant in variants}
    try:
        for variant in variants:  # start them all, then wait: their imports overlap
            capped[variant] = CappedMatmul(variant, mm_size)
        for matmul in capped.values():
            matmul.started()
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
            for variant, matmul in capped.items():
                elapsed = matmul.time()
                if round_:
                    isa_mm[variant].append(elapsed)
    finally:
        for matmul in capped.values():
            matmul.close()
    work = 2 * mm_size**3
    flops = flow_flops_per_point(flow) * batch * num_points
    table = VariantTable(mm_gflops=work / min(mm) / 1e9, load=(load_before, os.getloadavg()[0]))
    for variant in variants:
        matmul = capped[variant]
        table.mkl_isa[variant] = matmul.mkl_isa
        isa_rate = work / min(isa_mm[variant]) if matmul.mkl else math.nan
        row = table.rows.setdefault(variant, {"isa_mm_gflops": isa_rate / 1e9})
        for op, factor in (("forward", 1), ("inverse", 1), ("train", 3)):
            best = min(times[(variant, op)])
            row[f"{op}_points_per_s"] = batch * num_points / best
            row[f"{op}_fraction_of_mm"] = factor * flops / best / (table.mm_gflops * 1e9)
            row[f"{op}_fraction_of_isa_mm"] = factor * flops / best / isa_rate
    return table


def _percent(fraction: float) -> str:
    return "n/a" if math.isnan(fraction) else f"{100 * fraction:.0f}%"


def print_variants(table: VariantTable, mm_size: int = 2048) -> None:
    """Print the per-variant markdown table of the docs' benchmarks page, then its matmuls."""
    labels = {"forward": "log_prob", "inverse": "sample", "train": "train"}
    header = ["variant"]
    for label in labels.values():
        header += [f"{label} points/s", "of mm", "of own-ISA mm"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for variant, row in table.rows.items():
        cells = [variant]
        for op in labels:
            cells += [
                f"{row[f'{op}_points_per_s']:,.0f}",
                _percent(row[f"{op}_fraction_of_mm"]),
                _percent(row[f"{op}_fraction_of_isa_mm"]),
            ]
        print("| " + " | ".join(cells) + " |")
    print(f"\ntorch.mm {mm_size}x{mm_size} fp32, same run: {table.mm_gflops:.1f} GFLOP/s uncapped")
    for variant, row in table.rows.items():
        cap = ISA_CAPS[variant]["MKL_ENABLE_INSTRUCTIONS"]
        if math.isnan(row["isa_mm_gflops"]):
            print(f"  {variant}: n/a (this torch does not use MKL, so the cap has no effect)")
            continue
        reported = table.mkl_isa.get(variant, "")
        if not reported:  # MKL names no instruction set on other vendors' CPUs
            note = "MKL's banner names no instruction set, so the cap is unverified"
        elif reported == MKL_ISA_NAMES[cap]:
            note = f"MKL reports {reported}"
        else:
            note = f"MKL reports {reported} (NOT {MKL_ISA_NAMES[cap]}!)"
        print(
            f"  {variant}: {row['isa_mm_gflops']:.1f} GFLOP/s with "
            f"MKL_ENABLE_INSTRUCTIONS={cap} ({note})"
        )
    print(f"load average (1 min) before / after: {table.load[0]:.2f} / {table.load[1]:.2f}")


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
        help="pcflow's passes on every instruction-set variant this CPU runs (no nflows), "
        "against torch.mm uncapped and capped to each variant's instruction set",
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
