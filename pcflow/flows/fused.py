"""A fused CPU kernel for stacks of affine point couplings: forward, inverse and backward.

`ConditionalPointFlow` hands every run of consecutive `PointAffineCoupling` layers to this
kernel when the points are float32 on the CPU, autocast is off and a C++ compiler is at hand,
for inference and training alike. The kernel carries tiles of points (64 with AVX-512) through
all layers in cache, with points in vector lanes, so the hidden activations never reach
memory and the biases, ReLUs, first and last layers, FiLM and the coupling itself are fused
around the ``H x H`` product; see ``_fused_affine.cpp``. Its backward pass stores nothing per
layer: it rebuilds each layer's inputs from its outputs (couplings are invertible), evaluates
the layer's networks again and back-propagates through them, so training memory does not
grow with depth (``memory_efficient`` changes nothing here). It computes what the layers
compute, up to float32 rounding; tests hold it to the PyTorch path in float64.

The kernel is compiled on first use with ``torch.utils.cpp_extension`` (``-O3
-march=native``; about 20 seconds, cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). Where it cannot be built (no compiler), pcflow warns once and
uses the PyTorch path. ``flow.fused = False`` turns it off for one flow, ``PCFLOW_FUSED=0``
everywhere.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from nflows.transforms import Transform
from torch import Tensor
from torch.autograd.function import once_differentiable

from pcflow.transforms.coupling import (
    PointAffineCoupling,
    film_terms,
    is_plain_affine_coupling,
)

__all__ = ["fused_available", "fused_groups", "kernel_takes", "run_fused"]

_SOURCE = Path(__file__).with_name("_fused_affine.cpp")
_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp"]
_module: ModuleType | None = None
_failure: str | None = None


def _cpu_signature() -> str:
    # -march=native code must not be reused on another CPU (shared home directories).
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if "flags" in line
        )
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def _load() -> ModuleType | None:
    global _module, _failure
    if _module is not None or _failure is not None:
        return _module
    if os.environ.get("PCFLOW_FUSED", "1") == "0":
        _failure = "turned off by PCFLOW_FUSED=0"
        return None
    try:
        from torch.utils import cpp_extension

        key = " ".join([*_FLAGS, _cpu_signature(), torch.__version__]).encode()
        digest = hashlib.sha256(_SOURCE.read_bytes() + key).hexdigest()[:16]
        _module = cpp_extension.load(
            name=f"pcflow_fused_affine_{digest}",
            sources=[str(_SOURCE)],
            extra_cflags=_FLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as error:  # any build failure means: use the PyTorch path
        lines = str(error).strip().splitlines()
        _failure = f"{type(error).__name__}: {lines[-1] if lines else ''}"
        warnings.warn(
            f"pcflow could not build its fused CPU coupling kernel ({_failure}); flows run on "
            "the (slower) PyTorch path. Set PCFLOW_FUSED=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _module


def fused_available() -> bool:
    """Whether the fused kernel is built (building it now if need be) and turned on."""
    return _load() is not None


def kernel_takes(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernel takes points of this dtype on this device now.

    Float32 on the CPU, outside autocast (mixed precision asks for the PyTorch path's
    lower-precision products), with the kernel built and turned on.
    """
    return (
        dtype == torch.float32
        and device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and fused_available()
    )


def _fusable(layer: Transform) -> bool:
    if not is_plain_affine_coupling(layer):
        return False
    # The backward pass holds up to 8 coordinates per point in registers.
    return layer.networks.hidden_features % 4 == 0 and layer.features <= 8


def fused_groups(layers: Sequence[Transform]) -> list[tuple[bool, list[Transform]]]:
    """Split layers into runs: ``(True, couplings)`` the kernel can take, ``(False, [layer])``."""
    groups: list[tuple[bool, list[Transform]]] = []
    for layer in layers:
        if _fusable(layer) and groups and groups[-1][0]:
            previous = groups[-1][1][0]
            if (
                previous.features == layer.features
                and previous.hidden_features == layer.hidden_features
                and previous.context_features == layer.context_features
            ):
                groups[-1][1].append(layer)
                continue
        groups.append((_fusable(layer), [layer]))
    return groups


