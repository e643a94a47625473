"""Tests of pcflow.metrics.generation against loop implementations of PointFlow's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from pcflow.metrics import (
    coverage,
    generation_metrics,
    minimum_matching_distance,
    nearest_neighbour_accuracy,
    pairwise_chamfer,
    pairwise_emd,
)


def loop_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    squared = cdist(a, b) ** 2
    return float(squared.min(1).mean() + squared.min(0).mean())


def loop_emd(a: np.ndarray, b: np.ndarray) -> float:
    matrix = cdist(a, b)
    rows, cols = linear_sum_assignment(matrix)
    return float(matrix[rows, cols].mean())


def loop_matrix(distance, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = a.double().numpy(), b.double().numpy()
    return np.array([[distance(p, q) for q in b] for p in a])


def loop_mmd(cross: np.ndarray) -> float:
    return float(
        np.mean([min(cross[i, j] for i in range(cross.shape[0])) for j in range(cross.shape[1])])
    )


def loop_cov(cross: np.ndarray) -> float:
    covered = set()
    for i in range(cross.shape[0]):
        covered.add(int(np.argmin(cross[i])))
    return len(covered) / cross.shape[1]


def loop_1nna(gg: np.ndarray, gr: np.ndarray, rr: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy with exact ties shared among the tied neighbours."""
    clouds = [("g", i) for i in range(gg.shape[0])] + [("r", j) for j in range(rr.shape[0])]

    def distance(p, q):
        if p[0] == "g" and q[0] == "g":
            return gg[p[1], q[1]]
        if p[0] == "r" and q[0] == "r":
            return rr[p[1], q[1]]
        return gr[p[1], q[1]] if p[0] == "g" else gr[q[1], p[1]]

    total = 0.0
    for p in clouds:
        others = [q for q in clouds if q != p]
        best = min(distance(p, q) for q in others)
        tied = [q for q in others if distance(p, q) == best]
        total += sum(q[0] == p[0] for q in tied) / len(tied)
    return total / len(clouds)


def test_pairwise_chamfer_equals_loop() -> None:
    a, b = torch.rand(4, 30, 3), torch.rand(5, 25, 3)
    np.testing.assert_allclose(
        pairwise_chamfer(a, b, batch_size=3).numpy(), loop_matrix(loop_chamfer, a, b), rtol=1e-5
    )
    np.testing.assert_allclose(
        pairwise_chamfer(a, batch_size=4, progress=True).numpy(),
        loop_matrix(loop_chamfer, a, a),
        rtol=1e-5,
        atol=1e-12,
    )


