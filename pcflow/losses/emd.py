"""Earth Mover's distance as a differentiable training loss."""

from __future__ import annotations

import torch
from torch import Tensor

from pcflow._checks import check_lengths, check_points
from pcflow.ops.assignment import assign, matched_distances, native_auction_available

__all__ = ["emd_loss"]


def emd_loss(
    x: Tensor,
    y: Tensor,
    method: str = "auto",
    tol: float = 0.05,
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
        method: ``"exact"``, ``"auction"``, ``"sinkhorn"`` or ``"auto"``: the auction (native
            on CPU, torch on GPU), or exact on CPU where the native kernel cannot be built.
        tol: Certified relative error of the approximate matchings (default 5%: a training
            signal needs less precision than a table).
        batch_reduction: ``"mean"``, ``"sum"`` or ``None`` for ``(B,)`` values.
        lengths: ``(B,)`` integer number of valid points of both ``x[b]`` and ``y[b]``, in
            ``[1, N]``, for padded batches (padding gets no gradient); ``None``: all ``N``.

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
    if method == "auto":
        on_cpu = x.device.type == "cpu"
        method = "exact" if on_cpu and not native_auction_available() else "auction"
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
