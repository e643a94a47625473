"""A fused CPU kernel for stacks of affine point couplings: forward, inverse and backward.

`ConditionalPointFlow` hands every run of consecutive `PointAffineCoupling` layers to this
kernel when the points are float32 on the CPU and autocast is off, for inference and training
alike (a subclass only if it declares the kernel's map itself: `declares_kernel_map`). The
kernel carries tiles of points (64 with AVX-512) through all layers in cache, with points in
vector lanes, so the hidden activations never reach memory and the biases, ReLUs,
first and last layers, FiLM and the coupling itself are fused around the ``H x H`` product;
see ``_fused_affine.cpp``. Its backward pass stores no activations: it rebuilds each layer's
inputs from its outputs (couplings are invertible), evaluates the layer's networks again and
back-propagates through them. Rebuilding amplifies rounding where log-scales are large, so the
forward pass also keeps the points (``D`` floats per point) every `CHECKPOINT_EVERY` layers and
the backward pass restarts from them; gradients stay within float32 autograd's accuracy at any
scale of the points, and training memory barely grows with depth.

The kernel is a registered PyTorch operator (``torch.ops.pcflow.affine_couplings``, with a
fake implementation and autograd), so `torch.compile` and `torch.export` trace through it. Its
binary is plain C ABI, one library per instruction set (generic x86-64, AVX2+FMA, AVX-512),
the best one for the running CPU chosen at first use; see `pcflow._native`. Linux x86-64
wheels ship them prebuilt; elsewhere they compile once with the system C++ compiler (a few
seconds). Where neither works, pcflow warns once and uses the PyTorch path.
``flow.fused = False`` turns the kernel off for one flow, ``PCFLOW_FUSED=0`` everywhere, and
``PCFLOW_ISA`` chooses the variant.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from nflows.transforms import Transform
from torch import Tensor
from torch.autograd.function import once_differentiable

from pcflow import _native
from pcflow.transforms.coupling import AffineCouplingWeights, PointAffineCoupling
from pcflow.transforms.film import PointNetworks, film_terms

__all__ = [
    "CHECKPOINT_EVERY",
    "declares_kernel_map",
    "fused_available",
    "fused_groups",
    "kernel_info",
    "kernel_takes",
    "run_fused",
    "use_variant",
]

CHECKPOINT_EVERY = 4
"""Layers between the points the forward pass keeps for the backward pass (see module doc)."""

_WEIGHTS = ("w1", "b1", "wh", "fs", "fb", "wl", "bl")


class _Couplings(ctypes.Structure):
    # Mirrors `pcf_couplings` in _fused_affine.cpp.
    _fields_ = [
        *((name, ctypes.c_int64) for name in ("L", "B", "N", "D", "H")),
        ("layout", ctypes.c_void_p),
        *((name, ctypes.c_void_p) for name in (*_WEIGHTS, "bound")),
        *((f"{name}_size", ctypes.c_int64) for name in ("layout", *_WEIGHTS, "bound")),
    ]


class _Kernel:
    """One variant's library, with its entry points typed."""

    def __init__(self, variant: str) -> None:
        library, self.path = _native.load("fused_affine", variant)
        self.variant = variant
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        self.forward = library.pcf_couplings_forward
        self.forward.restype = ctypes.c_int
        self.forward.argtypes = [pointer] * 5 + [size, size, ctypes.c_int, size, pointer, size]
        self.backward = library.pcf_couplings_backward
        self.backward.restype = ctypes.c_int
        self.backward.argtypes = [pointer, pointer, pointer, size, size, pointer, pointer]
        self.backward.argtypes += [ctypes.c_int, size, pointer, pointer, size]
        info = [ctypes.c_int64() for _ in range(3)]
        library.pcf_couplings_info(*(ctypes.byref(value) for value in info))
        self.vector_width, self.tile_points, self.row_block = (value.value for value in info)


_kernel: _Kernel | None = None
_failure: str | None = None


def _user_stacklevel() -> int:
    # Point a warning at the user's call: the first frame outside pcflow, torch and nflows.
    import inspect

    import nflows

    here = str(Path(__file__).resolve().parents[1])
    skip = (here, *(str(Path(module.__file__).resolve().parent) for module in (torch, nflows)))
    for level, frame in enumerate(inspect.stack()[1:], start=1):
        if not str(Path(frame.filename).resolve()).startswith(skip):
            return level
    return 2


