"""Tests of pcflow.ops.assignment against scipy's linear_sum_assignment."""

from __future__ import annotations

import ctypes
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

import pcflow.ops.assignment as assignment_module
from pcflow import _native
from pcflow.data.shapes import build_object, normalize_parts, sample_visible_surface
from pcflow.ops import auction_assignment, exact_assignment, pot_available, sinkhorn_assignment
from pcflow.ops.assignment import _native_library, _run_native

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
def test_approximate_fails_loudly_when_the_phases_run_out(method) -> None:
    # A tolerance finer than float32 can certify cannot be reached: the phase cap ends the
    # solve and says so instead of returning a matching silently.
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 40, 3, generator=generator)
    with pytest.raises(RuntimeError, match="max_phases=3"):
        method(x, y, tol=1e-12, max_phases=3)


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_auction_bid_cap_fails_loudly(backend: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 2, 200, 3, generator=generator)
    with pytest.raises(RuntimeError, match="did not converge"):
        auction_assignment(x, y, backend=backend, max_bids_per_point=1)


@pytest.mark.parametrize("method", [exact_assignment, auction_assignment, sinkhorn_assignment])
def test_huge_coordinates_answer_quickly_and_correctly(method) -> None:
    # Issue 19: with coordinates of 1e20 every float32 cost was inf and the auction never
    # returned. The solvers work on centred copies scaled by a power of two.
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1, 16, 3, generator=generator) * 1e20
    # CPU time of this process: on a shared machine the wall clock also counts other jobs.
    start = time.process_time()
    result = method(x, y)
    assert time.process_time() - start < 1.0
    assert_permutation(result.permutation, 16)
    cost = assignment_cost(x, y, result.permutation)
    assert reference_cost(x, y)[0] <= cost[0] * (1 + 1e-12) <= reference_cost(x, y)[0] * 1.01


