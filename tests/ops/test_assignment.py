"""Tests of pcflow.ops.assignment against scipy's linear_sum_assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from pcflow.ops import auction_assignment, exact_assignment, pot_available, sinkhorn_assignment

SOLVERS = ["scipy", *(["pot"] if pot_available() else [])]


def reference_cost(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Optimal summed distance per pair, by scipy on the float64 distance matrix."""
    costs = []
    for a, b in zip(x.double().numpy(), y.double().numpy()):
        matrix = cdist(a, b)
        rows, cols = linear_sum_assignment(matrix)
        costs.append(matrix[rows, cols].sum())
    return np.array(costs)


def assignment_cost(x: torch.Tensor, y: torch.Tensor, permutation: torch.Tensor) -> np.ndarray:
    matched = y.double().gather(1, permutation[..., None].expand(-1, -1, y.shape[-1]))
    return (x.double() - matched).norm(dim=-1).sum(1).numpy()


def assert_permutation(permutation: torch.Tensor, num: int) -> None:
    assert permutation.dtype == torch.long
    expected = torch.arange(num).expand_as(permutation)
    assert torch.equal(permutation.sort(dim=1).values, expected)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("num", [1, 2, 7, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_matches_scipy(solver: str, num: int, dtype: torch.dtype) -> None:
    x = torch.randn(3, num, 3, dtype=dtype)
    y = torch.rand(3, num, 3, dtype=dtype) * 2
    result = exact_assignment(x, y, solver=solver)
    assert_permutation(result.permutation, num)
    np.testing.assert_allclose(
        assignment_cost(x, y, result.permutation), reference_cost(x, y), rtol=1e-10, atol=1e-12
    )
    assert torch.equal(result.gap, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("solver", SOLVERS)
def test_exact_recovers_a_shuffle(solver: str) -> None:
    y = torch.rand(2, 50, 3)
    shuffle = torch.stack([torch.randperm(50) for _ in range(2)])
    x = y.gather(1, shuffle[..., None].expand(-1, -1, 3))
    assert torch.equal(exact_assignment(x, y, solver=solver).permutation, shuffle)


@pytest.mark.parametrize("solver", SOLVERS)
def test_exact_duplicates_and_equal_points(solver: str) -> None:
    x = torch.zeros(1, 20, 3)
    y = torch.zeros(1, 20, 3)
    result = exact_assignment(x, y, solver=solver)
    assert_permutation(result.permutation, 20)
    dup = torch.rand(1, 5, 3).repeat(1, 4, 1)
    other = torch.rand(1, 20, 3)
    result = exact_assignment(dup, other, solver=solver)
    np.testing.assert_allclose(
        assignment_cost(dup, other, result.permutation), reference_cost(dup, other), rtol=1e-10
    )


def test_exact_threads_give_the_same_answer() -> None:
    x, y = torch.rand(4, 60, 3), torch.rand(4, 60, 3)
    one = exact_assignment(x, y, num_workers=1, progress=True).permutation
    two = exact_assignment(x, y, num_workers=2).permutation
    np.testing.assert_allclose(assignment_cost(x, y, one), assignment_cost(x, y, two), rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    num=st.integers(1, 12),
    dim=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_exact_property_optimal(num: int, dim: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, num, dim, generator=generator, dtype=torch.float64)
    y = torch.rand(2, num, dim, generator=generator, dtype=torch.float64)
    result = exact_assignment(x, y)
    assert_permutation(result.permutation, num)
    np.testing.assert_allclose(
        assignment_cost(x, y, result.permutation), reference_cost(x, y), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("method", [auction_assignment, sinkhorn_assignment])
@pytest.mark.parametrize("tol", [0.05, 0.01])
def test_approximate_within_certified_gap(method, tol: float) -> None:
    x = torch.rand(3, 60, 3)
    y = torch.rand(3, 60, 3) + torch.tensor([0.3, 0.0, 0.0])
    result = method(x, y, tol=tol, chunk_size=2)
    assert_permutation(result.permutation, 60)
    optimum = reference_cost(x, y)
    cost = assignment_cost(x, y, result.permutation)
    excess = cost / optimum - 1
    assert (excess >= -1e-5).all()
    assert (result.gap <= tol).all()
    assert (excess <= result.gap.numpy() + 1e-5).all()


@pytest.mark.parametrize("method", [auction_assignment, sinkhorn_assignment])
def test_approximate_small_and_degenerate(method) -> None:
    one = method(torch.rand(2, 1, 3), torch.rand(2, 1, 3))
    assert torch.equal(one.permutation, torch.zeros(2, 1, dtype=torch.long))
    same = torch.rand(1, 30, 3)
    result = method(same, same)
    assert_permutation(result.permutation, 30)
    assert assignment_cost(same, same, result.permutation)[0] == pytest.approx(0.0, abs=1e-3)
    equal = method(torch.zeros(1, 10, 3), torch.zeros(1, 10, 3))
    assert_permutation(equal.permutation, 10)


@pytest.mark.parametrize("function", [exact_assignment, auction_assignment, sinkhorn_assignment])
def test_bad_input(function) -> None:
    with pytest.raises(ValueError, match="equal-size sets"):
        function(torch.rand(1, 5, 3), torch.rand(1, 6, 3))
    with pytest.raises(ValueError, match="same point dimension"):
        function(torch.rand(1, 5, 3), torch.rand(1, 5, 2))
    with pytest.raises(ValueError, match="batch size"):
        function(torch.rand(2, 5, 3), torch.rand(1, 5, 3))
    with pytest.raises(ValueError, match="NaN"):
        function(torch.full((1, 5, 3), float("nan")), torch.rand(1, 5, 3))
    with pytest.raises(ValueError, match="infinite"):
        function(torch.rand(1, 5, 3), torch.full((1, 5, 3), float("inf")))
    with pytest.raises(ValueError, match="empty"):
        function(torch.rand(1, 0, 3), torch.rand(1, 0, 3))
    with pytest.raises(ValueError, match="3 dimensions"):
        function(torch.rand(5, 3), torch.rand(5, 3))


def test_bad_options() -> None:
    x = torch.rand(1, 4, 3)
    with pytest.raises(ValueError, match="solver"):
        exact_assignment(x, x, solver="hungarian")
    with pytest.raises(ValueError, match="tol"):
        auction_assignment(x, x, tol=0.0)
    with pytest.raises(ValueError, match="annealing"):
        sinkhorn_assignment(x, x, annealing=1.5)


@pytest.mark.parametrize("method", [auction_assignment, sinkhorn_assignment])
def test_approximate_terminates_below_float_resolution(method) -> None:
    # A tolerance finer than float32 can resolve: the increment is floored, the phases run
    # out, and the matching is still a valid permutation whose gap says how far it got.
    x = torch.rand(1, 40, 3) * 1e3
    y = x.flip(1) + 1e-4 * torch.rand(1, 40, 3)
    result = method(x, y, tol=1e-12, max_phases=4)
    assert_permutation(result.permutation, 40)
    cost = assignment_cost(x, y, result.permutation)
    assert cost[0] <= reference_cost(x, y)[0] * (1 + result.gap[0].item()) + 1e-3
