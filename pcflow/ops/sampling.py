"""Farthest point sampling: an evenly spread subset of each point set."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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
    lengths: Tensor | None = None,
    K: int | Sequence[int] | Tensor = 50,
    random_start_point: bool = False,
    *,
    start: Tensor | None = None,
    num_samples: int | None = None,
) -> FarthestPoints:
    """Select ``K`` points of each set by farthest point sampling.

    Starting from one point, each next point is the one farthest (Euclidean) from those already
    selected; ties go to the lowest index. The subset covers the set's extent evenly, whatever
    the input's density. A drop-in for PyTorch3D's ``sample_farthest_points``: the same
    arguments in the same order (``points, lengths, K, random_start_point``), the same choice of
    points, and a ``(points, idx)`` result; pcflow's extra option ``start`` is keyword-only. No
    gradient flows through the choice, but ``points`` of the result are gathered
    differentiably.

    Where it departs from PyTorch3D: a ``K`` larger than a set's length raises ``ValueError``
    (PyTorch3D returns fewer points, padded); points are not converted to float32.

    References:
        Eldar, Lindenbaum, Porat, Zeevi. "The Farthest Point Strategy for Progressive Image
        Sampling." IEEE TIP 1997. Qi, Yi, Su, Guibas. "PointNet++." NeurIPS 2017.

    Arguments:
        points: Point sets ``(B, N, D)``, finite.
        lengths: ``(B,)`` int64 number of valid points of each set (the rest is padding, never
            selected); ``None`` when all ``N`` are valid.
        K: Points to select per set: an int, ``1 <= K <= N`` (at most each set's length when
            ``lengths`` is given), or one per set, a ``(B,)`` tensor or list; then the result
            has ``max(K)`` slots and set ``b``'s slots from ``K[b]`` on hold index ``-1`` and
            zero points (as in PyTorch3D).
        random_start_point: Start each set at a point drawn uniformly among its valid points by
            ``torch.randint`` (as PyTorch3D, so ``torch.manual_seed`` makes it repeatable);
            ``False`` starts at index 0.
        start: ``(B,)`` int64 index of each set's first selected point (keyword-only; not with
            ``random_start_point``); ``None`` for index 0.
        num_samples: Deprecated name of ``K`` (``DeprecationWarning``).

    Returns:
        `FarthestPoints`: ``points`` ``(B, K, D)`` and ``idx`` ``(B, K)``, in selection order.

    Example:
        >>> import torch
        >>> line = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [1.0, 0, 0]]])
        >>> sample_farthest_points(line, K=2).idx.tolist()
        [[0, 3]]
        >>> sample_farthest_points(line, None, 2).idx.tolist()  # PyTorch3D's positional order
        [[0, 3]]
    """
    batch, num_points, _ = check_points("points", points)
    if isinstance(lengths, int):
        raise TypeError(
            f"lengths must be a ({batch},) integer tensor or None, got the int {lengths}: the "
            "number of samples is K, the third argument (PyTorch3D's order: points, lengths, K, "
            "random_start_point); pass K=... by name"
        )
    check_lengths("lengths", lengths, batch, num_points)
    if num_samples is not None:
        warnings.warn(
            "sample_farthest_points(num_samples=...) is deprecated; use K=... (PyTorch3D's name)",
            DeprecationWarning,
            stacklevel=2,
        )
        if K != 50 and K != num_samples:
            raise TypeError(
                f"pass K or num_samples, not both (got K={K}, num_samples={num_samples})"
            )
        K = num_samples
    per_set = _per_set_samples(K, batch, points.device)
    sizes = [num_points] * batch if lengths is None else lengths.tolist()
    wanted = [K] * batch if per_set is None else per_set.tolist()
    for b, (k, size) in enumerate(zip(wanted, sizes, strict=True)):
        if not 1 <= k <= size:
            raise ValueError(
                f"K must be between 1 and the number of points of each set, got K = {k} for "
                f"set {b} of {size} points"
            )
    most = max(wanted, default=1)
    if random_start_point:
        if start is not None:
            raise ValueError("pass start or random_start_point=True, not both")
        # One draw per set from the default generator, in PyTorch3D's order.
        start = torch.tensor([int(torch.randint(high=size, size=(1,))) for size in sizes])
    idx = _farthest_indices(points, lengths, most, start)
    if per_set is not None:
        unused = torch.arange(most, device=points.device)[None] >= per_set[:, None]
        idx = idx.masked_fill(unused, -1)
        selected = points.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, points.shape[-1]))
        return FarthestPoints(selected.masked_fill(unused[..., None], 0.0), idx)
    selected = points.gather(1, idx[..., None].expand(-1, -1, points.shape[-1]))
    return FarthestPoints(selected, idx)


def _per_set_samples(
    K: int | Sequence[int] | Tensor, batch: int, device: torch.device
) -> Tensor | None:
    """``K`` per set as a ``(B,)`` int64 tensor, or ``None`` for one int for all."""
    if isinstance(K, bool):
        raise TypeError(f"K must be an int or a ({batch},) integer tensor, got {K!r}")
    if isinstance(K, int):
        return None
    if isinstance(K, Sequence):
        K = torch.tensor(list(K), dtype=torch.int64)
    if not isinstance(K, Tensor) or K.shape != (batch,) or K.is_floating_point():
        got = f"{K.dtype} {tuple(K.shape)}" if isinstance(K, Tensor) else type(K).__name__
        raise TypeError(f"K must be an int or a ({batch},) integer tensor, got {got}")
    return K.to(device=device, dtype=torch.int64)


def _farthest_indices(
    points: Tensor, lengths: Tensor | None, num_samples: int, start: Tensor | None
) -> Tensor:
    """``(B, num_samples)`` indices, in selection order (checked arguments)."""
    batch, num_points, _ = points.shape
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
    return idx