@pytest.mark.parametrize("method", [exact_assignment, auction_assignment, sinkhorn_assignment])
def test_padded_pairs_are_solved_on_their_valid_points(method) -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(3, 25, 3, generator=generator, dtype=torch.float64)
    y = torch.rand(3, 25, 3, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([25, 9, 1])
    x[1, 9:], y[2, 1:] = 1e6, -1e6  # padding holds anything finite
    result = method(x, y, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        valid = result.permutation[b, :n]
        assert torch.equal(valid.sort().values, torch.arange(n))
        assert torch.equal(result.permutation[b, n:], torch.arange(n, 25))
        cost = assignment_cost(x[b : b + 1, :n], y[b : b + 1, :n], valid[None])
        optimum = reference_cost(x[b : b + 1, :n], y[b : b + 1, :n])
        assert optimum[0] * (1 - 1e-12) <= cost[0] <= optimum[0] * 1.01 + 1e-12
    with pytest.raises(ValueError, match="lengths"):
        method(x, y, lengths=torch.tensor([25, 26, 1]))


# ---------------------------------------------------------------------------------------------
# The native kernel, every instruction-set variant this CPU runs

VARIANTS = _native.cpu_variants()

# The kernel computes costs in float32 on coordinates scaled into [-1, 1], and its certified
# gap from float32 costs and prices. Each cost has a relative rounding error of at most about
# (D + 2) float32 units (D squares summed, a square root), a cost plus a price one more unit of
# the largest distance, so against the float64 optimum the certificate holds up to
# SLACK = 8 * (D + 2) * eps32 * (largest distance / mean optimal distance).
EPS32 = float(np.finfo(np.float32).eps)


def float_slack(x: torch.Tensor, y: torch.Tensor, dim: int) -> np.ndarray:
    largest = np.array([cdist(a, b).max() for a, b in zip(x.double().numpy(), y.double().numpy())])
    mean_optimum = reference_cost(x, y) / x.shape[1]
    return 8 * (dim + 2) * EPS32 * largest / mean_optimum


def run_variant(variant: str, x, y, lengths=None, tol=0.01, threads=1, **options):
    library = _native_library(variant)
    return _run_native(
        library,
        x,
        y,
        lengths,
        tol,
        options.get("eps_scaling", 5.0),
        options.get("max_phases", 16),
        options.get("max_bids_per_point", 10_000),
        threads,
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num", [1, 2, 3, 17, 64, 300])
@pytest.mark.parametrize("dim", [1, 2, 3, 5])
@pytest.mark.parametrize("tol", [0.05, 0.01, 0.001])
def test_native_variant_within_certified_gap_of_scipy(variant, num, dim, tol) -> None:
    generator = torch.Generator().manual_seed(num * 10 + dim)
    x = torch.rand(3, num, dim, generator=generator, dtype=torch.float64)
    y = torch.rand(3, num, dim, generator=generator, dtype=torch.float64) + 0.2
    permutation, gap = run_variant(variant, x, y, tol=tol)
    assert_permutation(permutation, num)
    assert (gap <= tol).all()
    optimum = reference_cost(x, y)
    excess = assignment_cost(x, y, permutation) / optimum - 1
    slack = float_slack(x, y, dim)
    assert (excess >= -slack).all()
    assert (excess <= gap.numpy() + slack).all()


def shape_cloud(category: str, num: int, seed: int) -> torch.Tensor:
    """``num`` surface points of a built-in synthetic object, unit sphere, float32."""
    rng = np.random.default_rng(seed)
    parts = build_object(category, rng)
    normalize_parts(parts)
    points, _ = sample_visible_surface(parts, num, rng)
    return torch.from_numpy(points).float()


@pytest.mark.parametrize("variant", VARIANTS)
def test_native_on_thin_built_in_shapes_within_gap_of_scipy(variant: str) -> None:
    # Thin structures (airplane wings, lamp stems) against another object of the category.
    x = torch.stack([shape_cloud("airplane", 300, 0), shape_cloud("lamp", 300, 1)])
    y = torch.stack([shape_cloud("airplane", 300, 2), shape_cloud("lamp", 300, 3)])
    permutation, gap = run_variant(variant, x, y, tol=0.01)
    excess = assignment_cost(x, y, permutation) / reference_cost(x, y) - 1
    slack = float_slack(x, y, 3)
    assert (gap <= 0.01).all()
    assert (excess >= -slack).all() and (excess <= gap.numpy() + slack).all()


def test_native_is_deterministic_across_variants_and_threads() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(6, 200, 3, generator=generator, dtype=torch.float64)
    y = torch.rand(6, 200, 3, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([200, 150, 200, 3, 199, 64])
    first, first_gap = run_variant(VARIANTS[-1], x, y, lengths, threads=1)
    for variant in VARIANTS:
        for threads in (1, 2, 5):
            permutation, gap = run_variant(variant, x, y, lengths, threads=threads)
            assert torch.equal(permutation, first), (variant, threads)
            assert torch.equal(gap, first_gap), (variant, threads)


def test_native_matches_the_torch_backend_quality() -> None:
    x, y = torch.rand(2, 4, 120, 3)
    native = auction_assignment(x, y, backend="native")
    in_torch = auction_assignment(x, y, backend="torch")
    optimum = reference_cost(x, y)
    for result in (native, in_torch):
        assert (assignment_cost(x, y, result.permutation) <= optimum * 1.01 + 1e-4).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_native_rejects_bad_input_with_a_message(variant: str) -> None:
    # The kernel checks what it is given rather than trusting its caller.
    library = _native_library(variant)
    function = library.pcflow_emd_auction
    x = torch.rand(2, 5, 3, dtype=torch.float64)
    permutation = torch.empty(2, 5, dtype=torch.int64)
    gap = torch.empty(2, dtype=torch.float64)
    error = ctypes.create_string_buffer(256)

    def call(lengths=None, tol=0.01, scaling=5.0, threads=1, batch=2, num=5, dim=3, data=x):
        return function(
            data.data_ptr(), data.data_ptr(), batch, num, dim,
            None if lengths is None else lengths.data_ptr(), tol, scaling, 16, 100, threads,
            permutation.data_ptr(), gap.data_ptr(), error, len(error),
        )  # fmt: skip

    assert call() == 0
    assert call(lengths=torch.tensor([5, 6])) == 1
    assert b"lengths[1] = 6" in error.value
    assert call(lengths=torch.tensor([-1, 5])) == 1
    assert b"lengths[0] = -1" in error.value
    assert call(tol=0.0) == 1 and b"tol > 0" in error.value
    assert call(scaling=1.0) == 1 and b"eps_scaling > 1" in error.value
    assert call(threads=0) == 1 and b"num_threads" in error.value
    assert call(dim=0) == 1 and b"dim=0" in error.value
    assert call(batch=-1) == 1 and b"batch=-1" in error.value
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    assert call(data=bad) == 1 and b"finite" in error.value
    assert function(None, None, 1, 1, 1, None, 0.01, 5.0, 1, 1, 1, None, None, error, 256) == 1
    assert b"null" in error.value
    # An error buffer of one byte still gets its terminating NUL, and none at all is allowed.
    small = ctypes.create_string_buffer(1)
    function(x.data_ptr(), x.data_ptr(), 2, 5, 3, None, 0.0, 5.0, 16, 100, 1,
             permutation.data_ptr(), gap.data_ptr(), small, 1)  # fmt: skip
    assert small.value == b""
    assert function(x.data_ptr(), x.data_ptr(), 2, 5, 3, None, 0.0, 5.0, 16, 100, 1,
                    permutation.data_ptr(), gap.data_ptr(), None, 0) == 1  # fmt: skip


def test_native_fallback_warns_once_and_uses_torch(monkeypatch) -> None:
    def unavailable(name, variant=None, allow_build=True):
        raise _native.NativeBuildError("no compiler in this test")

    monkeypatch.setattr(_native, "load", unavailable)
    monkeypatch.setattr(assignment_module, "_native_warned", False)
    x, y = torch.rand(2, 1, 30, 3)
    with pytest.warns(RuntimeWarning, match="no compiler in this test"):
        result = auction_assignment(x, y)
    assert_permutation(result.permutation, 30)
    assert assignment_cost(x, y, result.permutation)[0] <= reference_cost(x, y)[0] * 1.01 + 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auction_assignment(x, y)  # warned once only
    with pytest.raises(_native.NativeBuildError):
        auction_assignment(x, y, backend="native")