def _load() -> _Kernel | None:
    global _kernel, _failure
    if _kernel is not None or _failure is not None:
        return _kernel
    if os.environ.get("PCFLOW_FUSED", "1") == "0":
        _failure = "turned off by PCFLOW_FUSED=0"
        return None
    try:
        _kernel = _Kernel(_native.best_variant())
    except _native.NativeBuildError as error:
        _failure = str(error)
        warnings.warn(
            f"pcflow's fused coupling kernel is unavailable, so flows run on the slower PyTorch "
            f"path: {_failure}\n(Set PCFLOW_FUSED=0 to silence this.)",
            RuntimeWarning,
            stacklevel=_user_stacklevel(),
        )
    return _kernel


def fused_available() -> bool:
    """Whether the fused kernel is loaded (loading or building it now if need be) and on."""
    return _load() is not None


# Compiled code asks once, at trace time: what torch.compiler.assume_constant_result does, without
# importing torch._dynamo (seconds) when pcflow.flows is imported.
# tests/recipes/test_flowgan_training.py::test_the_generator_step_compiles_without_graph_breaks
# fails if a torch release stops reading the mark.
fused_available._dynamo_marked_constant = True  # type: ignore[attr-defined]


def kernel_info() -> dict[str, object]:
    """The kernel in use: ``variant``, library ``path``, ``vector_width``, ``tile_points``.

    ``{"available": False, "reason": ...}`` where it cannot be used.
    """
    kernel = _load()
    if kernel is None:
        return {"available": False, "reason": _failure}
    return {
        "available": True,
        "variant": kernel.variant,
        "path": str(kernel.path),
        "prebuilt": kernel.path.parent.name == "_lib",
        "vector_width": kernel.vector_width,
        "tile_points": kernel.tile_points,
    }


@contextmanager
def use_variant(variant: str) -> Iterator[None]:
    """Run the kernel's ``variant`` (``"generic"``, ``"avx2"``, ``"avx512"``) inside the block.

    For tests and benchmarks that compare the instruction-set variants on one machine.

    Raises:
        pcflow._native.NativeBuildError: this CPU cannot run the variant, or it cannot be had.
    """
    global _kernel, _failure
    saved = (_kernel, _failure)
    _kernel, _failure = _Kernel(variant), None
    try:
        yield
    finally:
        _kernel, _failure = saved