@pytest.mark.parametrize("method", ["exact", "auction"])
def test_pairwise_emd_equals_loop(method: str) -> None:
    a, b = torch.rand(3, 20, 3, dtype=torch.float64), torch.rand(4, 20, 3, dtype=torch.float64)
    expected = loop_matrix(loop_emd, a, b)
    got = pairwise_emd(a, b, method=method, batch_size=12, tol=0.01).numpy()
    if method == "exact":
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    else:
        assert ((got >= expected * (1 - 1e-6)) & (got <= expected * 1.01)).all()
    if method == "exact":
        np.testing.assert_allclose(pairwise_emd(a).numpy(), loop_matrix(loop_emd, a, a), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_loops_on_random_matrices(seed: int) -> None:
    generator = np.random.default_rng(seed)
    # Integer distances make ties frequent, which the definitions must handle.
    gg = generator.integers(1, 6, (6, 6)).astype(float)
    gg = np.triu(gg, 1) + np.triu(gg, 1).T
    rr = generator.integers(1, 6, (5, 5)).astype(float)
    rr = np.triu(rr, 1) + np.triu(rr, 1).T
    gr = generator.integers(0, 6, (6, 5)).astype(float)
    assert minimum_matching_distance(torch.from_numpy(gr)) == pytest.approx(loop_mmd(gr))
    assert coverage(torch.from_numpy(gr)) == pytest.approx(loop_cov(gr))
    assert nearest_neighbour_accuracy(
        torch.from_numpy(gg), torch.from_numpy(gr), torch.from_numpy(rr)
    ) == pytest.approx(loop_1nna(gg, gr, rr))


def test_generation_metrics_equal_loops_on_clouds() -> None:
    generated = torch.rand(5, 24, 3, dtype=torch.float64)
    reference = torch.rand(4, 24, 3, dtype=torch.float64) * 1.2
    got = generation_metrics(generated, reference, batch_size=7, progress=False)
    for name, distance in [("CD", loop_chamfer), ("EMD", loop_emd)]:
        gr = loop_matrix(distance, generated, reference)
        gg = loop_matrix(distance, generated, generated)
        rr = loop_matrix(distance, reference, reference)
        assert got[f"MMD-{name}"] == pytest.approx(loop_mmd(gr), rel=1e-6)
        assert got[f"COV-{name}"] == pytest.approx(loop_cov(gr))
        assert got[f"1-NNA-{name}"] == pytest.approx(loop_1nna(gg, gr, rr))


def test_identical_sets() -> None:
    # Each generated cloud has its exact twin in the reference set, at distance 0, and the
    # clouds are distinct: MMD 0, full coverage, and every cloud's nearest neighbour is its
    # twin of the other label, so 1-NNA is 0 (memorisation, not the ideal 0.5).
    clouds = torch.rand(6, 32, 3)
    got = generation_metrics(clouds, clouds.clone(), progress=False)
    assert got["MMD-CD"] == 0.0
    assert got["MMD-EMD"] == 0.0
    assert got["COV-CD"] == got["COV-EMD"] == 1.0
    assert got["1-NNA-CD"] == got["1-NNA-EMD"] == 0.0


def test_all_clouds_equal_ties_are_shared() -> None:
    # Every distance is 0: each cloud has n - 1 tied neighbours of its own label and n of the
    # other, so its expected accuracy under random tie-breaking is (n - 1) / (2n - 1).
    n = 5
    clouds = torch.rand(1, 16, 3).repeat(n, 1, 1)
    got = generation_metrics(clouds, clouds.clone(), progress=False)
    assert got["1-NNA-CD"] == pytest.approx((n - 1) / (2 * n - 1))
    assert got["1-NNA-EMD"] == pytest.approx((n - 1) / (2 * n - 1))
    assert got["COV-CD"] == pytest.approx(1 / n)  # ties go to the first reference cloud


def test_same_distribution_near_half_and_different_near_one() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(40, 48, 3, generator=generator)
    b = torch.randn(40, 48, 3, generator=generator)
    c = torch.randn(40, 48, 3, generator=generator) * 2 + torch.tensor([1.0, 0.0, 0.0])
    same = generation_metrics(a, b, metrics=("cd",), progress=False)
    different = generation_metrics(a, c, metrics=("cd",), progress=False)
    assert 0.35 <= same["1-NNA-CD"] <= 0.65
    assert different["1-NNA-CD"] >= 0.9
    assert same["COV-CD"] > different["COV-CD"]


def test_errors() -> None:
    with pytest.raises(ValueError, match="equal size"):
        generation_metrics(torch.rand(3, 10, 3), torch.rand(3, 12, 3), progress=False)
    # Chamfer alone accepts different sizes.
    generation_metrics(torch.rand(3, 10, 3), torch.rand(3, 12, 3), metrics=("cd",), progress=False)
    with pytest.raises(ValueError, match="point dimension"):
        generation_metrics(torch.rand(3, 10, 3), torch.rand(3, 10, 2), progress=False)
    with pytest.raises(ValueError, match="metrics"):
        generation_metrics(torch.rand(3, 10, 3), torch.rand(3, 10, 3), metrics=("f1",))
    with pytest.raises(ValueError, match="emd_method"):
        generation_metrics(torch.rand(3, 10, 3), torch.rand(3, 10, 3), emd_method="fast")
    with pytest.raises(ValueError, match="NaN"):
        generation_metrics(torch.full((3, 10, 3), float("nan")), torch.rand(3, 10, 3))
    with pytest.raises(ValueError, match="empty"):
        generation_metrics(torch.rand(3, 0, 3), torch.rand(3, 0, 3))
    with pytest.raises(ValueError, match="equal size"):
        pairwise_emd(torch.rand(2, 10, 3), torch.rand(2, 11, 3))
    with pytest.raises(ValueError, match="batch_size"):
        pairwise_chamfer(torch.rand(2, 10, 3), batch_size=0)


class CountingDistance:
    """Wraps a distance, counts its calls and raises KeyboardInterrupt at call ``stop_at``."""

    def __init__(self, distance, stop_at: int | None = None) -> None:
        self.distance, self.stop_at, self.calls = distance, stop_at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.distance(*args, **kwargs)


@pytest.mark.parametrize("metric", ["cd", "emd"])
def test_interrupted_run_resumes_from_the_block_cache(metric, tmp_path, monkeypatch) -> None:
    import pcflow.metrics.generation as generation

    generated = torch.rand(9, 20, 3, dtype=torch.float64)
    reference = torch.rand(7, 20, 3, dtype=torch.float64) * 1.1
    options = dict(metrics=(metric,), batch_size=4, block_size=3, progress=False)
    expected = generation_metrics(generated, reference, **options)
    name = "chamfer_per_shape" if metric == "cd" else "earth_movers_distance"
    original = getattr(generation, name)
    user_file = tmp_path / "notes.txt"
    user_file.write_text("mine")

    interrupted = CountingDistance(original, stop_at=10)
    monkeypatch.setattr(generation, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        generation_metrics(generated, reference, cache_dir=tmp_path, **options)
    saved = sorted(tmp_path.rglob("block-*.npy"))
    assert saved  # the blocks finished before the interruption were kept

    resumed = CountingDistance(original)
    monkeypatch.setattr(generation, name, resumed)
    got = generation_metrics(generated, reference, cache_dir=tmp_path, **options)
    assert got == expected
    fresh = CountingDistance(original)
    monkeypatch.setattr(generation, name, fresh)
    generation_metrics(generated, reference, **options)
    assert 0 < resumed.calls < fresh.calls  # only the missing blocks were computed

    again = CountingDistance(original)
    monkeypatch.setattr(generation, name, again)
    assert generation_metrics(generated, reference, cache_dir=tmp_path, **options) == expected
    assert again.calls == 0
    assert user_file.read_text() == "mine"  # nothing of the user's is touched


def test_block_cache_recomputes_damaged_blocks_and_tells_inputs_apart(tmp_path) -> None:
    a = torch.rand(5, 16, 3, dtype=torch.float64)
    b = torch.rand(4, 16, 3, dtype=torch.float64)
    expected = pairwise_chamfer(a, b)
    assert torch.equal(pairwise_chamfer(a, b, cache_dir=tmp_path, block_size=2), expected)
    blocks = sorted(tmp_path.rglob("block-*.npy"))
    assert len(blocks) == 3 * 2
    blocks[0].write_bytes(b"not an array")
    assert torch.equal(pairwise_chamfer(a, b, cache_dir=tmp_path, block_size=2), expected)
    other = b + 0.5
    assert torch.equal(
        pairwise_chamfer(a, other, cache_dir=tmp_path, block_size=2), pairwise_chamfer(a, other)
    )
    assert len(list(tmp_path.iterdir())) == 2  # one folder per computation
    with pytest.raises(ValueError, match="block_size"):
        pairwise_chamfer(a, b, block_size=0)


@pytest.mark.parametrize("block_size", [1, 2, 5, 64])
def test_blocks_cover_the_symmetric_matrix(block_size: int) -> None:
    a = torch.rand(5, 12, 3, dtype=torch.float64)
    np.testing.assert_allclose(
        pairwise_emd(a, method="auction", block_size=block_size).numpy(),
        loop_matrix(loop_emd, a, a),
        rtol=0.01,
        atol=1e-12,
    )
