"""Chamfer distance per shape under the evaluation convention of PointFlow and FlowGAN."""

from __future__ import annotations

import torch
from torch import Tensor

from pcflow._checks import check_lengths, check_points, check_same_batch
from pcflow.ops.knn import (
    check_distances_finite,
    distances_from_indices,
    nearest_neighbours,
    resolve_backend,
)
from pcflow.utils._deprecation import renamed_argument

__all__ = ["chamfer_per_shape"]


def chamfer_per_shape(
    pred: Tensor,
    gt: Tensor,
    lengths1: Tensor | None = None,
    lengths2: Tensor | None = None,
    backend: str = "auto",
    *,
    pred_lengths: Tensor | None = None,
    gt_lengths: Tensor | None = None,
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
        lengths1: ``(B,)`` valid sizes of padded predicted sets, or ``None``.
        lengths2: ``(B,)`` valid sizes of padded ground-truth sets, or ``None``.
        backend: Nearest-neighbour backend, see ``pcflow.ops.knn_points`` (``"pytorch3d"``
            searches with the KD-tree or brute force here).
        pred_lengths: Deprecated name of ``lengths1``.
        gt_lengths: Deprecated name of ``lengths2``.

    Returns:
        ``(B,)`` Chamfer distances.

    Example:
        >>> import torch
        >>> from pcflow.metrics import chamfer_per_shape
        >>> gt = torch.rand(3, 2500, 3)
        >>> chamfer_per_shape(gt, gt)
        tensor([0., 0., 0.])
    """
    pred_lengths = renamed_argument(
        "chamfer_per_shape", "pred_lengths", pred_lengths, "lengths1", lengths1
    )
    gt_lengths = renamed_argument(
        "chamfer_per_shape", "gt_lengths", gt_lengths, "lengths2", lengths2
    )
    batch, num_pred, dim = check_points("pred", pred)
    _, num_gt, _ = check_points("gt", gt, dim)
    check_same_batch("pred", pred, "gt", gt)
    check_lengths("lengths1", pred_lengths, batch, num_pred)
    check_lengths("lengths2", gt_lengths, batch, num_gt)
    if pred.device != gt.device or pred.dtype != gt.dtype:
        raise ValueError(
            f"pred and gt must share device and dtype, got {pred.device}/{pred.dtype} and "
            f"{gt.device}/{gt.dtype}"
        )
    backend = resolve_backend(backend, pred.device, num_pred, num_gt)
    if backend == "pytorch3d":
        backend = resolve_backend("auto", torch.device("cpu"), num_pred, num_gt)
    with torch.no_grad():
        if pred_lengths is None:
            pred_lengths = torch.full((batch,), num_pred, device=pred.device)
        if gt_lengths is None:
            gt_lengths = torch.full((batch,), num_gt, device=pred.device)
        pred_lengths, gt_lengths = pred_lengths.to(pred.device), gt_lengths.to(pred.device)
        idx_pg, idx_gp = nearest_neighbours(pred, gt, pred_lengths, gt_lengths, 2, False, backend)
        to_gt, _ = distances_from_indices(pred, gt, idx_pg, pred_lengths, gt_lengths, 2)
        to_pred, _ = distances_from_indices(gt, pred, idx_gp, gt_lengths, pred_lengths, 2)
        check_distances_finite("pred", pred, "gt", gt, to_gt)
        check_distances_finite("pred", pred, "gt", gt, to_pred)
        return to_gt[..., 0].sum(1) / pred_lengths + to_pred[..., 0].sum(1) / gt_lengths