def kernel_takes(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernel takes points of this dtype on this device now.

    Float32 on the CPU, outside autocast (mixed precision asks for the PyTorch path's
    lower-precision products), with the kernel loaded and turned on.
    """
    return (
        dtype == torch.float32
        and device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and fused_available()
    )


def declares_kernel_map(layer: object) -> bool:
    """Whether ``layer`` declares that it computes exactly the kernel's map.

    The kernel computes `pcflow.transforms.PointAffineCoupling`'s map from the weights the
    layer exports (`PointAffineCoupling.weights`), with its softsign bound. It stands in only
    for a layer whose own class declares ``fused_kernel = True`` in its body (see
    `pcflow.transforms.PointCoupling.fused_kernel`): a subclass that changes any part of the
    map, and does not declare it again, runs on the PyTorch path with its own map.

    Arguments:
        layer: Any transform.

    Example:
        >>> import torch
        >>> from pcflow.transforms import PointAffineCoupling
        >>> class TanhBound(PointAffineCoupling):
        ...     def bound(self, raw):
        ...         return torch.tanh(raw) * self.max_log_scale
        >>> declares_kernel_map(PointAffineCoupling([1, 0, 0], 8, 16))
        True
        >>> declares_kernel_map(TanhBound([1, 0, 0], 8, 16))
        False
    """
    return (
        isinstance(layer, PointAffineCoupling)
        and type(layer).__dict__.get("fused_kernel", False) is True
        and type(layer.networks) is PointNetworks
    )


def _fusable(layer: Transform) -> bool:
    if not declares_kernel_map(layer):
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


# ------------------------------------------------------------------------ the registered ops
def _check_operands(inputs: Tensor, layout: Tensor, weights: Sequence[Tensor]) -> None:
    if inputs.dtype != torch.float32 or inputs.device.type != "cpu" or inputs.dim() != 3:
        raise ValueError(
            f"points must be float32 (B, N, D) on the CPU, got {inputs.dtype} "
            f"{tuple(inputs.shape)} on {inputs.device}"
        )
    if layout.dtype != torch.int32 or layout.dim() != 2:
        raise ValueError(
            f"layout must be int32 (L, 1 + D), got {layout.dtype} {tuple(layout.shape)}"
        )
    for name, weight in zip((*_WEIGHTS, "bound"), weights, strict=True):
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError(
                f"{name} must be float32 on the CPU, got {weight.dtype} on {weight.device}"
            )


def _describe(inputs: Tensor, layout: Tensor, weights: Sequence[Tensor]) -> _Couplings:
    batch, num_points, features = inputs.shape
    stack = _Couplings(
        layout.shape[0], batch, num_points, features, weights[2].shape[-1], layout.data_ptr()
    )
    stack.layout_size = layout.numel()
    for name, weight in zip((*_WEIGHTS, "bound"), weights, strict=True):
        setattr(stack, name, weight.data_ptr())
        setattr(stack, f"{name}_size", weight.numel())
    return stack


def _raise(status: int, message: ctypes.Array) -> None:
    text = f"pcflow fused coupling kernel: {message.value.decode(errors='replace')}"
    raise (ValueError if status == 1 else MemoryError if status == 2 else RuntimeError)(text)


def _num_checkpoints(num_layers: int, every: int) -> int:
    return (num_layers - 1) // every if every > 0 else 0


def _forward(
    inputs: Tensor, layout: Tensor, weights: list[Tensor], inverse: bool, checkpoint_every: int
) -> tuple[Tensor, Tensor, Tensor]:
    kernel = _load()
    if kernel is None:
        raise RuntimeError(f"pcflow's fused coupling kernel is unavailable: {_failure}")
    weights = [w.contiguous() for w in weights]
    inputs, layout = inputs.contiguous(), layout.contiguous()
    _check_operands(inputs, layout, weights)
    batch, num_points, features = inputs.shape
    outputs = torch.empty_like(inputs)
    logabsdet = inputs.new_empty(batch, num_points)
    checkpoints = inputs.new_empty(
        _num_checkpoints(layout.shape[0], checkpoint_every), batch, num_points, features
    )
    if outputs.numel() == 0:  # no points: nothing to transform, and no buffers to hand over
        return outputs, logabsdet.zero_(), checkpoints
    message = ctypes.create_string_buffer(1024)
    status = kernel.forward(
        ctypes.byref(_describe(inputs, layout, weights)),
        inputs.data_ptr(),
        outputs.data_ptr(),
        logabsdet.data_ptr(),
        checkpoints.data_ptr() if checkpoints.numel() else None,
        checkpoint_every,
        checkpoints.numel(),
        int(inverse),
        torch.get_num_threads(),
        message,
        len(message),
    )
    if status:
        _raise(status, message)
    return outputs, logabsdet, checkpoints


@torch.library.custom_op("pcflow::affine_couplings", mutates_args=(), device_types="cpu")
def affine_couplings(
    inputs: Tensor,
    layout: Tensor,
    w1: Tensor,
    b1: Tensor,
    wh: Tensor,
    fs: Tensor,
    fb: Tensor,
    wl: Tensor,
    bl: Tensor,
    bound: Tensor,
    inverse: bool,
    checkpoint_every: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """A stack of couplings on points `(B, N, D)`: outputs, logabsdet `(B, N)`, checkpoints.

    Checkpoints `(C, B, N, D)`, ``C = (L - 1) // checkpoint_every`` (none for 0), are the points
    the backward pass restarts from.
    """
    return _forward(inputs, layout, [w1, b1, wh, fs, fb, wl, bl, bound], inverse, checkpoint_every)


@affine_couplings.register_fake
def _(inputs, layout, w1, b1, wh, fs, fb, wl, bl, bound, inverse, checkpoint_every):
    batch, num_points, features = inputs.shape
    count = _num_checkpoints(layout.shape[0], checkpoint_every)
    return (
        torch.empty_like(inputs),
        inputs.new_empty(batch, num_points),
        inputs.new_empty(count, batch, num_points, features),
    )


def _backward_kernel(
    outputs: Tensor,
    checkpoints: Tensor,
    grad_outputs: Tensor,
    grad_logabsdet: Tensor,
    layout: Tensor,
    weights: list[Tensor],
    inverse: bool,
    checkpoint_every: int,
) -> list[Tensor]:
    kernel = _load()
    if kernel is None:
        raise RuntimeError(f"pcflow's fused coupling kernel is unavailable: {_failure}")
    weights = [w.contiguous() for w in weights]
    outputs, layout = outputs.contiguous(), layout.contiguous()
    _check_operands(outputs, layout, weights)
    grad_outputs = grad_outputs.to(torch.float32).contiguous()
    grad_logabsdet = grad_logabsdet.to(torch.float32).contiguous()
    checkpoints = checkpoints.contiguous()
    if grad_outputs.shape != outputs.shape or grad_logabsdet.shape != outputs.shape[:2]:
        raise ValueError("gradients must be shaped like the outputs (B, N, D) and (B, N)")
    if outputs.numel() == 0:  # no points: no point depends on any weight
        return [torch.empty_like(outputs), *(torch.zeros_like(w) for w in weights[:-1])]
    grads = [torch.empty_like(outputs), *(torch.empty_like(w) for w in weights[:-1])]
    buffers = (ctypes.c_void_p * len(grads))(*(g.data_ptr() for g in grads))
    message = ctypes.create_string_buffer(1024)
    status = kernel.backward(
        ctypes.byref(_describe(outputs, layout, weights)),
        outputs.data_ptr(),
        checkpoints.data_ptr() if checkpoints.numel() else None,
        checkpoint_every,
        checkpoints.numel(),
        grad_outputs.data_ptr(),
        grad_logabsdet.data_ptr(),
        int(inverse),
        torch.get_num_threads(),
        buffers,
        message,
        len(message),
    )
    if status:
        _raise(status, message)
    return grads


@torch.library.custom_op("pcflow::affine_couplings_backward", mutates_args=(), device_types="cpu")
def affine_couplings_backward(
    outputs: Tensor,
    checkpoints: Tensor,
    grad_outputs: Tensor,
    grad_logabsdet: Tensor,
    layout: Tensor,
    w1: Tensor,
    b1: Tensor,
    wh: Tensor,
    fs: Tensor,
    fb: Tensor,
    wl: Tensor,
    bl: Tensor,
    bound: Tensor,
    inverse: bool,
    checkpoint_every: int,
) -> list[Tensor]:
    """Gradients of `affine_couplings` in (inputs, w1, b1, wh, fs, fb, wl, bl), from its outputs."""
    weights = [w1, b1, wh, fs, fb, wl, bl, bound]
    return _backward_kernel(
        outputs,
        checkpoints,
        grad_outputs,
        grad_logabsdet,
        layout,
        weights,
        inverse,
        checkpoint_every,
    )


@affine_couplings_backward.register_fake
def _(outputs, checkpoints, grad_outputs, grad_logabsdet, layout, *weights_and_flags):
    *weights, _bound, _inverse, _every = weights_and_flags
    return [torch.empty_like(outputs), *(torch.empty_like(w) for w in weights)]


def _setup_context(ctx, inputs, output) -> None:
    _, layout, *weights, inverse, every = inputs
    outputs, _, checkpoints = output
    ctx.save_for_backward(outputs, checkpoints, layout, *weights)
    ctx.inverse, ctx.every = inverse, every


def _backward(ctx, grad_outputs, grad_logabsdet, _grad_checkpoints):
    outputs, checkpoints, layout, *weights = ctx.saved_tensors
    grads = affine_couplings_backward(
        outputs, checkpoints, grad_outputs, grad_logabsdet, layout, *weights, ctx.inverse, ctx.every
    )
    # inputs, layout, w1 .. bl, bound, inverse, checkpoint_every
    return grads[0], None, *grads[1:], None, None, None


affine_couplings.register_autograd(_backward, setup_context=_setup_context)


class _EagerCouplings(torch.autograd.Function):
    """The same kernels in eager mode, without the dispatcher's first-call cost (which
    imports torch._dynamo, seconds on a cold start)."""

    @staticmethod
    def forward(ctx, inputs, layout, inverse, every, *weights):  # type: ignore[override]
        outputs, logabsdet, checkpoints = _forward(inputs, layout, list(weights), inverse, every)
        ctx.save_for_backward(outputs, checkpoints, layout, *weights)
        ctx.inverse, ctx.every = inverse, every
        ctx.mark_non_differentiable(checkpoints)
        return outputs, logabsdet, checkpoints

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_outputs, grad_logabsdet, _grad_checkpoints):  # type: ignore[override]
        outputs, checkpoints, layout, *weights = ctx.saved_tensors
        grads = _backward_kernel(
            outputs, checkpoints, grad_outputs, grad_logabsdet, layout, weights, ctx.inverse,
            ctx.every,
        )  # fmt: skip
        # inputs, layout, inverse, every, w1 .. bl, bound
        return grads[0], None, None, None, *grads[1:], None


def couplings(
    inputs: Tensor, layout: Tensor, weights: Sequence[Tensor], inverse: bool, every: int
) -> tuple[Tensor, Tensor, Tensor]:
    """`affine_couplings` under `torch.compile` and `torch.export`; the same kernels eagerly."""
    if torch.compiler.is_compiling():
        return affine_couplings(inputs, layout, *weights, inverse, every)
    return _EagerCouplings.apply(inputs, layout, inverse, every, *weights)


# ----------------------------------------------------------------------------- the layers
def _film(
    weights: list[AffineCouplingWeights], context: Tensor | None, batch: int
) -> tuple[Tensor, Tensor]:
    """FiLM scale and folded bias of every layer's hidden layer, each `(L, 2, B, H)`."""
    hidden_biases = [w.hidden_bias for w in weights]
    if context is not None and weights[0].film is not None:
        return film_terms([w.film for w in weights], hidden_biases, context, batch)
    # Layers without a context: the hidden layer's own bias, no modulation.
    num, hidden = len(weights), weights[0].hidden_weight.shape[-1]
    hidden_bias = torch.cat(hidden_biases).view(num, 2, 1, hidden)
    scale = torch.ones(num, 2, batch, hidden, dtype=hidden_bias.dtype)
    return scale, hidden_bias.expand(num, 2, batch, hidden)


