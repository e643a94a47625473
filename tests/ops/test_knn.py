"""Tests of pcflow.ops.knn_points against a brute-force reference on the full distance matrix."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pcflow.ops.knn as knn_module
from pcflow.ops import KNN, knn_gather, knn_points

BACKENDS = ["bruteforce", "kdtree"]


def reference_knn(p1, p2, lengths1, lengths2, K, norm=2):
    """Per shape: every pairwise distance in float64, sorted; zeros at padding."""
    batch, num1, _ = p1.shape
    out = torch.zeros(batch, num1, K, dtype=torch.float64)
    for b in range(batch):
        a = p1[b, : lengths1[b]].double()
        c = p2[b, : lengths2[b]].double()
        diff = a[:, None, :] - c[None, :, :]
        d = diff.square().sum(-1) if norm == 2 else diff.abs().sum(-1)
        k = min(K, c.shape[0])
        out[b, : a.shape[0], :k] = d.sort(dim=1).values[:, :k]
    return out


def random_lengths(batch, num):
    return torch.randint(1, num + 1, (batch,))


def check_indices_match_dists(result, p1, p2, norm):
    # The indices must point at neighbours at the returned distances (ties may pick any).
    gathered = knn_gather(p2.double(), result.idx)
    diff = p1.double()[:, :, None, :] - gathered
    d = diff.square().sum(-1) if norm == 2 else diff.abs().sum(-1)
    mask = result.dists != 0
    torch.testing.assert_close(d[mask], result.dists.double()[mask], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("K", [1, 5])
@pytest.mark.parametrize("heterogeneous", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(backend, norm, K, heterogeneous, dtype):
    p1 = torch.randn(3, 40, 3, dtype=dtype)
    p2 = torch.randn(3, 33, 3, dtype=dtype)
    lengths1 = random_lengths(3, 40) if heterogeneous else None
    lengths2 = torch.tensor([33, 2, 17]) if heterogeneous else None
    result = knn_points(p1, p2, lengths1, lengths2, K=K, backend=backend, norm=norm)
    assert isinstance(result, KNN)
    assert result.dists.shape == (3, 40, K) and result.idx.shape == (3, 40, K)
    assert result.dists.dtype == dtype and result.idx.dtype == torch.int64
    full1 = torch.full((3,), 40) if lengths1 is None else lengths1
    full2 = torch.full((3,), 33) if lengths2 is None else lengths2
    expected = reference_knn(p1, p2, full1, full2, K, norm)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(result.dists.double(), expected, **tol)
    check_indices_match_dists(result, p1, p2, norm)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1, 2])
def test_gradient_matches_bruteforce_autograd(backend, norm):
    p1 = torch.randn(2, 30, 3, dtype=torch.float64, requires_grad=True)
    p2 = torch.randn(2, 25, 3, dtype=torch.float64, requires_grad=True)
    lengths1, lengths2 = torch.tensor([30, 11]), torch.tensor([25, 9])
    weights = torch.randn(2, 30, 3, dtype=torch.float64)
    result = knn_points(p1, p2, lengths1, lengths2, K=3, backend=backend, norm=norm)
    grads = torch.autograd.grad((result.dists * weights).sum(), (p1, p2))

    expected_total = 0
    for b in range(2):
        diff = p1[b, : lengths1[b], None, :] - p2[b, None, : lengths2[b], :]
        d = diff.square().sum(-1) if norm == 2 else diff.abs().sum(-1)
        smallest = d.topk(3, dim=1, largest=False).values
        expected_total = expected_total + (smallest * weights[b, : lengths1[b]]).sum()
    expected = torch.autograd.grad(expected_total, (p1, p2))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_tiles_batch_chunks_and_merges(backend, monkeypatch):
    # Tiny tiles make the brute-force search walk many tiles, batch chunks and top-K merges.
    monkeypatch.setattr(knn_module, "TILE_BYTES", 4 * 4 * 64)
    monkeypatch.setattr(knn_module, "TILE_COLUMNS", 7)
    p1, p2 = torch.randn(5, 50, 3), torch.randn(5, 45, 3)
    lengths1, lengths2 = random_lengths(5, 50), random_lengths(5, 45)
    for K in (1, 4):
        result = knn_points(p1, p2, lengths1, lengths2, K=K, backend=backend)
        expected = reference_knn(p1, p2, lengths1, lengths2, K)
        torch.testing.assert_close(result.dists.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("num1", "num2", "K"),
    [(1, 1, 1), (1, 300, 3), (300, 1, 1), (7, 3, 5), (2, 1, 4)],
)
def test_set_sizes_including_one_point_and_k_beyond_the_set(backend, num1, num2, K):
    p1, p2 = torch.randn(2, num1, 3), torch.randn(2, num2, 3)
    result = knn_points(p1, p2, K=K, backend=backend)
    lengths1, lengths2 = torch.full((2,), num1), torch.full((2,), num2)
    expected = reference_knn(p1, p2, lengths1, lengths2, K)
    torch.testing.assert_close(result.dists.double(), expected, rtol=1e-5, atol=1e-5)
    if K > num2:  # missing neighbours are zero-padded, as in PyTorch3D
        assert (result.idx[..., num2:] == 0).all() and (result.dists[..., num2:] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_and_all_points_equal(backend):
    base = torch.randn(1, 20, 3)
    p2 = torch.cat([base, base, base[:, :5]], dim=1)  # every point duplicated
    result = knn_points(base, p2, K=2, backend=backend)
    torch.testing.assert_close(result.dists, torch.zeros(1, 20, 2))
    same = torch.full((2, 30, 3), 0.25)
    result = knn_points(same, same[:, :10], K=3, backend=backend)
    assert (result.dists == 0).all()
    assert ((0 <= result.idx) & (result.idx < 10)).all()
    query = torch.zeros(2, 4, 3)
    result = knn_points(query, same, K=1, backend=backend)
    torch.testing.assert_close(result.dists, torch.full((2, 4, 1), 3 * 0.25**2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_far_from_origin_float32(backend):
    # |a|^2 + |b|^2 - 2ab cancels catastrophically at large offsets unless the sets are centred.
    p1 = torch.rand(2, 60, 3, dtype=torch.float64) + 5000.0
    p2 = torch.rand(2, 70, 3, dtype=torch.float64) + 5000.0
    result = knn_points(p1.float(), p2.float(), K=1, backend=backend)
    full = torch.full((2,), 60), torch.full((2,), 70)
    expected = reference_knn(p1.float(), p2.float(), *full, 1)
    torch.testing.assert_close(result.dists.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_values_are_ignored(backend):
    p1, p2 = torch.randn(2, 10, 3), torch.randn(2, 8, 3)
    lengths1, lengths2 = torch.tensor([10, 4]), torch.tensor([3, 8])
    expected = knn_points(p1, p2, lengths1, lengths2, K=2, backend=backend).dists
    p1[1, 4:] = -1e30  # huge padding must not change anything
    p2[0, 3:] = 1e30
    result = knn_points(p1, p2, lengths1, lengths2, K=2, backend=backend)
    torch.testing.assert_close(result.dists, expected)


def test_return_nn_and_padding():
    p1, p2 = torch.randn(2, 10, 3), torch.randn(2, 8, 3)
    lengths1 = torch.tensor([10, 4])
    result = knn_points(p1, p2, lengths1, K=2, return_nn=True, backend="bruteforce")
    assert result.knn.shape == (2, 10, 2, 3)
    torch.testing.assert_close(result.knn[1, :4], p2[1][result.idx[1, :4]])
    assert (result.dists[1, 4:] == 0).all() and (result.idx[1, 4:] == 0).all()
    assert knn_points(p1, p2).knn is None


@settings(max_examples=25, deadline=None)
@given(
    num1=st.integers(1, 12),
    num2=st.integers(1, 12),
    K=st.integers(1, 4),
    dim=st.integers(1, 4),
    grid=st.booleans(),
)
def test_backends_agree_property(num1, num2, K, dim, grid):
    generator = torch.Generator().manual_seed(num1 * 1000 + num2 * 10 + K)
    p1 = torch.randn(2, num1, dim, generator=generator, dtype=torch.float64)
    p2 = torch.randn(2, num2, dim, generator=generator, dtype=torch.float64)
    if grid:  # many exact ties
        p1, p2 = p1.round(), p2.round()
    full = torch.full((2,), num1), torch.full((2,), num2)
    expected = reference_knn(p1, p2, *full, K)
    for backend in BACKENDS:
        result = knn_points(p1, p2, K=K, backend=backend)
        torch.testing.assert_close(result.dists, expected)


def test_scipy_kdtree_fallback_without_pykdtree(monkeypatch):
    monkeypatch.setattr(knn_module, "_pykdtree", lambda: None)
    p1, p2 = torch.randn(3, 50, 3), torch.randn(3, 40, 3)
    lengths1, lengths2 = random_lengths(3, 50), random_lengths(3, 40)
    result = knn_points(p1, p2, lengths1, lengths2, K=3, backend="kdtree")
    expected = reference_knn(p1, p2, lengths1, lengths2, 3)
    torch.testing.assert_close(result.dists.double(), expected, rtol=1e-5, atol=1e-5)


def test_auto_backend_choice():
    small, large = 64, 4096  # pairs far below and far above the switch point
    assert knn_module.resolve_backend("auto", torch.device("cpu"), small, small) == "bruteforce"
    assert knn_module.resolve_backend("auto", torch.device("cpu"), large, large) == "kdtree"
    assert knn_module.resolve_backend("kdtree", torch.device("cpu"), small, small) == "kdtree"
    p1, p2 = torch.randn(1, 700, 3), torch.randn(1, 600, 3)
    torch.testing.assert_close(
        knn_points(p1, p2).dists, knn_points(p1, p2, backend="bruteforce").dists
    )


def test_pytorch3d_backend_needs_pytorch3d():
    if knn_module.pytorch3d_available():
        p1 = torch.randn(2, 10, 3)
        expected = knn_points(p1, p1[:, :5], backend="bruteforce").dists
        torch.testing.assert_close(knn_points(p1, p1[:, :5], backend="pytorch3d").dists, expected)
    else:
        with pytest.raises(ImportError, match="pytorch3d"):
            knn_points(torch.randn(1, 3, 3), torch.randn(1, 3, 3), backend="pytorch3d")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p2": torch.randn(3, 5, 3)}, ValueError, "batch size"),
        ({"p2": torch.randn(2, 5, 2)}, ValueError, r"p2 must have shape \(B, N, 3\)"),
        ({"p1": torch.randn(2, 4)}, ValueError, "p1 must have shape"),
        ({"p1": torch.full((2, 4, 3), float("nan"))}, ValueError, "p1 must be finite"),
        ({"p2": torch.tensor([[[float("inf"), 0, 0]]] * 2)}, ValueError, "p2 must be finite"),
        ({"p2": torch.randn(2, 0, 3)}, ValueError, "empty point sets"),
        ({"p1": torch.zeros(2, 4, 3, dtype=torch.int64)}, TypeError, "floating-point"),
        ({"p2": torch.randn(2, 5, 3, dtype=torch.float64)}, TypeError, "dtype"),
        ({"lengths1": torch.tensor([4, 5])}, ValueError, r"lengths1 must lie in \[1, 4\]"),
        ({"lengths2": torch.tensor([0, 5])}, ValueError, r"lengths2 must lie in \[1, 5\]"),
        ({"lengths2": torch.tensor([5])}, ValueError, r"lengths2 must be an integer tensor"),
        ({"lengths2": torch.tensor([1.0, 2.0])}, TypeError, "integer"),
        ({"K": 0}, ValueError, "K must be an integer"),
        ({"norm": 3}, ValueError, "norm must be"),
        ({"backend": "faiss"}, ValueError, "backend must be one of"),
    ],
)
def test_bad_input(kwargs, error, match):
    arguments = {"p1": torch.randn(2, 4, 3), "p2": torch.randn(2, 5, 3)} | kwargs
    with pytest.raises(error, match=match):
        knn_points(**arguments)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["auto", "bruteforce", "kdtree"])
def test_cuda_matches_cpu_reference(backend):
    p1 = torch.randn(3, 500, 3, device="cuda")
    p2 = torch.randn(3, 400, 3, device="cuda")
    lengths1, lengths2 = torch.tensor([500, 3, 250]), torch.tensor([1, 400, 123])
    result = knn_points(p1, p2, lengths1.cuda(), lengths2.cuda(), K=3, backend=backend)
    assert result.dists.device.type == "cuda" and result.idx.device.type == "cuda"
    expected = reference_knn(p1.cpu(), p2.cpu(), lengths1, lengths2, 3)
    torch.testing.assert_close(result.dists.cpu().double(), expected, rtol=1e-4, atol=1e-5)


def test_kdtree_pool_works_in_a_forked_child():
    # The thread pool is per process: a forked child (a DataLoader worker) must not deadlock.
    import multiprocessing

    p1, p2 = torch.randn(4, 300, 3), torch.randn(4, 300, 3)
    expected = knn_points(p1, p2, backend="kdtree").dists  # creates the parent's pool
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        got = pool.apply_async(_kdtree_dists, (p1, p2)).get(timeout=60)
    torch.testing.assert_close(got, expected)


def _kdtree_dists(p1, p2):
    return knn_points(p1, p2, backend="kdtree").dists


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_coordinates_float64_give_the_true_neighbours(backend):
    # Issue 19: at 1e20 the KD-tree answered index 4294967295 and brute force wrong
    # neighbours. The search now runs on copies scaled by a power of two.
    generator = torch.Generator().manual_seed(0)
    p1, p2 = torch.randn(2, 2, 300, 3, generator=generator, dtype=torch.float64) * 1e20
    result = knn_points(p1, p2, K=3, backend=backend)
    expected = reference_knn(p1, p2, [300, 300], [300, 300], 3)
    torch.testing.assert_close(result.dists, expected, rtol=1e-12, atol=0)
    assert int(result.idx.max()) < 300


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_float32_extreme_coordinates_error_or_correct(backend, scale):
    # Squared distances of 1e40 overflow float32: a clear error naming the arguments, within
    # a second. Tiny coordinates (squares below float32's normals) still find the true
    # neighbours, with the distances float32 can hold.
    generator = torch.Generator().manual_seed(1)
    p1, p2 = torch.randn(2, 1, 300, 3, generator=generator) * scale
    # CPU time of this process: on a shared machine the wall clock also counts other jobs.
    start = time.process_time()
    if scale > 1:
        with pytest.raises(ValueError, match=r"p1 and p2: distances .* overflow torch.float32"):
            knn_points(p1, p2, backend=backend)
    else:
        result = knn_points(p1, p2, K=2, backend=backend)
        expected = reference_knn(p1.double() / scale, p2.double() / scale, [300], [300], 2)
        found = reference_knn_at(p1.double() / scale, p2.double() / scale, result.idx)
        torch.testing.assert_close(found, expected, rtol=1e-5, atol=0)
    assert time.process_time() - start < 1.0


def reference_knn_at(p1, p2, idx):
    """Squared distances from p1 to p2 at the given indices, float64."""
    return (p1[:, :, None, :] - knn_gather(p2, idx)).square().sum(-1)


# ----------------------------------------------------------------------------------------------
# PyTorch3D's signature: knn_points(p1, p2, lengths1, lengths2, norm, K, version, return_nn,
# return_sorted)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pytorch3d_positional_order(backend):
    p1, p2 = torch.randn(2, 30, 3, dtype=torch.float64), torch.randn(2, 25, 3, dtype=torch.float64)
    lengths1, lengths2 = torch.tensor([30, 12]), torch.tensor([7, 25])
    # norm=1 fifth, K=4 sixth, version seventh, return_nn eighth, return_sorted ninth
    result = knn_points(p1, p2, lengths1, lengths2, 1, 4, -1, True, True, backend=backend)
    expected = reference_knn(p1, p2, lengths1, lengths2, 4, norm=1)
    torch.testing.assert_close(result.dists, expected)
    assert result.knn.shape == (2, 30, 4, 3)
    named = knn_points(
        p1=p1, p2=p2, lengths1=lengths1, lengths2=lengths2, norm=1, K=4, version=-1,
        return_nn=True, return_sorted=True, backend=backend,
    )  # fmt: skip
    assert torch.equal(named.idx, result.idx)


def test_the_old_positional_k_is_named_in_the_error():
    # pcflow before this release read the fifth argument as K: knn_points(p1, p2, None, None, 3)
    with pytest.raises(ValueError, match=r"norm must be 1 .* got 3 .*pass K=\.\.\. by name"):
        knn_points(torch.randn(1, 5, 3), torch.randn(1, 6, 3), None, None, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_sorted_false_gives_the_same_neighbours(backend):
    # PyTorch3D leaves the order free with return_sorted=False: the same set of K neighbours.
    p1, p2 = torch.randn(2, 40, 3, dtype=torch.float64), torch.randn(2, 35, 3, dtype=torch.float64)
    lengths2 = torch.tensor([35, 3])  # fewer than K in the second set: zero padding
    unsorted = knn_points(p1, p2, None, lengths2, K=5, return_sorted=False, backend=backend)
    expected = reference_knn(p1, p2, torch.tensor([40, 40]), lengths2, 5)
    valid = torch.arange(5)[None, None] < lengths2[:, None, None]
    for b in range(2):
        got = unsorted.dists[b][valid[b].expand(40, -1)].reshape(40, -1).sort(1).values
        want = expected[b][valid[b].expand(40, -1)].reshape(40, -1)
        torch.testing.assert_close(got, want)
    assert torch.all(unsorted.dists[1, :, 3:] == 0) and torch.all(unsorted.idx[1, :, 3:] == 0)


def test_version_is_accepted_and_checked():
    p1, p2 = torch.randn(1, 8, 3), torch.randn(1, 9, 3)
    for version in (-1, 0, 1, 2, 3):
        torch.testing.assert_close(
            knn_points(p1, p2, version=version).dists, knn_points(p1, p2).dists
        )
    with pytest.raises(TypeError, match="version must be an int"):
        knn_points(p1, p2, version="fast")


def test_auto_avoids_the_kdtree_where_no_kdtree_library_is_installed(monkeypatch):
    monkeypatch.setattr(knn_module, "_pykdtree", lambda: None)
    monkeypatch.setattr(knn_module, "has_module", lambda name: False)
    cpu = torch.device("cpu")
    assert knn_module.resolve_backend("auto", cpu, 4096, 4096) == "bruteforce"
    with pytest.raises(ImportError, match=r"pcflow\[fast\].*or scipy"):
        knn_module.resolve_backend("kdtree", cpu, 64, 64)


def test_pykdtree_alone_serves_norm_2_only(monkeypatch):
    monkeypatch.setattr(knn_module, "_pykdtree", lambda: object)
    monkeypatch.setattr(knn_module, "has_module", lambda name: False)
    cpu = torch.device("cpu")
    assert knn_module.resolve_backend("auto", cpu, 4096, 4096, norm=2) == "kdtree"
    assert knn_module.resolve_backend("auto", cpu, 4096, 4096, norm=1) == "bruteforce"


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_overflow_is_refused_as_documented(backend):
    # float16 tops out at 65,504: squared distances of points 300 apart (90,000) overflow.
    p1 = torch.zeros(1, 4, 3, dtype=torch.float16)
    p2 = torch.zeros(1, 5, 3, dtype=torch.float16)
    p2[..., 0] = 300.0
    with pytest.raises(ValueError, match=r"p1 and p2: distances .* overflow torch.float16"):
        knn_points(p1, p2, backend=backend)
    near = knn_points(p1, p2 / 10, backend=backend)  # 900: representable
    assert near.dists.dtype == torch.float16
    torch.testing.assert_close(near.dists.float(), torch.full((1, 4, 1), 900.0))
