"""Jensen-Shannon divergence between the occupancy of a voxel grid by two sets of clouds."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from torch import Tensor

from pcflow._checks import check_points
from pcflow.utils._optional import import_optional

__all__ = ["jensen_shannon_divergence"]

_BOUND = 0.5 + 1e-3  # PointFlow's tolerance for points in the unit cube or ball


@functools.lru_cache(maxsize=4)
def unit_cube_grid(resolution: int = 28, in_sphere: bool = True) -> np.ndarray:
    """Centres of PointFlow's grid: ``resolution**3`` points spanning ``[-0.5, 0.5]**3``.

    Point ``(i, j, k)`` is at ``(i, j, k) / (resolution - 1) - 0.5``; with ``in_sphere`` only
    those within radius 0.5 of the origin are kept (PointFlow's ``clip_sphere``).

    Arguments:
        resolution: Grid points per axis, ``>= 2``.
        in_sphere: Keep only the points inside the ball of radius 0.5.

    Returns:
        ``(G, 3)`` float64 grid points, ``i`` slowest.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    axis = np.arange(resolution) / (resolution - 1) - 0.5
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    if in_sphere:
        grid = grid[np.linalg.norm(grid, axis=1) <= 0.5]
    grid.setflags(write=False)
    return grid


def grid_counts(
    clouds: Tensor, resolution: int = 28, in_sphere: bool = True, name: str = "clouds"
) -> np.ndarray:
    """How many points of all ``clouds`` fall nearest to each grid point of `unit_cube_grid`.

    Warns, as PointFlow does, when points lie outside the unit cube (or ball): they are then
    counted at the grid's boundary, which makes the divergence meaningless.

    Arguments:
        clouds: ``(S, N, 3)`` point clouds, expected inside ``[-0.5, 0.5]**3``.
        resolution: Grid points per axis.
        in_sphere: Use only the grid points inside the ball of radius 0.5.
        name: The argument's name in messages.

    Returns:
        ``(G,)`` float64 counts (they sum to ``S * N``).
    """
    check_points(name, clouds, 3)
    points = clouds.detach().to("cpu", torch.float64).reshape(-1, 3).numpy()
    largest = float(np.abs(points).max())
    radius = float(np.linalg.norm(points, axis=1).max())
    if largest > _BOUND or (in_sphere and radius > _BOUND):
        warnings.warn(
            f"{name} reach {largest:.3g} (radius {radius:.3g}) but the JSD grid spans the unit "
            f"cube [-0.5, 0.5]^3{' and ball of radius 0.5' if in_sphere else ''}: points outside "
            "count at its boundary. Scale the clouds into it (unit-sphere clouds: divide by 2).",
            RuntimeWarning,
            stacklevel=2,
        )
    grid = unit_cube_grid(resolution, in_sphere)
    spatial = import_optional("scipy.spatial", None, "jensen_shannon_divergence")
    _, nearest = spatial.cKDTree(grid).query(points, k=1, workers=-1)
    return np.bincount(nearest, minlength=len(grid)).astype(np.float64)


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def jensen_shannon_divergence(
    generated: Tensor, reference: Tensor, resolution: int = 28, in_sphere: bool = True
) -> float:
    """JSD between the point densities of two sets of clouds on a voxel grid (PointFlow's).

    Every point of every cloud of a set is counted at its nearest point of a
    ``resolution**3`` grid over the unit cube ``[-0.5, 0.5]**3`` (restricted to the ball of
    radius 0.5 with ``in_sphere``, as PointFlow's evaluation does); the counts, normalised,
    are two distributions ``P`` and ``Q`` over the grid, and

    $$ \\mathrm{JSD}(P, Q) = H\\left(\\tfrac{P + Q}{2}\\right) - \\tfrac{1}{2}(H(P) + H(Q)) $$

    with entropies in bits, so the value lies in ``[0, 1]``. Papers print it times ``10^2``.
    It compares the sets' average shapes, not individual clouds. Clouds must lie in the unit
    cube (warns otherwise, as PointFlow does): unit-sphere clouds are divided by 2 first.

    Arguments:
        generated: ``(S, N, 3)`` generated clouds.
        reference: ``(R, M, 3)`` reference clouds.
        resolution: Grid points per axis (PointFlow: 28).
        in_sphere: Restrict the grid to the ball of radius 0.5 (PointFlow: ``True``).

    Returns:
        The divergence in bits, in ``[0, 1]``.

    References:
        Achlioptas, P. et al. "Learning representations and generative models for 3D point
        clouds." ICML 2018. Yang, G. et al. "PointFlow." ICCV 2019 (its
        ``metrics/evaluation_metrics.py``, ``jsd_between_point_cloud_sets``).

    Example:
        >>> import torch
        >>> from pcflow.metrics import jensen_shannon_divergence
        >>> clouds = torch.rand(4, 512, 3) - 0.5
        >>> jensen_shannon_divergence(clouds, clouds, in_sphere=False)
        0.0
    """
    p = grid_counts(generated, resolution, in_sphere, "generated")
    q = grid_counts(reference, resolution, in_sphere, "reference")
    p, q = p / p.sum(), q / q.sum()
    value = _entropy_bits((p + q) / 2) - (_entropy_bits(p) + _entropy_bits(q)) / 2
    return max(0.0, value)
