"""Farthest point sampling: an evenly spread subset of each point set."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pcflow._checks import check_lengths, check_points

__all__ = ["FarthestPoints", "sample_farthest_points"]


class FarthestPoints(NamedTuple):
    """The result of `sample_farthest_points`.

    Attributes:
        points: ``(B, K, D)`` the selected points, in the order selected.
        idx: ``(B, K)`` int64 indices of the selected points into the input sets.
    """

    points: Tensor
    idx: Tensor


def sample_farthest_points(
    points: Tensor,
    num_samples: int,
    *,
    lengths: Tensor | None = None,
    start: Tensor | None = None,
) -> FarthestPoints:
    """Select ``num_samples`` points of each set by farthest point sampling.

    Starting from one point, each next point is the one farthest (Euclidean) from those already
    selected; ties go to the lowest index. The subset covers the set's extent evenly, whatever
    the input's density. Same semantics as PyTorch3D's ``sample_farthest_points`` (with
    ``random_start_point=False`` when ``start`` is ``None``); no gradient flows through the
    choice, but ``points`` of the result are gathered differentiably.

    References:
        Eldar, Lindenbaum, Porat, Zeevi. "The Farthest Point Strategy for Progressive Image
        Sampling." IEEE TIP 1997. Qi, Yi, Su, Guibas. "PointNet++." NeurIPS 2017.

    Arguments:
        points: Point sets ``(B, N, D)``, finite.
        num_samples: ``K``, points to select per set, ``1 <= K <= N`` (at most each set's
            length when ``lengths`` is given).
        lengths: ``(B,)`` int64 number of valid points of each set (the rest is padding, never
            selected); ``None`` when all ``N`` are valid.
        start: ``(B,)`` int64 index of each set's first selected point; ``None`` for index 0.

    Returns:
        `FarthestPoints`: ``points`` ``(B, K, D)`` and ``idx`` ``(B, K)``, in selection order.

    Example:
        >>> import torch
        >>> line = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [1.0, 0, 0]]])
        >>> sample_farthest_points(line, 2).idx.tolist()
        [[0, 3]]
    """
    batch, num_points, _ = check_points("points", points)
    check_lengths("lengths", lengths, batch, num_points)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"num_samples must be an int, got {type(num_samples).__name__}")
    shortest = int(lengths.min()) if lengths is not None and batch else num_points
    if not 1 <= num_samples <= shortest:
        raise ValueError(
            f"num_samples must be between 1 and the number of points of the shortest set "
            f"({shortest}), got {num_samples}"
        )
    rows = torch.arange(batch, device=points.device)
    if start is None:
        current = torch.zeros(batch, dtype=torch.long, device=points.device)
    else:
        if not isinstance(start, Tensor) or start.shape != (batch,) or start.dtype != torch.long:
            got = f"{start.dtype} {tuple(start.shape)}" if isinstance(start, Tensor) else start
            raise ValueError(f"start must be an int64 tensor shaped ({batch},), got {got}")
        limit = torch.full((batch,), num_points) if lengths is None else lengths.cpu()
        if bool(((start.cpu() < 0) | (start.cpu() >= limit)).any()):
            raise ValueError(f"start must index a point of its set, got {start.tolist()}")
        current = start.to(points.device)
    # Coordinates first, so that each step works on contiguous (B, N) planes in buffers reused
    # across steps: (x - cx)^2 + (y - cy)^2 + ..., added in that order.
    planes = points.detach().permute(2, 0, 1).contiguous()
    nearest = torch.full((batch, num_points), torch.inf, dtype=points.dtype, device=points.device)
    if lengths is not None:
        positions = torch.arange(num_points, device=points.device)
        padding = positions >= lengths.to(points.device)[:, None]
        nearest.masked_fill_(padding, -1.0)  # below any distance: never selected
    distance, term = torch.empty_like(nearest), torch.empty_like(nearest)
    idx = torch.empty(batch, num_samples, dtype=torch.long, device=points.device)
    for k in range(num_samples):
        idx[:, k] = current
        chosen = planes[:, rows, current, None]  # (D, B, 1)
        torch.sub(planes[0], chosen[0], out=distance).square_()
        for axis in range(1, planes.shape[0]):
            distance.add_(torch.sub(planes[axis], chosen[axis], out=term).square_())
        torch.minimum(nearest, distance, out=nearest)
        current = nearest.argmax(1)  # the first of equal maxima
    selected = points.gather(1, idx[..., None].expand(-1, -1, points.shape[-1]))
    return FarthestPoints(selected, idx)
