"""Optimal one-to-one assignment between equal-size point sets: exact, auction and Sinkhorn."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import Tensor
from tqdm.auto import tqdm

from pcflow._checks import check_points, check_same_batch

__all__ = [
    "Assignment",
    "auction_assignment",
    "exact_assignment",
    "pot_available",
    "sinkhorn_assignment",
]


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


def _check_pair(x: Tensor, y: Tensor) -> int:
    _, num_x, dim_x = check_points("x", x)
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
    return num_x


def _solve_scipy(cost: np.ndarray) -> np.ndarray:
    _, columns = linear_sum_assignment(cost)
    return columns


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
    _check_pair(x, y)
    if solver == "auto":
        solver = "pot" if pot_available() else "scipy"
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be 'auto', 'pot' or 'scipy', got {solver!r}")
    if solver == "pot" and not pot_available():
        raise ImportError("solver='pot' needs POT: pip install pot (or pcflow[fast])")
    solve = _SOLVERS[solver]
    xs = x.detach().to("cpu", torch.float64).numpy()
    ys = y.detach().to("cpu", torch.float64).numpy()

    def task(index: int) -> np.ndarray:
        return solve(cdist(xs[index], ys[index]))

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
) -> tuple[Tensor, Tensor]:
    """Jacobi auction with epsilon-scaling on a batch of cost matrices ``(B, N, N)``.

    Every unassigned person bids at once for its best object at the current prices; each
    object goes to its highest bidder. A phase ends when everyone is assigned, which then holds
    within ``eps`` of optimal per person (eps-complementary slackness). Between phases ``eps``
    is divided by ``eps_scaling`` and only the persons violating the new slackness rebid. A pair
    stops once its certified gap (cost minus the dual bound of the prices, over that bound) is
    at most ``tol``.
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
        while True:
            free = (person_to_object < 0) & active[:, None]
            bidder_batch, bidder = free.nonzero(as_tuple=True)
            if bidder_batch.numel() == 0:
                break
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


@torch.no_grad()
def auction_assignment(
    x: Tensor,
    y: Tensor,
    tol: float = 0.01,
    eps_scaling: float = 5.0,
    max_phases: int = 12,
    chunk_size: int = 8,
) -> Assignment:
    """Near-optimal assignment by Bertsekas' auction with epsilon-scaling, batched in torch.

    All unassigned points of all pairs in a chunk bid in parallel (Jacobi auction), so it runs
    on any device, GPU included. Each pair stops as soon as its certified gap, the matching's
    cost minus a dual lower bound (from the prices, or the one-sided nearest-neighbour sum if
    larger), relative to that bound, is at most ``tol``; the relative error against the exact
    optimum is therefore at most ``tol`` (and in our tests several times smaller). On a CPU
    this is slower than :func:`exact_assignment` (measured at N = 2,048 on a loaded 2-core
    machine: about 3x slower with one torch thread, 15x with two, whose per-round overhead
    dominates; ``benchmarks/test_emd.py``); it is meant for GPU tensors and training losses.
    On a CPU, ``torch.set_num_threads(1)`` makes it several times faster.

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        tol: Target certified relative gap, e.g. ``0.01`` for 1%.
        eps_scaling: Factor by which the bidding increment shrinks between phases.
        max_phases: Phases at most; the returned ``gap`` says how far from the target a pair
            stopped if this runs out.
        chunk_size: Pairs solved together (memory grows as ``chunk_size * N**2``).

    Returns:
        An :class:`Assignment` (``permutation`` ``(B, N)``, certified ``gap`` ``(B,)``).

    References:
        Bertsekas, D. P. "The auction algorithm: a distributed relaxation method for the
        assignment problem." Annals of Operations Research 14 (1988).
    """
    _check_pair(x, y)
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    dtype = _work_dtype(x)
    permutations, gaps = [], []
    for part in _chunks(x.shape[0], chunk_size):
        cost = torch.cdist(
            x[part].detach().to(dtype),
            y[part].detach().to(dtype),
            compute_mode="donot_use_mm_for_euclid_dist",
        )
        prices = torch.zeros(cost.shape[:2], dtype=dtype, device=cost.device)
        eps = cost.amax(dim=(1, 2)).clamp_min(torch.finfo(dtype).tiny) / 4
        permutation, gap = _auction(cost, prices, eps, tol, eps_scaling, max_phases)
        permutations.append(permutation)
        gaps.append(gap)
    return Assignment(torch.cat(permutations), torch.cat(gaps).to(torch.float64))


@torch.no_grad()
def sinkhorn_assignment(
    x: Tensor,
    y: Tensor,
    tol: float = 0.01,
    blur: float = 0.5,
    annealing: float = 0.5,
    eps_scaling: float = 5.0,
    max_phases: int = 12,
    chunk_size: int = 8,
) -> Assignment:
    """Near-optimal assignment: entropic OT potentials rounded to a permutation by an auction.

    Log-domain Sinkhorn with epsilon annealing (one iteration per temperature, from the
    largest distance down to ``blur`` times the mean nearest-neighbour distance, then a few
    more) gives dual potentials; their column potential starts the auction of
    :func:`auction_assignment` as prices, with the first increment at the final temperature,
    so the auction only repairs the rounding. The result is a permutation with the same
    certified relative gap ``tol``.

    Arguments:
        x: ``(B, N, D)`` point sets.
        y: ``(B, N, D)`` point sets of the same size.
        tol: Target certified relative gap.
        blur: Final entropic temperature, in units of the mean nearest-neighbour distance.
        annealing: Factor by which the temperature shrinks per Sinkhorn iteration.
        eps_scaling: Factor by which the auction's increment shrinks between phases.
        max_phases: Auction phases at most.
        chunk_size: Pairs solved together (memory grows as ``chunk_size * N**2``).

    Returns:
        An :class:`Assignment` (``permutation`` ``(B, N)``, certified ``gap`` ``(B,)``).

    References:
        Cuturi, M. "Sinkhorn distances: lightspeed computation of optimal transport." NeurIPS
        2013. Schmitzer, B. "Stabilized sparse scaling algorithms for entropy regularized
        transport problems." SIAM J. Sci. Comput. 41 (2019).
    """
    _check_pair(x, y)
    if tol <= 0 or blur <= 0 or not 0 < annealing < 1:
        raise ValueError(
            f"need tol > 0, blur > 0 and 0 < annealing < 1, got {tol}, {blur}, {annealing}"
        )
    dtype = _work_dtype(x)
    permutations, gaps = [], []
    for part in _chunks(x.shape[0], chunk_size):
        cost = torch.cdist(
            x[part].detach().to(dtype),
            y[part].detach().to(dtype),
            compute_mode="donot_use_mm_for_euclid_dist",
        )
        num = cost.shape[1]
        tiny = torch.finfo(dtype).tiny
        final = (blur * cost.min(dim=2).values.mean(1)).clamp_min(tiny)[:, None, None]
        temperature = cost.amax(dim=(1, 2)).clamp_min(tiny)[:, None, None]
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
        permutation, gap = _auction(cost, -g, eps, tol, eps_scaling, max_phases)
        permutations.append(permutation)
        gaps.append(gap)
    return Assignment(torch.cat(permutations), torch.cat(gaps).to(torch.float64))
