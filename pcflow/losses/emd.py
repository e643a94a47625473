"""Earth Mover's distance as a differentiable training loss."""

from __future__ import annotations

import torch
from torch import Tensor

from pcflow._checks import check_lengths, check_points
from pcflow.ops.assignment import (
    EMD_DEFAULT_METHOD,
    EMD_DEFAULT_TOL,
    assign,
    matched_distances,
    resolve_emd_method,
)

__all__ = ["emd_loss"]


def emd_loss(
    x: Tensor,
    y: Tensor,
    method: str = EMD_DEFAULT_METHOD,
    tol: float = EMD_DEFAULT_TOL,
    batch_reduction: str | None = "mean",
    lengths: Tensor | None = None,
) -> Tensor:
    """Earth Mover's distance as a loss: mean matched Euclidean distance, differentiable.

    The matching is computed without gradient, then the loss is the mean distance between
    matched points, so gradients flow to both sets through the matched distances with the
    assignment held fixed. By the envelope theorem this is the gradient of the exact EMD
    wherever the optimal matching is unique (almost everywhere), and for an approximate
    matching it is the gradient of the upper bound it defines. A zero distance contributes a
    zero gradient. The native auction's matching is deterministic (the same for any thread
    count and CPU), so the loss is too.

    Arguments:
        x: ``(B, N, D)`` point sets, e.g. generated.
        y: ``(B, N, D)`` point sets of the same size, e.g. targets.
        method: ``"auto"`` (the default, shared with ``earth_movers_distance``), ``"exact"``,
            ``"auction"`` or ``"sinkhorn"``. ``"auto"`` is the auction (native on CPU, torch on
            GPU), or exact on a CPU where the native kernel cannot be built (see
            ``pcflow.ops.resolve_emd_method``).
        tol: Certified relative error of the approximate matchings (default 0.01, shared with
            ``earth_movers_distance``).
        batch_reduction: ``"mean"``, ``"sum"`` or ``None`` for ``(B,)`` values.
        lengths: ``(B,)`` integer number of valid points of both ``x[b]`` and ``y[b]`` (one
            number per pair: a one-to-one matching needs equal sizes), in ``[1, N]``, for padded
            batches (padding gets no gradient); ``None``: all ``N``.

    Returns:
        A scalar, or ``(B,)`` with ``batch_reduction=None``.

    Example:
        >>> import torch
        >>> from pcflow.losses import emd_loss
        >>> x = torch.rand(2, 64, 3, requires_grad=True)
        >>> emd_loss(x, torch.rand(2, 64, 3)).backward()
        >>> x.grad.shape
        torch.Size([2, 64, 3])
    """
    if batch_reduction not in ("mean", "sum", None):
        raise ValueError(f"batch_reduction must be 'mean', 'sum' or None, got {batch_reduction!r}")
    batch, num, _ = check_points("x", x)
    check_lengths("lengths", lengths, batch, num)
    method = resolve_emd_method(method, x.device)
    with torch.no_grad():
        permutation = assign(x, y, method, tol, lengths=lengths).permutation
    distances = matched_distances(x, y, permutation, lengths)
    if lengths is None:
        per_pair = distances.mean(1)
    else:
        per_pair = distances.sum(1) / lengths.to(distances)
    if not bool(torch.isfinite(per_pair.detach()).all()):
        raise ValueError(f"x and y: the EMD overflows {x.dtype}; use float64 or rescale")
    if batch_reduction == "mean":
        return per_pair.mean()
    if batch_reduction == "sum":
        return per_pair.sum()
    return per_pair
