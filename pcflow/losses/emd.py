"""Earth Mover's distance as a differentiable training loss."""

from __future__ import annotations

import torch
from torch import Tensor

from pcflow.metrics.emd import assign, matched_distances

__all__ = ["emd_loss"]


def emd_loss(
    x: Tensor,
    y: Tensor,
    method: str = "auto",
    tol: float = 0.05,
    batch_reduction: str | None = "mean",
) -> Tensor:
    """Earth Mover's distance as a loss: mean matched Euclidean distance, differentiable.

    The matching is computed without gradient, then the loss is the mean distance between
    matched points, so gradients flow to both sets through the matched distances with the
    assignment held fixed. By the envelope theorem this is the gradient of the exact EMD
    wherever the optimal matching is unique (almost everywhere), and for an approximate
    matching it is the gradient of the upper bound it defines. A zero distance contributes a
    zero gradient.

    Arguments:
        x: ``(B, N, D)`` point sets, e.g. generated.
        y: ``(B, N, D)`` point sets of the same size, e.g. targets.
        method: ``"exact"``, ``"auction"``, ``"sinkhorn"`` or ``"auto"``: exact for CPU
            tensors (the fastest there), auction for GPU tensors (no transfer to the CPU).
        tol: Certified relative error of the approximate matchings (default 5%: a training
            signal needs less precision than a table).
        batch_reduction: ``"mean"``, ``"sum"`` or ``None`` for ``(B,)`` values.

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
    if method == "auto":
        method = "exact" if x.device.type == "cpu" else "auction"
    with torch.no_grad():
        permutation = assign(x, y, method, tol).permutation
    per_pair = matched_distances(x, y, permutation).mean(1)
    if batch_reduction == "mean":
        return per_pair.mean()
    if batch_reduction == "sum":
        return per_pair.sum()
    return per_pair
