"""Optimal one-to-one assignment between equal-size point sets: exact, auction and Sinkhorn.

Also the helpers that the EMD metric and loss share: `assign` (a solver by name, padded
batches included) and `matched_distances` (the differentiable distances of a matching).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pcflow import _native
from pcflow._checks import check_lengths, check_points, check_same_batch
from pcflow.utils._optional import has_module

__all__ = [
    "EMD_DEFAULT_METHOD",
    "EMD_DEFAULT_TOL",
    "EMD_METHODS",
    "Assignment",
    "assign",
    "auction_assignment",
    "exact_assignment",
    "matched_distances",
    "native_auction_available",
    "pot_available",
    "resolve_emd_method",
    "scipy_available",
    "sinkhorn_assignment",
]

_DIRECT = "donot_use_mm_for_euclid_dist"

EMD_METHODS = ("exact", "auction", "sinkhorn")
"""Names accepted by ``assign``'s ``method`` and the EMD metric and loss built on it (which also
take ``"auto"``, see `resolve_emd_method`)."""

EMD_DEFAULT_METHOD = "auto"
"""The default ``method`` of both ``pcflow.losses.emd_loss`` and
``pcflow.metrics.earth_movers_distance``: see `resolve_emd_method`."""

EMD_DEFAULT_TOL = 0.01
"""The default ``tol`` of both ``emd_loss`` and ``earth_movers_distance``: the approximate
methods' matching is certified within 1% of the optimal total distance (measured errors are 2 to
10 times smaller; the benchmarks page)."""


class Assignment(NamedTuple):
    """A one-to-one matching per pair of point sets.

    Attributes:
        permutation: ``(B, N)`` long; point ``i`` of ``x[b]`` is matched to point
            ``permutation[b, i]`` of ``y[b]``.
        gap: ``(B,)`` certified bound on the relative excess of the matching's total distance
            over the optimum, ``(cost - optimum) / optimum <= gap`` (0 for the exact solver).
    """

    permutation: Tensor
    gap: Tensor


def pot_available() -> bool:
    """Whether POT (``ot``), the faster exact solver, can be imported."""
    try:
        import ot  # noqa: F401
    except ImportError:
        return False
    return True


def _check_pair(x: Tensor, y: Tensor, lengths: Tensor | None = None) -> int:
    batch, num_x, dim_x = check_points("x", x)
    _, num_y, dim_y = check_points("y", y)
    check_same_batch("x", x, "y", y)
    if dim_x != dim_y:
        raise ValueError(
            f"x and y must have the same point dimension D, got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if num_x != num_y:
        raise ValueError(
            f"a one-to-one assignment needs equal-size sets, got N = {num_x} points in x and "
            f"{num_y} in y (shapes {tuple(x.shape)} and {tuple(y.shape)}); resample one of them"
        )
    check_lengths("lengths", lengths, batch, num_x)
    return num_x


def _normalised(x: Tensor, y: Tensor, lengths: Tensor | None, dtype: torch.dtype) -> tuple:
    """Both sets moved to the valid mean of ``y`` and scaled by a power of two per pair.

    The optimal matching is unchanged (and the scale is exact), and afterwards every
    coordinate lies within [-1, 1], so no distance can overflow or underflow whatever finite
    coordinates come in (an infinite cost would turn bids into ``inf - inf``).
    """
    x, y = x.detach().to(torch.float64), y.detach().to(torch.float64)
    if lengths is None:
        x, y = x - y.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    else:
        # Padding may hold any finite values: zeroed, it changes neither centre nor scale.
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
        x, y = x * valid[..., None], y * valid[..., None]
        centre = y.sum(1, keepdim=True) / lengths.to(x)[:, None, None]
        x, y = (x - centre) * valid[..., None], (y - centre) * valid[..., None]
    spread = torch.maximum(x.abs().amax(dim=(1, 2)), y.abs().amax(dim=(1, 2)))
    if not bool(torch.isfinite(spread).all()):
        raise ValueError(
            "x and y: the spread of the coordinates overflows float64; rescale the clouds"
        )
    _, exponent = torch.frexp(spread)
    scale = torch.ldexp(torch.ones_like(spread), -exponent.to(spread.dtype))[:, None, None]
    return (x * scale).to(dtype), (y * scale).to(dtype)


def scipy_available() -> bool:
    """Whether scipy, the exact solver (a requirement of pcflow, missing only from an install
    without dependencies), can be imported."""
    return has_module("scipy")


def _solve_scipy(cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    _, columns = linear_sum_assignment(cost)
    return columns


def _distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Differences, squared and summed, then the root: the direct formula (as scipy's cdist),
    # not the expansion through a matrix product, which cancels for nearby points.
    cost = torch.cdist(torch.from_numpy(a), torch.from_numpy(b), compute_mode=_DIRECT)
    return cost.numpy()


def _solve_pot(cost: np.ndarray) -> np.ndarray:
    import ot

    num = cost.shape[0]
    # Unit masses keep every vertex of the transport polytope integral: the simplex returns a
    # permutation matrix exactly (masses 1/N would not be representable in floating point).
    mass = np.ones(num)
    plan, log = ot.emd(mass, mass, cost, numItermax=max(100_000, 50 * num * num), log=True)
    columns = plan.argmax(axis=1)
    if (
        log.get("result_code", 1) != 1
        or np.count_nonzero(plan > 0.5) != num
        or np.unique(columns).size != num
    ):
        return _solve_scipy(cost)
    return columns


_SOLVERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pot": _solve_pot,
    "scipy": _solve_scipy,
}


def _default_workers(num_tasks: int) -> int:
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, min(num_tasks, cores))


def exact_assignment(
    x: Tensor,
    y: Tensor,
    solver: str = "auto",
    num_workers: int | None = None,
    progress: bool = False,
    lengths: Tensor | None = None,
) -> Assignment:
    """Optimal assignment minimising the summed Euclidean distance, one pair of sets at a time.

    Solves ``min_sigma sum_i ||x_i - y_sigma(i)||`` exactly for each pair, on a float64 distance
    matrix, with POT's network simplex (``ot.emd`` on unit masses, whose optimal vertex is a
    permutation; the fastest exact solver measured here, see ``benchmarks/test_emd.py``) or with
    ``scipy.optimize.linear_sum_assignment``. Pairs are solved in a thread pool: both solvers
    release the GIL, so the pool uses every core.

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        solver: ``"pot"``, ``"scipy"`` or ``"auto"`` (POT when installed, else scipy). A POT
            solution that is not a permutation (it never was in our tests) is redone by scipy.
        num_workers: Threads solving pairs in parallel; ``None`` uses every available core.
        progress: Show a tqdm progress bar over pairs.
        lengths: ``(B,)`` integer number of valid points of both ``x[b]`` and ``y[b]``, in
            ``[1, N]``, for padded batches; ``None`` means all ``N``. Padded points are
            matched to themselves (``permutation[b, i] = i`` for ``i >= lengths[b]``).

    Returns:
        An :class:`Assignment` with ``permutation`` ``(B, N)`` on ``x``'s device and ``gap``
        zeros ``(B,)``.

    Example:
        >>> import torch
        >>> from pcflow.ops import exact_assignment
        >>> y = torch.rand(2, 64, 3)
        >>> x = y[:, torch.randperm(64)]
        >>> perm = exact_assignment(x, y).permutation
        >>> bool(torch.equal(y.gather(1, perm[..., None].expand(-1, -1, 3)), x))
        True
    """
    num = _check_pair(x, y, lengths)
    if solver == "auto":
        solver = "pot" if pot_available() else "scipy"
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be 'auto', 'pot' or 'scipy', got {solver!r}")
    if solver == "pot" and not pot_available():
        raise ImportError("solver='pot' needs POT: pip install pot (or pcflow[fast])")
    if solver == "scipy" and not scipy_available():
        raise ImportError(
            "the exact EMD needs scipy (or POT), which is not installed: "
            "pip install scipy (or 'pcflow[fast]' for POT), or use an approximate "
            "method ('auction' or 'sinkhorn')"
        )
    solve = _SOLVERS[solver]
    xs, ys = (part.cpu().numpy() for part in _normalised(x, y, lengths, torch.float64))
    sizes = [num] * xs.shape[0] if lengths is None else lengths.tolist()

    def task(index: int) -> np.ndarray:
        size = sizes[index]
        columns = solve(_distance_matrix(xs[index, :size], ys[index, :size]))
        return np.concatenate([columns, np.arange(size, num)])

    batch = xs.shape[0]
    workers = num_workers if num_workers is not None else _default_workers(batch)
    bar = tqdm(total=batch, desc="exact EMD", unit="pair", disable=not progress)
    if workers <= 1:
        columns = []
        for index in range(batch):
            columns.append(task(index))
            bar.update()
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            columns = []
            for result in pool.map(task, range(batch)):
                columns.append(result)
                bar.update()
    bar.close()
    permutation = torch.from_numpy(np.stack(columns)).to(device=x.device, dtype=torch.long)
    return Assignment(permutation, torch.zeros(batch, dtype=torch.float64, device=x.device))


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _auction(
    cost: Tensor,
    prices: Tensor,
    eps: Tensor,
    tol: float,
    eps_scaling: float,
    max_phases: int,
    max_bids_per_point: int = 10_000,
) -> tuple[Tensor, Tensor]:
    """Jacobi auction with epsilon-scaling on a batch of cost matrices ``(B, N, N)``.

    Every unassigned person bids at once for its best object at the current prices; each
    object goes to its highest bidder. A phase ends when everyone is assigned, which then holds
    within ``eps`` of optimal per person (eps-complementary slackness). Between phases ``eps``
    is divided by ``eps_scaling`` and only the persons violating the new slackness rebid. A pair
    stops once its certified gap (cost minus the dual bound of the prices, over that bound) is
    at most ``tol``. A phase that takes more than ``max_bids_per_point * N`` bidding rounds
    raises ``RuntimeError`` (it never did on finite costs in our tests).
    """
    batch, num, _ = cost.shape
    device = cost.device
    person_to_object = torch.full((batch, num), -1, dtype=torch.long, device=device)
    object_to_person = torch.full((batch, num), -1, dtype=torch.long, device=device)
    nearest_bound = cost.min(dim=2).values.sum(1)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    gap = torch.full((batch,), float("inf"), dtype=cost.dtype, device=device)
    resolution = 8 * torch.finfo(cost.dtype).eps
    largest = cost.amax(dim=(1, 2))
    for _phase in range(max_phases):
        # An increment below the prices' floating-point resolution would be lost, and two
        # persons could then outbid each other forever at a constant price.
        eps = torch.maximum(eps, resolution * (largest + prices.abs().amax(dim=1)))
        for _round in range(max_bids_per_point * num + 1):
            free = (person_to_object < 0) & active[:, None]
            bidder_batch, bidder = free.nonzero(as_tuple=True)
            if bidder_batch.numel() == 0:
                break
            if _round == max_bids_per_point * num:
                raise RuntimeError(
                    f"the auction did not converge: phase {_phase} took more than "
                    f"{max_bids_per_point * num} bidding rounds (max_bids_per_point="
                    f"{max_bids_per_point}) at increments {eps.tolist()}"
                )
            values = cost[bidder_batch, bidder] + prices[bidder_batch]
            best, choice = values.min(dim=1)
            values.scatter_(1, choice[:, None], float("inf"))
            second = values.min(dim=1).values
            second = torch.where(torch.isfinite(second), second, best)  # N = 1
            bid = prices[bidder_batch, choice] + (second - best) + eps[bidder_batch]
            flat = bidder_batch * num + choice
            highest = torch.full((batch * num,), -float("inf"), dtype=cost.dtype, device=device)
            highest.scatter_reduce_(0, flat, bid, reduce="amax")
            top = bid >= highest[flat]
            winner = torch.full((batch * num,), -1, dtype=torch.long, device=device)
            winner.scatter_reduce_(0, flat[top], bidder[top], reduce="amax")
            won = top & (winner[flat] == bidder)
            won_batch, won_object, won_person = bidder_batch[won], choice[won], bidder[won]
            previous = object_to_person[won_batch, won_object]
            outbid = previous >= 0
            person_to_object[won_batch[outbid], previous[outbid]] = -1
            object_to_person[won_batch, won_object] = won_person
            person_to_object[won_batch, won_person] = won_object
            prices[won_batch, won_object] = bid[won]
        reduced = cost + prices[:, None, :]
        row_best = reduced.min(dim=2).values
        primal = cost.gather(2, person_to_object[:, :, None]).squeeze(2).sum(1)
        bound = torch.maximum(row_best.sum(1) - prices.sum(1), nearest_bound)
        gap = torch.where(
            active,
            (primal - bound).clamp_min(0) / bound.clamp_min(torch.finfo(cost.dtype).tiny),
            gap,
        )
        gap = torch.where(primal <= 0, torch.zeros_like(gap), gap)
        active = active & (gap > tol)
        if not bool(active.any()):
            break
        eps = torch.where(active, eps / eps_scaling, eps)
        own = reduced.gather(2, person_to_object[:, :, None]).squeeze(2)
        violating = active[:, None] & (own > row_best + eps[:, None])
        drop_batch, drop_person = violating.nonzero(as_tuple=True)
        object_to_person[drop_batch, person_to_object[drop_batch, drop_person]] = -1
        person_to_object[drop_batch, drop_person] = -1
    return person_to_object, gap


def _chunks(batch: int, chunk_size: int) -> list[slice]:
    return [slice(start, min(start + chunk_size, batch)) for start in range(0, batch, chunk_size)]


def _by_length(lengths: Tensor | None, batch: int, num: int) -> list[tuple[Tensor, int]]:
    """The pairs grouped by their valid size: ``[(indices, size), ...]``."""
    if lengths is None:
        return [(torch.arange(batch), num)]
    lengths = lengths.cpu()
    return [(torch.nonzero(lengths == size)[:, 0], int(size)) for size in lengths.unique()]


def _check_converged(gap: Tensor, tol: float, max_phases: int) -> None:
    if bool((gap > tol).any()):
        worst = int(gap.argmax())
        raise RuntimeError(
            f"the auction did not reach the relative gap tol={tol} within max_phases="
            f"{max_phases} phases (pair {worst} stopped at a certified gap of "
            f"{float(gap[worst]):.3g}); raise max_phases or tol"
        )


# ---------------------------------------------------------------------------------------------
# Native auction (pcflow/ops/_emd_auction.cpp)

_NATIVE_ABI = 1
_native_warned = False


def _native_library(variant: str | None = None) -> ctypes.CDLL | None:
    """The native kernel's library (``variant`` default: the best for this CPU), or ``None``.

    Without an explicit variant a failed build warns once and returns ``None`` (the caller
    falls back to the torch auction); with one it raises ``NativeBuildError``.
    """
    global _native_warned
    try:
        library, path = _native.load("emd_auction", variant)
    except _native.NativeBuildError as error:
        if variant is not None:
            raise
        if not _native_warned:
            _native_warned = True
            warnings.warn(
                f"pcflow: the native auction EMD kernel is unavailable, so the auction runs in "
                f"torch, many times slower on CPU ({error})",
                RuntimeWarning,
                stacklevel=3,
            )
        return None
    function = library.pcflow_emd_auction
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    function.argtypes = [
        pointer, pointer, size, size, size, pointer, ctypes.c_double, ctypes.c_double,
        size, size, size, pointer, pointer, ctypes.c_char_p, size,
    ]  # fmt: skip
    function.restype = ctypes.c_int
    library.pcflow_emd_auction_version.restype = ctypes.c_int
    if library.pcflow_emd_auction_version() != _NATIVE_ABI:
        raise _native.NativeBuildError(f"{path} does not have the ABI version {_NATIVE_ABI}")
    return library


def native_auction_available() -> bool:
    """Whether the native auction kernel loads here (it is built once if needed)."""
    try:
        return _native_library() is not None
    except _native.NativeBuildError:
        return False


def _run_native(
    library: ctypes.CDLL,
    x: Tensor,
    y: Tensor,
    lengths: Tensor | None,
    tol: float,
    eps_scaling: float,
    max_phases: int,
    max_bids_per_point: int,
    num_threads: int,
) -> tuple[Tensor, Tensor]:
    """Calls the native kernel on CPU float64 copies; returns ``(permutation, gap)`` on CPU."""
    batch, num, dim = x.shape
    xs = x.detach().to("cpu", torch.float64).contiguous()
    ys = y.detach().to("cpu", torch.float64).contiguous()
    sizes = None if lengths is None else lengths.to("cpu", torch.int64).contiguous()
    permutation = torch.empty(batch, num, dtype=torch.int64)
    gap = torch.empty(batch, dtype=torch.float64)
    error = ctypes.create_string_buffer(1024)
    status = library.pcflow_emd_auction(
        xs.data_ptr(),
        ys.data_ptr(),
        batch,
        num,
        dim,
        None if sizes is None else sizes.data_ptr(),
        tol,
        eps_scaling,
        max_phases,
        max_bids_per_point,
        num_threads,
        permutation.data_ptr(),
        gap.data_ptr(),
        error,
        len(error),
    )
    message = error.value.decode(errors="replace")
    if status == 2:
        raise RuntimeError(f"auction_assignment: {message}")
    if status == 3:
        raise MemoryError(f"auction_assignment: {message}")
    if status != 0:
        raise ValueError(f"auction_assignment: {message}")
    return permutation, gap


@torch.no_grad()
def auction_assignment(
    x: Tensor,
    y: Tensor,
    tol: float = 0.01,
    eps_scaling: float = 5.0,
    max_phases: int = 16,
    chunk_size: int = 8,
    lengths: Tensor | None = None,
    backend: str = "auto",
    num_threads: int | None = None,
    max_bids_per_point: int = 10_000,
) -> Assignment:
    """Near-optimal assignment by Bertsekas' auction with epsilon-scaling.

    Each point of ``x`` bids for the point of ``y`` that is cheapest at the current prices,
    raising its price by the margin over the second best plus an increment ``eps``; a phase
    ends when every point is matched, which then holds within ``eps`` per point of optimal.
    Between phases ``eps`` shrinks by ``eps_scaling`` and only the points violating the new
    slackness bid again. A pair stops once its certified gap, the matching's cost minus a dual
    lower bound (from the prices, tightened by column potentials in the native backend, or
    the sum of nearest-neighbour distances if larger), relative to that bound, is at most
    ``tol``; the relative error against the exact optimum is therefore at most ``tol``
    (measured: 2 to 10 times smaller, ``docs/benchmarks.md``). Coordinates are centred and
    scaled by a power of two first, so any finite input gives finite costs.

    Backends:

    - ``"native"``: C++ (``pcflow/ops/_emd_auction.cpp``, compiled per instruction set on
      first use), sequential bidding on a float32 cost matrix, one thread per pair over
      ``num_threads`` threads. At N = 2,048 it is 10 to 16 times faster than the exact solver
      (``benchmarks/test_emd.py``). The matching is deterministic: the same for any number of
      threads, run and instruction set. Memory: ``4 N**2`` bytes per thread.
    - ``"torch"``: all free points of ``chunk_size`` pairs bid at once (Jacobi auction) in
      torch, so it runs on any device; meant for GPU tensors (on CPU it is slower than exact).
      Its reductions (maxima over bids) do not depend on the order of evaluation, so it is
      deterministic too.
    - ``"auto"``: native for CPU tensors (torch, with one warning, if the kernel cannot be
      built), torch elsewhere.

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        tol: Target certified relative gap, e.g. ``0.01`` for 1%.
        eps_scaling: Factor by which the bidding increment shrinks between phases, ``> 1``.
        max_phases: Phases at most; a pair whose gap is still above ``tol`` then raises
            ``RuntimeError``.
        chunk_size: Pairs solved together by the torch backend (memory ``chunk_size * N**2``).
        lengths: ``(B,)`` integer number of valid points of both ``x[b]`` and ``y[b]``, in
            ``[1, N]``; padded points are matched to themselves. ``None`` means all ``N``.
        backend: ``"auto"``, ``"native"`` or ``"torch"``.
        num_threads: Threads of the native backend (``None``: every available core).
        max_bids_per_point: Cap on the bids (native) or bidding rounds (torch) of one phase,
            times ``N``; exceeding it raises ``RuntimeError`` instead of running on.

    Returns:
        An :class:`Assignment` (``permutation`` ``(B, N)``, certified ``gap`` ``(B,)``).

    References:
        Bertsekas, D. P. "The auction algorithm: a distributed relaxation method for the
        assignment problem." Annals of Operations Research 14 (1988).

    Example:
        >>> import torch
        >>> from pcflow.ops import auction_assignment
        >>> x, y = torch.rand(2, 256, 3), torch.rand(2, 256, 3)
        >>> result = auction_assignment(x, y, tol=0.01)
        >>> bool((result.gap <= 0.01).all())
        True
    """
    num = _check_pair(x, y, lengths)
    _check_auction_options(tol, eps_scaling, max_phases, max_bids_per_point)
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")
    if num_threads is not None and (isinstance(num_threads, bool) or num_threads < 1):
        raise ValueError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
    library = None
    if backend == "native" or (backend == "auto" and x.device.type == "cpu"):
        library = _native_library()
        if library is None and backend == "native":
            raise _native.NativeBuildError("backend='native': the native kernel is unavailable")
    if library is not None:
        threads = num_threads or _default_workers(x.shape[0])
        permutation, gap = _run_native(
            library, x, y, lengths, tol, eps_scaling, max_phases, max_bids_per_point, threads
        )
        _check_converged(gap, tol, max_phases)
        return Assignment(permutation.to(x.device), gap.to(x.device))
    dtype = _work_dtype(x)
    permutation = torch.arange(num, device=x.device).repeat(x.shape[0], 1)
    gap = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for indices, size in _by_length(lengths, x.shape[0], num):
        indices = indices.to(x.device)
        xs, ys = _normalised(x[indices, :size], y[indices, :size], None, dtype)
        for part in _chunks(indices.shape[0], chunk_size):
            cost = torch.cdist(xs[part], ys[part], compute_mode=_DIRECT)
            prices = torch.zeros(cost.shape[:2], dtype=dtype, device=cost.device)
            eps = cost.amax(dim=(1, 2)).clamp_min(torch.finfo(dtype).tiny) / 4
            columns, gaps = _auction(
                cost, prices, eps, tol, eps_scaling, max_phases, max_bids_per_point
            )
            permutation[indices[part], :size] = columns
            gap[indices[part]] = gaps.to(torch.float64)
    _check_converged(gap, tol, max_phases)
    return Assignment(permutation, gap)


def _check_auction_options(
    tol: float, eps_scaling: float, max_phases: int, max_bids_per_point: int
) -> None:
    if not tol > 0 or not eps_scaling > 1:
        raise ValueError(
            f"need tol > 0 and eps_scaling > 1, got tol={tol}, eps_scaling={eps_scaling}"
        )
    for name, value in (("max_phases", max_phases), ("max_bids_per_point", max_bids_per_point)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@torch.no_grad()
def sinkhorn_assignment(
    x: Tensor,
    y: Tensor,
    tol: float = 0.01,
    blur: float = 0.5,
    annealing: float = 0.5,
    eps_scaling: float = 5.0,
    max_phases: int = 16,
    chunk_size: int = 8,
    lengths: Tensor | None = None,
    max_bids_per_point: int = 10_000,
) -> Assignment:
    """Near-optimal assignment: entropic OT potentials rounded to a permutation by an auction.

    Log-domain Sinkhorn with epsilon annealing (one iteration per temperature, from the
    largest distance down to ``blur`` times the mean nearest-neighbour distance, then a few
    more) gives dual potentials; their column potential starts the torch auction of
    :func:`auction_assignment` as prices, with the first increment at the final temperature,
    so the auction only repairs the rounding. The result is a permutation with the same
    certified relative gap ``tol``. Runs in torch on any device (on CPU the native auction is
    much faster).

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        tol: Target certified relative gap.
        blur: Final entropic temperature, in units of the mean nearest-neighbour distance
            (at least ``1e-4`` times the largest distance).
        annealing: Factor by which the temperature shrinks per Sinkhorn iteration.
        eps_scaling: Factor by which the auction's increment shrinks between phases.
        max_phases: Auction phases at most (``RuntimeError`` if ``tol`` is not reached).
        chunk_size: Pairs solved together (memory grows as ``chunk_size * N**2``).
        lengths: ``(B,)`` valid sizes of padded pairs, as in :func:`auction_assignment`.
        max_bids_per_point: Cap on the bidding rounds of one auction phase, times ``N``.

    Returns:
        An :class:`Assignment` (``permutation`` ``(B, N)``, certified ``gap`` ``(B,)``).

    References:
        Cuturi, M. "Sinkhorn distances: lightspeed computation of optimal transport." NeurIPS
        2013. Schmitzer, B. "Stabilized sparse scaling algorithms for entropy regularized
        transport problems." SIAM J. Sci. Comput. 41 (2019).
    """
    num = _check_pair(x, y, lengths)
    if tol <= 0 or blur <= 0 or not 0 < annealing < 1:
        raise ValueError(
            f"need tol > 0, blur > 0 and 0 < annealing < 1, got {tol}, {blur}, {annealing}"
        )
    _check_auction_options(tol, eps_scaling, max_phases, max_bids_per_point)
    dtype = _work_dtype(x)
    permutation = torch.arange(num, device=x.device).repeat(x.shape[0], 1)
    gap = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for indices, size in _by_length(lengths, x.shape[0], num):
        indices = indices.to(x.device)
        xs, ys = _normalised(x[indices, :size], y[indices, :size], None, dtype)
        for part in _chunks(indices.shape[0], chunk_size):
            columns, gaps = _sinkhorn_then_auction(
                xs[part], ys[part], tol, blur, annealing, eps_scaling, max_phases,
                max_bids_per_point,
            )  # fmt: skip
            permutation[indices[part], :size] = columns
            gap[indices[part]] = gaps.to(torch.float64)
    _check_converged(gap, tol, max_phases)
    return Assignment(permutation, gap)


def _sinkhorn_then_auction(
    x: Tensor,
    y: Tensor,
    tol: float,
    blur: float,
    annealing: float,
    eps_scaling: float,
    max_phases: int,
    max_bids_per_point: int,
) -> tuple[Tensor, Tensor]:
    dtype = x.dtype
    cost = torch.cdist(x, y, compute_mode=_DIRECT)
    num = cost.shape[1]
    largest = cost.amax(dim=(1, 2)).clamp_min(torch.finfo(dtype).tiny)[:, None, None]
    # A temperature far below the costs' scale makes cost / temperature overflow.
    final = torch.maximum(blur * cost.min(dim=2).values.mean(1)[:, None, None], 1e-4 * largest)
    temperature = largest
    log_weight = -float(np.log(num))
    f = torch.zeros(cost.shape[:2], dtype=dtype, device=cost.device)
    g = torch.zeros_like(f)
    extra = 3
    while extra > 0:
        temperature = torch.maximum(temperature * annealing, final)
        if bool((temperature <= final).all()):
            extra -= 1
        f = -temperature[..., 0] * torch.logsumexp(
            log_weight + (g[:, None, :] - cost) / temperature, dim=2
        )
        g = -temperature[..., 0] * torch.logsumexp(
            log_weight + (f[:, :, None] - cost) / temperature, dim=1
        )
    eps = final[:, 0, 0].clone()
    return _auction(cost, -g, eps, tol, eps_scaling, max_phases, max_bids_per_point)


def assign(
    x: Tensor,
    y: Tensor,
    method: str = "exact",
    tol: float = 0.01,
    num_workers: int | None = None,
    progress: bool = False,
    solver: str = "auto",
    lengths: Tensor | None = None,
) -> Assignment:
    """One-to-one assignment of ``x`` to ``y`` by the named method.

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        method: ``"exact"`` (:func:`exact_assignment`), ``"auction"``
            (:func:`auction_assignment`, native on CPU) or ``"sinkhorn"``
            (:func:`sinkhorn_assignment`).
        tol: Certified relative gap of the approximate methods.
        num_workers: Threads of the exact solver and of the native auction (``None``: all
            cores).
        progress: Progress bar of the exact solver.
        solver: Exact solver, ``"auto"``, ``"pot"`` or ``"scipy"``.
        lengths: ``(B,)`` valid sizes of padded pairs, in ``[1, N]``, or ``None``.

    Returns:
        An :class:`Assignment` (``permutation`` ``(B, N)``, ``gap`` ``(B,)``).
    """
    if method == "exact":
        return exact_assignment(
            x, y, solver=solver, num_workers=num_workers, progress=progress, lengths=lengths
        )
    if method == "auction":
        return auction_assignment(x, y, tol=tol, lengths=lengths, num_threads=num_workers)
    if method == "sinkhorn":
        return sinkhorn_assignment(x, y, tol=tol, lengths=lengths)
    raise ValueError(f"method must be one of {EMD_METHODS}, got {method!r}")


def resolve_emd_method(method: str, device: torch.device) -> str:
    """The method that ``method`` means on ``device``: ``"auto"`` resolved, others checked.

    ``"auto"`` is the auction (certified within ``tol`` of exact) on CPU where its native kernel
    is available and on any accelerator; on a CPU without the native kernel, the exact solver
    where scipy or POT is installed, else the torch auction.

    Arguments:
        method: ``"auto"`` or one of ``EMD_METHODS``.
        device: Where the points are.

    Returns:
        One of ``EMD_METHODS``.
    """
    if method == "auto":
        if device.type != "cpu" or native_auction_available():
            return "auction"
        return "exact" if pot_available() or scipy_available() else "auction"
    if method not in EMD_METHODS:
        raise ValueError(f"method must be 'auto' or one of {EMD_METHODS}, got {method!r}")
    return method


def matched_distances(
    x: Tensor, y: Tensor, permutation: Tensor, lengths: Tensor | None = None
) -> Tensor:
    """Euclidean distance of each point of ``x`` to its match in ``y``, differentiable.

    Computed as ``s * ||(x - y) / s||`` with ``s`` a power of two per pair (held constant for
    the gradient), so that squares neither overflow nor vanish for any finite coordinates. The
    gradient of a zero distance is taken as zero (not NaN).

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets.
        permutation: ``(B, N)`` long, ``x[b, i]`` matched to ``y[b, permutation[b, i]]``.
        lengths: ``(B,)`` valid sizes; distances at padded points are zero. ``None``: all.

    Returns:
        ``(B, N)`` distances.
    """
    matched = y.gather(1, permutation[..., None].expand(-1, -1, y.shape[-1]))
    difference = x - matched
    if lengths is not None:
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
        difference = difference * valid[..., None]
    with torch.no_grad():
        spread = difference.abs().amax(dim=(1, 2))
        _, exponent = torch.frexp(torch.where(torch.isfinite(spread), spread, 1.0))
        scale = torch.ldexp(torch.ones_like(spread), exponent.to(spread.dtype))[:, None, None]
    squared = (difference / scale).square().sum(-1)
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0) * scale[..., 0]
