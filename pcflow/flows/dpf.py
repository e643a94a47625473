"""The point decoder of DPF-Nets and FlowGAN: 21 blocks of 3 FiLM-conditioned couplings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nflows.transforms import CompositeTransform, Transform

from pcflow.flows.base import ConditionalPointFlow, FreeVariancePointNormal
from pcflow.transforms import PointAffineCoupling, PointSplineCoupling

__all__ = ["DPF_MASKS", "dpf_flow"]

# The couplings dpf_flow knows by name (a recipe's configuration names them).
_COUPLINGS: dict[str, type[Transform]] = {
    "affine": PointAffineCoupling,
    "spline": PointSplineCoupling,
}

DPF_MASKS: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    ((1, 1, 0), (1, 0, 1), (0, 1, 1)),
)
"""The two block patterns of DPF-Nets: block ``i`` uses ``DPF_MASKS[i % 2]`` (1 = transformed).

Pattern 0 transforms x, then y, then z, each given the other two coordinates; pattern 1
transforms (x, y) given z, then (x, z) given y, then (y, z) given x.
"""


def dpf_flow(
    context_features: int = 512,
    num_layers: int = 63,
    hidden_features: int = 64,
    coupling: str | Callable[..., Transform] = "affine",
    memory_efficient: bool = False,
    base: str = "normal",
    **coupling_kwargs: Any,
) -> ConditionalPointFlow:
    """Build the conditional point flow of DPF-Nets / FlowGAN over 3D points.

    Layer ``j`` is coupling ``j % 3`` of block ``j // 3``, with the masks of `DPF_MASKS`. The
    defaults are the paper's: a 512-feature shape latent, 21 blocks of 3 couplings (63 layers),
    per-point networks of width 64, and a standard normal base over points (``base="freevar"``
    for the public configuration's per-shape variance). Unlike DPF-Nets,
    the couplings have no BatchNorm (it would make each point depend on the others).

    Arguments:
        context_features: Size ``C`` of the shape latent.
        num_layers: Number of coupling layers (any positive number; 63 in the paper).
        hidden_features: Width of the couplings' per-point networks.
        coupling: The coupling layers: ``"affine"`` (`PointAffineCoupling`, the paper's),
            ``"spline"`` (`PointSplineCoupling`), or any coupling class or factory called as
            ``coupling(mask, context_features=C, hidden_features=H, **coupling_kwargs)``
            that returns a point transform of 3 coordinates (e.g. a subclass of
            `pcflow.transforms.PointCoupling`).
        memory_efficient: Recompute activations during backward instead of storing them
            (bounded training memory for about one extra forward pass of time) on the
            PyTorch path. Affine flows on float32 CPU tensors run on the fused kernel
            (`pcflow.flows.fused`), which always recomputes and is faster either way.
        base: ``"normal"`` (a standard normal over points, `StandardPointNormal`) or
            ``"freevar"`` (DPF-Nets' base: zero mean, a per-shape scale per coordinate from a
            linear layer of the latent, `FreeVariancePointNormal`).
        **coupling_kwargs: Passed to every coupling (e.g. ``max_log_scale``, ``num_bins``).

    Returns:
        A `ConditionalPointFlow` whose ``log_prob(points (B, N, 3), z (B, C))`` is `(B,)`.

    References:
        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020.
        Wei, Vosselman, Yang. "Flow-based GAN for 3D Point Cloud Generation from a Single
        Image." BMVC 2022.

    Example:
        >>> import torch
        >>> flow = dpf_flow(context_features=16, num_layers=6, hidden_features=32)
        >>> z = torch.randn(2, 16)
        >>> flow.sample(1000, z).shape
        torch.Size([2, 1000, 3])

        Any coupling class (or factory) takes the couplings' place:

        >>> from pcflow.transforms import PointAffineCoupling
        >>> class TanhBound(PointAffineCoupling):
        ...     def bound(self, raw):
        ...         return torch.tanh(raw) * self.max_log_scale
        >>> flow = dpf_flow(context_features=16, num_layers=3, coupling=TanhBound)
        >>> [type(layer).__name__ for layer in flow.layers]
        ['TanhBound', 'TanhBound', 'TanhBound']
    """
    if isinstance(coupling, str):
        if coupling not in _COUPLINGS:
            raise ValueError(
                f"coupling must be one of {sorted(_COUPLINGS)} or a coupling class or factory, "
                f"got {coupling!r}"
            )
        make_layer = _COUPLINGS[coupling]
    elif callable(coupling):
        make_layer = coupling
    else:
        raise TypeError(
            "coupling must be 'affine', 'spline', or a coupling class or factory "
            f"(mask, context_features, hidden_features, **kwargs) -> layer, got {coupling!r}"
        )
    if base not in ("normal", "freevar"):
        raise ValueError(f"base must be 'normal' or 'freevar', got {base!r}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if (
        isinstance(hidden_features, bool)
        or not isinstance(hidden_features, int)
        or hidden_features < 1
    ):
        raise ValueError(f"hidden_features must be a positive integer, got {hidden_features!r}")
    if context_features is not None and (
        isinstance(context_features, bool)
        or not isinstance(context_features, int)
        or context_features < 1
    ):
        raise ValueError(
            f"context_features must be a positive integer or None, got {context_features!r}"
        )
    layers = [
        make_layer(
            DPF_MASKS[(j // 3) % 2][j % 3],
            context_features=context_features,
            hidden_features=hidden_features,
            **coupling_kwargs,
        )
        for j in range(num_layers)
    ]
    for j, layer in enumerate(layers):
        if not isinstance(layer, Transform) or getattr(layer, "features", 3) != 3:
            raise TypeError(
                f"coupling {coupling!r} must make point transforms of 3 coordinates (nflows "
                f"Transforms); layer {j} is {type(layer).__name__} with features="
                f"{getattr(layer, 'features', None)}"
            )
    distribution = FreeVariancePointNormal(3, context_features) if base == "freevar" else None
    return ConditionalPointFlow(
        CompositeTransform(layers), distribution, memory_efficient=memory_efficient
    )