def _film(nets: list, context: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
    """FiLM scale and folded bias of every layer's hidden layer, each `(L, 2, B, H)`."""
    if context is not None:
        return film_terms(nets, context, batch)
    num, hidden = len(nets), nets[0].hidden_features
    hidden_bias = torch.cat([net.hidden_bias for net in nets]).view(num, 2, 1, hidden)
    scale = torch.ones(num, 2, batch, hidden, dtype=hidden_bias.dtype)
    return scale, hidden_bias.expand(num, 2, batch, hidden)


def _stack(layers: list[PointAffineCoupling], inputs: Tensor, context: Tensor | None):
    """The kernel's arguments: layout, weights (as stored, concatenated) and FiLM terms."""
    batch = inputs.shape[0]
    nets = [layer.networks for layer in layers]
    num, hidden = len(nets), nets[0].hidden_features
    layout = torch.tensor(
        [
            [len(layer.transformed_features), *layer.transformed_features,
             *layer.identity_features]
            for layer in layers
        ],
        dtype=torch.int32,
    )  # fmt: skip
    scale, bias = _film(nets, context, batch)
    return (
        layout,
        torch.cat([net.first_weight.reshape(-1) for net in nets]),  # per layer (2, ni, H)
        torch.cat([net.first_bias for net in nets]).view(num, 2, hidden),
        torch.cat([net.hidden_weight for net in nets]).view(num, 2, hidden, hidden),
        scale.contiguous(),
        bias.contiguous(),
        torch.cat([net.last_weight.reshape(-1) for net in nets]),  # per layer (2, H, nt)
        torch.cat([net.last_bias.reshape(-1) for net in nets]),  # per layer (2, nt)
        torch.tensor([layer.max_log_scale for layer in layers], dtype=torch.float32),
    )


class _FusedCouplings(torch.autograd.Function):
    """The kernel's forward pass, and its backward pass, which rebuilds activations."""

    @staticmethod
    def forward(ctx, inputs, layout, bound, inverse, *weights):  # type: ignore[override]
        outputs, logabsdet = _module.run(inputs, layout, *weights, bound, inverse)
        ctx.save_for_backward(outputs, layout, bound, *weights)
        ctx.inverse = inverse
        return outputs, logabsdet

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_outputs, grad_logabsdet):  # type: ignore[override]
        outputs, layout, bound, *weights = ctx.saved_tensors
        grads = _module.run_backward(
            outputs,
            grad_outputs.contiguous(),
            grad_logabsdet.contiguous(),
            layout,
            *weights,
            bound,
            ctx.inverse,
        )
        return grads[0], None, None, None, *grads[1:]


def run_fused(
    layers: list[PointAffineCoupling], inputs: Tensor, context: Tensor | None, inverse: bool
) -> tuple[Tensor, Tensor] | None:
    """Run a stack of couplings with the kernel; ``None`` when the kernel cannot take the call.

    Under autograd the result is differentiable in the points, the context and every layer's
    parameters: the backward pass rebuilds each layer's inputs from its outputs instead of
    storing activations, so training memory does not grow with the number of layers.

    Arguments:
        layers: Consecutive `PointAffineCoupling` layers (a group from `fused_groups`), in
            the data-to-noise order.
        inputs: Points `(B, N, D)`.
        context: Per-shape context `(B, C)`, or ``None`` for unconditional layers.
        inverse: Run the inverse (noise to data), last layer first.

    Returns:
        ``(outputs (B, N, D), logabsdet (B, N))`` or ``None``.

    Raises:
        ValueError: ``layers`` is not one run the kernel takes, or the points do not have the
            layers' number of coordinates.
    """
    groups = fused_groups(layers)
    if len(groups) != 1 or not groups[0][0]:
        raise ValueError(
            "layers must be one run of PointAffineCoupling layers of the same size, with a "
            "hidden width that is a multiple of 4 (a group from fused_groups)"
        )
    features = layers[0].features
    if inputs.dim() != 3 or inputs.shape[2] != features:
        raise ValueError(f"inputs must have shape (B, N, {features}), got {tuple(inputs.shape)}")
    if not kernel_takes(inputs.dtype, inputs.device):
        return None
    inputs = inputs.contiguous()
    layout, *weights, bound = _stack(layers, inputs, context)
    if any(w.dtype != torch.float32 for w in weights):
        return None  # e.g. a float64 context
    if torch.is_grad_enabled() and (inputs.requires_grad or any(w.requires_grad for w in weights)):
        return _FusedCouplings.apply(inputs, layout, bound, inverse, *weights)
    with torch.no_grad():
        return _module.run(inputs, layout, *(w.detach() for w in weights), bound, inverse)
