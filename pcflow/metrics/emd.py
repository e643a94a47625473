"""Earth Mover's distance between equal-size point sets, as point cloud papers report it."""

from __future__ import annotations

import warnings

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

__all__ = ["earth_movers_distance"]


def pair_lengths(
    x: Tensor,
    y: Tensor,
    lengths: Tensor | None,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
) -> Tensor | None:
    """The common valid size of each pair of a padded batch, or ``None`` if all are full.

    ``x_lengths`` and ``y_lengths`` are the deprecated pair of names for ``lengths``: given,
    they warn, and must be equal pair by pair (a one-to-one matching needs as many valid
    points on both sides; ``ValueError`` names the first pair that differs).
    """
    batch, num_x, _ = check_points("x", x)
    _, num_y, _ = check_points("y", y)
    if x_lengths is not None or y_lengths is not None:
        if lengths is not None:
            raise TypeError(
                "earth_movers_distance: pass lengths only, not also x_lengths or y_lengths "
                "(its deprecated names)"
            )
        warnings.warn(
            "earth_movers_distance(x_lengths=..., y_lengths=...) is deprecated; use lengths=..., "
            "one number of valid points per pair",
            DeprecationWarning,
            stacklevel=3,
        )
        check_lengths("x_lengths", x_lengths, batch, num_x)
        check_lengths("y_lengths", y_lengths, batch, num_y)
        full_x = torch.full((batch,), num_x) if x_lengths is None else x_lengths.cpu().long()
        full_y = torch.full((batch,), num_y) if y_lengths is None else y_lengths.cpu().long()
        differ = torch.nonzero(full_x != full_y)
        if differ.numel():
            b = int(differ[0, 0])
            raise ValueError(
                f"EMD matches points one to one, so x_lengths and y_lengths must be equal, got "
                f"{int(full_x[b])} and {int(full_y[b])} valid points in pair {b}"
            )
        return full_x.to(x.device)
    check_lengths("lengths", lengths, batch, num_x)
    return lengths


def earth_movers_distance(
    x: Tensor,
    y: Tensor,
    method: str = EMD_DEFAULT_METHOD,
    tol: float = EMD_DEFAULT_TOL,
    num_workers: int | None = None,
    progress: bool = False,
    solver: str = "auto",
    lengths: Tensor | None = None,
    *,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
) -> Tensor:
    """Earth Mover's distance per pair: the mean matched Euclidean distance.

    $$ \\mathrm{EMD}(X, Y) = \\min_{\\sigma} \\frac{1}{N} \\sum_{i} \\|x_i - y_{\\sigma(i)}\\| $$

    over one-to-one matchings ``sigma`` of two sets of ``N`` points, distances **not squared**.
    This is the convention of the papers' tables: PointFlow's EMD (its approximate CUDA kernel
    returns the summed matched distance, divided by ``N`` by its evaluation code), DPF-Nets and
    FlowGAN. ``method="exact"`` solves the assignment exactly (pass it for published tables;
    it needs scipy, which pcflow requires, or POT); ``"auction"`` (native C++ on CPU, 10 to 16
    times faster than exact at N = 2,048) and ``"sinkhorn"`` return a valid matching whose value is
    an upper bound within a certified relative error ``tol`` of the exact one; measured errors
    are 2 to 10 times smaller (``docs/benchmarks.md``). The default, ``"auto"`` with
    ``tol=0.01``, is shared with ``pcflow.losses.emd_loss``: the auction, or exact on a CPU
    without the native kernel (``pcflow.ops.resolve_emd_method``). Any finite coordinates give
    a finite value (the solvers work on rescaled copies). Computed without gradient; for
    training see ``pcflow.losses.emd_loss``.

    Arguments:
        x: ``(B, N, D)`` point sets, padded when ``lengths`` is given.
        y: ``(B, N, D)`` point sets with the same ``N`` (sets of different sizes raise).
        method: ``"auto"``, ``"exact"``, ``"auction"`` or ``"sinkhorn"``.
        tol: Certified relative error of the approximate methods.
        num_workers: Threads solving pairs in parallel (``None``: all cores).
        progress: Show a progress bar over pairs (``"exact"``).
        solver: Exact solver: ``"auto"`` (POT when installed, else scipy), ``"pot"``,
            ``"scipy"``.
        lengths: ``(B,)`` integer number of valid points of both ``x[b]`` and ``y[b]`` (one
            number per pair: the matching is one to one), in ``[1, N]``; ``None``: all ``N``.
        x_lengths: Deprecated: pass ``lengths``.
        y_lengths: Deprecated: pass ``lengths``.

    Returns:
        ``(B,)`` EMD per pair (the mean over each pair's valid points), in ``x``'s dtype and
        device.

    Example:
        >>> import torch
        >>> from pcflow.metrics import earth_movers_distance
        >>> y = torch.rand(2, 128, 3)
        >>> earth_movers_distance(y + torch.tensor([0.0, 0.0, 0.5]), y, method="exact")
        tensor([0.5000, 0.5000])
    """
    lengths = pair_lengths(x, y, lengths, x_lengths, y_lengths)
    method = resolve_emd_method(method, x.device)
    with torch.no_grad():
        assignment = assign(x, y, method, tol, num_workers, progress, solver, lengths)
        distances = matched_distances(x.double(), y.double(), assignment.permutation, lengths)
        if lengths is None:
            values = distances.mean(1)
        else:
            values = distances.sum(1) / lengths.to(distances)
        values = values.to(x.dtype)
    if not bool(torch.isfinite(values).all()):
        raise ValueError(
            f"x and y: the EMD overflows {x.dtype} (largest coordinate "
            f"{float(torch.maximum(x.abs().max(), y.abs().max())):.3g}); use float64 or rescale"
        )
    return values
