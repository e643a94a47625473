"""Chamfer distance between batches of point sets, a drop-in for PyTorch3D's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pcflow._checks import check_finite, check_lengths, check_points, check_same_batch
from pcflow.ops.knn import (
    check_distances_finite,
    distances_from_indices,
    knn_gather,
    nearest_neighbours,
    resolve_backend,
)

__all__ = ["chamfer_distance"]

_POINT_REDUCTIONS = ("mean", "sum", "max", None)
_BATCH_REDUCTIONS = ("mean", "sum", None)


def chamfer_distance(
    x: Tensor,
    y: Tensor,
    lengths1: Tensor | None = None,
    lengths2: Tensor | None = None,
    x_normals: Tensor | None = None,
    y_normals: Tensor | None = None,
    weights: Tensor | None = None,
    batch_reduction: str | None = "mean",
    point_reduction: str | None = "mean",
    norm: int = 2,
    single_directional: bool = False,
    abs_cosine: bool = True,
    backend: str = "auto",
    *,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
) -> tuple[Tensor | tuple[Tensor, Tensor], Tensor | tuple[Tensor, Tensor] | None]:
    """Chamfer distance between two batches of point sets, as ``pytorch3d.loss.chamfer_distance``.

    Same arguments, semantics and return value as PyTorch3D's (0.7.9), plus ``backend``; the
    lengths are named ``lengths1`` and ``lengths2`` as everywhere in pcflow (third and fourth,
    PyTorch3D's positions), and PyTorch3D's keywords ``x_lengths`` and ``y_lengths`` are
    accepted for them. For
    each point of ``x`` the distance to its nearest neighbour in ``y`` (squared Euclidean for
    ``norm=2``, L1 for ``norm=1``), reduced over points, and the same from ``y`` to ``x``; the two
    directions are added. With the defaults, per shape:

    $$ \\mathrm{CD}(X, Y) = \\frac{1}{|X|}\\sum_{x \\in X} \\min_{y \\in Y} \\|x - y\\|^2
    + \\frac{1}{|Y|}\\sum_{y \\in Y} \\min_{x \\in X} \\|x - y\\|^2 $$

    then the mean over the batch. This is the evaluation convention of PointFlow, DPF-Nets and
    FlowGAN too (squared distances, means, sum of both directions), on clouds at the scale the
    paper states (for FlowGAN: unit sphere); note that some papers report the sum over points,
    unsquared distances, or the value times ``10^3`` or ``10^4``.

    Nearest neighbours come from ``pcflow.ops.knn_points``' backends (KD-tree for large CPU
    sets, memory-bounded brute-force tiles otherwise, PyTorch3D when asked for or on CUDA when
    installed); the distances are recomputed in torch from the found indices, so the gradient is
    exact autograd (a point's gradient flows to its nearest neighbour only). On CPU two clouds of
    100,000 points take well under a second, both directions with the backward pass.

    Where it departs from PyTorch3D: inputs are tensors (for a ``Pointclouds`` pass
    ``points_padded()``, ``num_points_per_cloud()`` and ``normals_padded()``); empty sets (a
    length of 0) and NaN or infinite values raise a ``ValueError`` instead of giving a silent
    zero or NaN; the zero-weights case returns documented shapes (below).

    Half precision: float16 and bfloat16 clouds are searched in float32 and their distances
    computed in their own dtype. Where a nearest-neighbour distance between finite points
    overflows that dtype (float16 tops out at 65,504, so points more than about 256 apart for
    ``norm=2``), this raises ``ValueError`` naming ``x``, ``y`` and the dtype rather than
    returning ``inf`` (as Kaolin does): pass float32 or float64 tensors, or rescale the clouds.

    Arguments:
        x: ``(B, N, D)`` point sets, padded when ``lengths1`` is given.
        y: ``(B, M, D)`` point sets, padded when ``lengths2`` is given.
        lengths1: ``(B,)`` integer number of valid points per set of ``x``, in ``[1, N]``.
        lengths2: ``(B,)`` integer number of valid points per set of ``y``, in ``[1, M]``.
        x_normals: ``(B, N, D)`` normals of ``x``; with ``y_normals`` adds the normal term.
        y_normals: ``(B, M, D)`` normals of ``y``.
        weights: ``(B,)`` non-negative weights of the batch elements; ``"mean"`` batch reduction
            then divides by their sum.
        batch_reduction: ``"mean"``, ``"sum"`` or ``None`` (one value per shape, ``(B,)``).
        point_reduction: ``"mean"``, ``"sum"``, ``"max"`` (the Hausdorff distance; no normals)
            or ``None`` (per-point values; then ``batch_reduction`` must be ``None``).
        norm: ``2`` (squared Euclidean distances) or ``1`` (L1 distances).
        single_directional: Only the term from ``x`` to ``y``.
        abs_cosine: The normal term is ``1 - |cos|`` (orientation ignored) if ``True``, else
            ``1 - cos``.
        backend: ``"auto"``, ``"bruteforce"``, ``"kdtree"`` or ``"pytorch3d"`` (delegates the
            whole computation to ``pytorch3d.loss.chamfer_distance``); see
            ``pcflow.ops.knn_points``.
        x_lengths: PyTorch3D's name of ``lengths1`` (keyword-only).
        y_lengths: PyTorch3D's name of ``lengths2`` (keyword-only).

    Returns:
        ``(loss, loss_normals)``. ``loss`` is a scalar (batch reduction), ``(B,)`` (no batch
        reduction), or, with ``point_reduction=None``, the per-point terms: a pair ``((B, N),
        (B, M))``, or ``(B, N)`` alone when ``single_directional``. ``loss_normals`` is the normal
        term reduced the same way, or ``None`` without normals. Padded points contribute zero.
        Where the ``weights`` sum to zero, both are zeros of those shapes (PyTorch3D returns
        broadcast ``(B, B)`` zeros there, and a zero normal term even without normals).

    Example:
        >>> import torch
        >>> from pcflow.losses import chamfer_distance
        >>> x, y = torch.rand(4, 2048, 3), torch.rand(4, 1024, 3)
        >>> loss, _ = chamfer_distance(x, y)
        >>> per_shape, _ = chamfer_distance(x, y, batch_reduction=None)
        >>> per_shape.shape
        torch.Size([4])
    """
    x_lengths = _one_of("lengths1", lengths1, "x_lengths", x_lengths)
    y_lengths = _one_of("lengths2", lengths2, "y_lengths", y_lengths)
    _check_arguments(
        x,
        y,
        x_lengths,
        y_lengths,
        x_normals,
        y_normals,
        weights,
        batch_reduction,
        point_reduction,
        norm,
    )
    batch, num_x, _ = x.shape
    num_y = y.shape[1]
    backend = resolve_backend(backend, x.device, num_x, num_y, norm)
    if backend == "pytorch3d":
        from pytorch3d.loss import chamfer_distance as chamfer_distance_pytorch3d

        return chamfer_distance_pytorch3d(
            x,
            y,
            x_lengths=x_lengths,
            y_lengths=y_lengths,
            x_normals=x_normals,
            y_normals=y_normals,
            weights=weights,
            batch_reduction=batch_reduction,
            point_reduction=point_reduction,
            norm=norm,
            single_directional=single_directional,
            abs_cosine=abs_cosine,
        )
    x_lengths = _full_lengths(x_lengths, batch, num_x, x.device)
    y_lengths = _full_lengths(y_lengths, batch, num_y, x.device)
    return_normals = x_normals is not None and y_normals is not None

    if weights is not None and float(weights.sum()) == 0.0:
        return _zero_result(
            x, y, batch_reduction, point_reduction, single_directional, return_normals
        )

    idx_xy, idx_yx = nearest_neighbours(
        x, y, x_lengths, y_lengths, norm, single_directional, backend
    )
    cham_x, normals_x = _one_direction(
        x,
        y,
        x_lengths,
        y_lengths,
        x_normals,
        y_normals,
        idx_xy,
        weights,
        point_reduction,
        norm,
        abs_cosine,
        return_normals,
    )
    if single_directional:
        loss, loss_normals = cham_x, normals_x
    else:
        cham_y, normals_y = _one_direction(
            y,
            x,
            y_lengths,
            x_lengths,
            y_normals,
            x_normals,
            idx_yx,
            weights,
            point_reduction,
            norm,
            abs_cosine,
            return_normals,
        )
        if point_reduction is None:
            loss = (cham_x, cham_y)
            loss_normals = (normals_x, normals_y) if return_normals else None
        elif point_reduction == "max":
            loss, loss_normals = torch.maximum(cham_x, cham_y), None
        else:
            loss = cham_x + cham_y
            loss_normals = normals_x + normals_y if return_normals else None
    return _reduce_batch(loss, weights, batch_reduction), _reduce_batch(
        loss_normals, weights, batch_reduction
    )


def _check_arguments(
    x: Tensor,
    y: Tensor,
    x_lengths: Tensor | None,
    y_lengths: Tensor | None,
    x_normals: Tensor | None,
    y_normals: Tensor | None,
    weights: Tensor | None,
    batch_reduction: str | None,
    point_reduction: str | None,
    norm: int,
) -> None:
    if batch_reduction not in _BATCH_REDUCTIONS:
        raise ValueError(f"batch_reduction must be 'mean', 'sum' or None, got {batch_reduction!r}")
    if point_reduction not in _POINT_REDUCTIONS:
        raise ValueError(
            f"point_reduction must be 'mean', 'sum', 'max' or None, got {point_reduction!r}"
        )
    if point_reduction is None and batch_reduction is not None:
        raise ValueError(
            "batch_reduction must be None when point_reduction is None (per-point values "
            f"cannot be reduced over the batch), got batch_reduction={batch_reduction!r}"
        )
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 (L1) or 2 (squared Euclidean), got {norm!r}")
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError("point_reduction='max' does not support normals; pass no normals")
    batch, num_x, dim = check_points("x", x)
    _, num_y, _ = check_points("y", y, dim)
    check_same_batch("x", x, "y", y)
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"x has dtype {x.dtype} but y has dtype {y.dtype}")
    check_lengths("lengths1", x_lengths, batch, num_x)
    check_lengths("lengths2", y_lengths, batch, num_y)
    for name, normals, points in (("x_normals", x_normals, x), ("y_normals", y_normals, y)):
        if normals is not None and (
            not isinstance(normals, Tensor) or normals.shape != points.shape
        ):
            got = tuple(normals.shape) if isinstance(normals, Tensor) else type(normals).__name__
            raise ValueError(
                f"{name} must have the shape of its points {tuple(points.shape)}, got {got}"
            )
        if normals is not None:
            check_finite(name, normals)
    if weights is not None:
        if not isinstance(weights, Tensor) or weights.shape != (batch,):
            got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(f"weights must have shape ({batch},), got {got}")
        check_finite("weights", weights)
        if bool((weights < 0).any()):
            raise ValueError("weights cannot be negative")


def _one_of(
    name: str, value: Tensor | None, pytorch3d_name: str, pytorch3d_value: Tensor | None
) -> Tensor | None:
    # PyTorch3D's keyword is not deprecated: code written for PyTorch3D runs unchanged.
    if pytorch3d_value is None:
        return value
    if value is not None:
        raise TypeError(
            f"chamfer_distance: pass {name} or {pytorch3d_name} (its PyTorch3D name), not both"
        )
    return pytorch3d_value


def _full_lengths(lengths: Tensor | None, batch: int, num: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), num, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64)


def _one_direction(
    x: Tensor,
    y: Tensor,
    x_lengths: Tensor,
    y_lengths: Tensor,
    x_normals: Tensor | None,
    y_normals: Tensor | None,
    idx: Tensor,
    weights: Tensor | None,
    point_reduction: str | None,
    norm: int,
    abs_cosine: bool,
    return_normals: bool,
) -> tuple[Tensor, Tensor | None]:
    dists, idx = distances_from_indices(x, y, idx, x_lengths, y_lengths, norm)
    check_distances_finite("x", x, "y", y, dists)
    cham = dists[..., 0]  # (B, N), zero at padding
    cham_normals = None
    if return_normals:
        near_normals = knn_gather(y_normals, idx)[..., 0, :]
        cosine = F.cosine_similarity(x_normals, near_normals, dim=2, eps=1e-6)
        cham_normals = 1 - (cosine.abs() if abs_cosine else cosine)
        padding = torch.arange(x.shape[1], device=x.device)[None] >= x_lengths[:, None]
        cham_normals = cham_normals.masked_fill(padding, 0.0)
    if weights is not None:
        cham = cham * weights[:, None]
        if return_normals:
            cham_normals = cham_normals * weights[:, None]
    if point_reduction == "max":
        return cham.max(1).values, None
    if point_reduction is None:
        return cham, cham_normals
    cham = cham.sum(1)
    if return_normals:
        cham_normals = cham_normals.sum(1)
    if point_reduction == "mean":
        cham = cham / x_lengths
        if return_normals:
            cham_normals = cham_normals / x_lengths
    return cham, cham_normals


def _reduce_batch(
    values: Tensor | tuple[Tensor, Tensor] | None,
    weights: Tensor | None,
    batch_reduction: str | None,
) -> Tensor | tuple[Tensor, Tensor] | None:
    if values is None or batch_reduction is None:
        return values
    total = values.sum()
    if batch_reduction == "sum":
        return total
    return total / (weights.sum() if weights is not None else values.shape[0])


def _zero_result(
    x: Tensor,
    y: Tensor,
    batch_reduction: str | None,
    point_reduction: str | None,
    single_directional: bool,
    return_normals: bool,
) -> tuple:
    # Zeros that stay connected to the graph, so that backward() still runs.
    zero_x = x.sum(2) * 0.0  # (B, N)
    zero_y = y.sum(2) * 0.0
    if point_reduction is None:
        loss = zero_x if single_directional else (zero_x, zero_y)
    elif batch_reduction is None:
        loss = zero_x.sum(1)
    else:
        loss = zero_x.sum()
    return loss, (loss if return_normals else None)