def _stack(layers: list[PointAffineCoupling], inputs: Tensor, context: Tensor | None):
    """The kernel's operands: layout, weights (as stored, concatenated), FiLM terms, bounds."""
    weights = [layer.weights for layer in layers]
    num, hidden = len(weights), weights[0].hidden_weight.shape[-1]
    layout = torch.tensor(
        [[len(w.transformed), *w.transformed, *w.identity] for w in weights], dtype=torch.int32
    )
    scale, bias = _film(weights, context, inputs.shape[0])
    return (
        layout,
        torch.cat([w.first_weight.reshape(-1) for w in weights]),  # per layer (2, ni, H)
        torch.cat([w.first_bias for w in weights]).view(num, 2, hidden),
        torch.cat([w.hidden_weight for w in weights]).view(num, 2, hidden, hidden),
        scale.contiguous(),
        bias.contiguous(),
        torch.cat([w.last_weight.reshape(-1) for w in weights]),  # per layer (2, H, nt)
        torch.cat([w.last_bias.reshape(-1) for w in weights]),  # per layer (2, nt)
        torch.tensor([w.max_log_scale for w in weights], dtype=torch.float32),
    )


def run_fused(
    layers: list[PointAffineCoupling], inputs: Tensor, context: Tensor | None, inverse: bool
) -> tuple[Tensor, Tensor] | None:
    """Run a stack of couplings with the kernel; ``None`` when the kernel cannot take the call.

    Under autograd the result is differentiable in the points, the context and every layer's
    parameters: the backward pass rebuilds each layer's inputs from its outputs, restarting
    from points kept every `CHECKPOINT_EVERY` layers, instead of storing activations.

    Arguments:
        layers: Consecutive `PointAffineCoupling` layers (a group from `fused_groups`), in
            the data-to-noise order.
        inputs: Points `(B, N, D)`.
        context: Per-shape context `(B, C)`, or ``None``; layers without a context ignore it.
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
    layout, *weights = _stack(layers, inputs, context)
    if any(w.dtype != torch.float32 for w in weights):
        return None  # e.g. a float64 context
    needs_grad = torch.is_grad_enabled() and (
        inputs.requires_grad or any(w.requires_grad for w in weights)
    )
    every = CHECKPOINT_EVERY if needs_grad else 0
    outputs, logabsdet, _ = couplings(inputs, layout, weights, inverse, every)
    return outputs, logabsdet
