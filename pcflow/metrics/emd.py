"""Earth Mover's distance between equal-size point sets, as point cloud papers report it."""

from __future__ import annotations

import torch
from torch import Tensor

from pcflow.ops.assignment import (
    Assignment,
    auction_assignment,
    exact_assignment,
    sinkhorn_assignment,
)

__all__ = ["EMD_METHODS", "assign", "earth_movers_distance", "matched_distances"]

EMD_METHODS = ("exact", "auction", "sinkhorn")


def assign(
    x: Tensor,
    y: Tensor,
    method: str = "exact",
    tol: float = 0.01,
    num_workers: int | None = None,
    progress: bool = False,
    solver: str = "auto",
) -> Assignment:
    """One-to-one assignment of ``x`` to ``y`` by the named method (see the ``pcflow.ops`` solvers).

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        method: ``"exact"``, ``"auction"`` or ``"sinkhorn"``.
        tol: Certified relative gap of the approximate methods.
        num_workers: Threads of the exact solver.
        progress: Progress bar of the exact solver.
        solver: Exact solver, ``"auto"``, ``"pot"`` or ``"scipy"``.

    Returns:
        An ``Assignment`` (``permutation`` ``(B, N)``, ``gap`` ``(B,)``).
    """
    if method == "exact":
        return exact_assignment(x, y, solver=solver, num_workers=num_workers, progress=progress)
    if method == "auction":
        return auction_assignment(x, y, tol=tol)
    if method == "sinkhorn":
        return sinkhorn_assignment(x, y, tol=tol)
    raise ValueError(f"method must be one of {EMD_METHODS}, got {method!r}")


def matched_distances(x: Tensor, y: Tensor, permutation: Tensor) -> Tensor:
    """Euclidean distance of each point of ``x`` to its match in ``y``, differentiable.

    The gradient of a zero distance is taken as zero (not NaN).

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets.
        permutation: ``(B, N)`` long, ``x[b, i]`` matched to ``y[b, permutation[b, i]]``.

    Returns:
        ``(B, N)`` distances.
    """
    matched = y.gather(1, permutation[..., None].expand(-1, -1, y.shape[-1]))
    squared = (x - matched).square().sum(-1)
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)


def earth_movers_distance(
    x: Tensor,
    y: Tensor,
    method: str = "exact",
    tol: float = 0.01,
    num_workers: int | None = None,
    progress: bool = False,
    solver: str = "auto",
) -> Tensor:
    """Earth Mover's distance per pair: the mean matched Euclidean distance.

    $$ \\mathrm{EMD}(X, Y) = \\min_{\\sigma} \\frac{1}{N} \\sum_{i} \\|x_i - y_{\\sigma(i)}\\| $$

    over one-to-one matchings ``sigma`` of two sets of ``N`` points, distances **not squared**.
    This is the convention of the papers' tables: PointFlow's EMD (its approximate CUDA kernel
    returns the summed matched distance, divided by ``N`` by its evaluation code), DPF-Nets and
    FlowGAN. ``method="exact"`` solves the assignment exactly (the evaluation default);
    ``"auction"`` and ``"sinkhorn"`` return a valid matching whose value is an upper bound
    within a certified relative error ``tol`` of the exact one (measured errors are several
    times smaller; on a CPU they are slower than exact, see ``benchmarks/test_emd.py``, so use
    them on GPU tensors). Computed without gradient; for training see
    ``pcflow.losses.emd_loss``.

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets with the same ``N`` (sets of different sizes raise).
        method: ``"exact"``, ``"auction"`` or ``"sinkhorn"``.
        tol: Certified relative error of the approximate methods.
        num_workers: Threads solving pairs in parallel for ``"exact"`` (``None``: all cores).
        progress: Show a progress bar over pairs (``"exact"``).
        solver: Exact solver: ``"auto"`` (POT when installed, else scipy), ``"pot"``,
            ``"scipy"``.

    Returns:
        ``(B,)`` EMD per pair, in ``x``'s dtype and device.

    Example:
        >>> import torch
        >>> from pcflow.metrics import earth_movers_distance
        >>> y = torch.rand(2, 128, 3)
        >>> earth_movers_distance(y + torch.tensor([0.0, 0.0, 0.5]), y)
        tensor([0.5000, 0.5000])
    """
    with torch.no_grad():
        assignment = assign(x, y, method, tol, num_workers, progress, solver)
        distances = matched_distances(x.double(), y.double(), assignment.permutation)
        return distances.mean(1).to(x.dtype)
