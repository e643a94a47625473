"""The eager PyTorch engine of affine couplings: points in cache-sized blocks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pcflow.transforms.film import PointNetworks

__all__ = ["affine_coupling", "affine_map"]


def affine_map(
    inputs: Tensor, shift: Tensor, log_scale: Tensor, inverse: bool
) -> tuple[Tensor, Tensor]:
    """``y = x exp(s) + t`` and ``log|det| = sum s``, or the inverse ``x = (y - t) exp(-s)``.

    Arguments:
        inputs: Points `(B, N, D)`.
        shift: ``t`` `(B, N, D)`, zero on the conditioning coordinates.
        log_scale: ``s`` `(B, N, D)`, zero on the conditioning coordinates.
        inverse: Apply the inverse map.

    Returns:
        ``(outputs (B, N, D), logabsdet (B, N))``.
    """
    if inverse:
        return (inputs - shift) * torch.exp(-log_scale), -log_scale.sum(2)
    return torch.addcmul(shift, inputs, torch.exp(log_scale)), log_scale.sum(2)


def affine_coupling(
    networks: PointNetworks,
    bound: Callable[[Tensor], Tensor],
    transformed: Tensor,
    inputs: Tensor,
    context: Tensor | None,
    inverse: bool,
) -> tuple[Tensor, Tensor]:
    """An affine coupling's map (or its inverse) on points `(B, N, D)`: outputs, logabsdet `(B, N)`.

    The FiLM terms are folded into per-shape weights once; then the points go through both
    networks and the affine map in blocks of about a core's L2 cache
    (`PointNetworks.chunks`), one shape's slice of points or a group of whole shapes at a time.

    Arguments:
        networks: The coupling's two networks: shift ``t`` and raw log-scale ``u``, one output
            per transformed coordinate each.
        bound: The log-scale ``s = bound(u)``, elementwise.
        transformed: The transformed coordinates (int64 indices), one per network output.
        inputs: Points `(B, N, D)`.
        context: Per-shape context `(B, C)`, or ``None``.
        inverse: Apply the inverse map.
    """
    net = networks
    terms = net.prepare(inputs, context, out_index=transformed)
    blocks = net.chunks(inputs)
    per_shape = len(blocks) > 1 and blocks[0][1] - blocks[0][0] == 1
    split = net.split(terms) if per_shape else None
    outputs, logabsdets = [], []
    for b0, b1, s0, s1 in blocks:
        points = inputs[b0:b1, s0:s1] if len(blocks) > 1 else inputs
        if per_shape:
            shift, raw = net.evaluate_shape(split, points[0], b0)
        else:
            shift, raw = net.evaluate(terms, points, b0)
        shift, log_scale = shift.view(points.shape), bound(raw.view(points.shape))
        block, logabsdet = affine_map(points, shift, log_scale, inverse)
        outputs.append(block)
        logabsdets.append(logabsdet)
    if len(blocks) == 1:
        return outputs[0], logabsdets[0]
    # Blocks run shape-major, so their flattened rows are the (B * N) rows in order.
    batch, num_points, features = inputs.shape
    flat = torch.cat([o.reshape(-1, features) for o in outputs])
    return flat.view(batch, num_points, features), torch.cat(
        [o.reshape(-1) for o in logabsdets]
    ).view(batch, num_points)
