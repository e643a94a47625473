"""Chamfer distance per shape under the evaluation convention of PointFlow and FlowGAN."""

from __future__ import annotations

import torch
from torch import Tensor

from pcflow.losses.chamfer import chamfer_distance

__all__ = ["chamfer_per_shape"]


def chamfer_per_shape(
    pred: Tensor,
    gt: Tensor,
    pred_lengths: Tensor | None = None,
    gt_lengths: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Chamfer distance of each predicted set to its ground truth, for evaluation tables.

    The convention of PointFlow's, DPF-Nets' and FlowGAN's evaluation code: squared Euclidean
    nearest-neighbour distances, averaged over each cloud's points in both directions, the two
    directions summed; average the result over shapes for a table. Evaluate on clouds at the
    scale the paper states (FlowGAN: 2,500 points per shape, meshes centred and scaled into the
    unit sphere, training clouds divided by 2 multiplied back first). Papers often print the value
    times ``10^3`` or ``10^4``; some use unsquared distances or sums over points instead: check
    before comparing numbers.

    Computed without gradient; for a training loss use ``pcflow.losses.chamfer_distance``
    (the same value with ``batch_reduction=None``).

    Arguments:
        pred: ``(B, N, D)`` predicted point sets.
        gt: ``(B, M, D)`` ground-truth point sets.
        pred_lengths: ``(B,)`` valid sizes of padded predicted sets, or ``None``.
        gt_lengths: ``(B,)`` valid sizes of padded ground-truth sets, or ``None``.
        backend: Nearest-neighbour backend, see ``pcflow.ops.knn_points``.

    Returns:
        ``(B,)`` Chamfer distances.

    Example:
        >>> import torch
        >>> from pcflow.metrics import chamfer_per_shape
        >>> gt = torch.rand(3, 2500, 3)
        >>> chamfer_per_shape(gt, gt)
        tensor([0., 0., 0.])
    """
    with torch.no_grad():
        loss, _ = chamfer_distance(
            pred,
            gt,
            x_lengths=pred_lengths,
            y_lengths=gt_lengths,
            batch_reduction=None,
            backend=backend,
        )
    return loss
