"""Tests of pcflow.ops.sample_farthest_points against a plain float64 loop over the points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcflow.ops import sample_farthest_points


def reference_fps(points: np.ndarray, num_samples: int, start: int = 0) -> list[int]:
    """The textbook loop, one point at a time, in float64."""
    chosen = [start]
    for _ in range(num_samples - 1):
        best, best_distance = -1, -1.0
        for i, point in enumerate(points):
            distance = min(float(np.sum((point - points[j]) ** 2)) for j in chosen)
            if distance > best_distance:
                best, best_distance = i, distance
        chosen.append(best)
    return chosen


def test_matches_the_loop_in_float64():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(3, 60, 3, generator=generator, dtype=torch.float64)
    result = sample_farthest_points(points, K=17)
    for b in range(3):
        assert result.idx[b].tolist() == reference_fps(points[b].numpy(), 17)
    torch.testing.assert_close(result.points, points[torch.arange(3)[:, None], result.idx])


def test_start_and_lengths_match_the_loop_on_each_set():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(3, 40, 2, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([40, 25, 12])
    start = torch.tensor([5, 0, 11])
    result = sample_farthest_points(points, lengths, 10, start=start)
    for b in range(3):
        valid = points[b, : lengths[b]].numpy()
        assert result.idx[b].tolist() == reference_fps(valid, 10, int(start[b]))


def test_float32_picks_the_farthest_point_up_to_rounding():
    # In float32 a near tie may go either way: check the defining property instead, each pick
    # is (within float32 rounding of a squared distance) the farthest from those before it.
    generator = torch.Generator().manual_seed(2)
    points = torch.rand(2, 500, 3, generator=generator)
    idx = sample_farthest_points(points, K=64).idx
    exact = points.double()
    for b in range(2):
        for k in range(1, 64):
            before = exact[b, idx[b, :k]]
            nearest = torch.cdist(exact[b], before).square().min(1).values
            bound = 8 * torch.finfo(torch.float32).eps * 3  # coordinates in [0, 1): |d^2| <= 3
            assert nearest[idx[b, k]] >= nearest.max() - bound
    assert len(set(idx[0].tolist())) == 64  # never the same point twice


def test_covers_a_dense_clump_and_a_sparse_tail_evenly():
    # 900 points in a small clump and 100 spread along a line: an even subset of 20 takes
    # most of its points from the line, unlike a random subset.
    generator = torch.Generator().manual_seed(3)
    clump = 0.01 * torch.randn(900, 3, generator=generator)
    line = torch.zeros(100, 3)
    line[:, 0] = torch.linspace(0.1, 1.0, 100)
    idx = sample_farthest_points(torch.cat([clump, line])[None], K=20).idx[0]
    assert int((idx >= 900).sum()) >= 15


def test_gradient_reaches_the_selected_points_only():
    points = torch.randn(1, 30, 3, requires_grad=True)
    result = sample_farthest_points(points, K=5)
    result.points.sum().backward()
    chosen = torch.zeros(30, dtype=torch.bool)
    chosen[result.idx[0]] = True
    assert torch.all(points.grad[0, chosen] == 1) and torch.all(points.grad[0, ~chosen] == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": torch.zeros(10, 3), "K": 2}, "points must have shape"),
        ({"points": torch.zeros(1, 10, 3, dtype=torch.long), "K": 2}, "floating"),
        ({"points": torch.full((1, 10, 3), float("nan")), "K": 2}, "points"),
        ({"points": torch.zeros(1, 10, 3), "K": 11}, "K must be between 1 and"),
        ({"points": torch.zeros(1, 10, 3), "K": 0}, "K must be between 1 and"),
        ({"points": torch.zeros(1, 10, 3), "K": 2.0}, "K must be an int"),
        (
            {"points": torch.zeros(2, 10, 3), "K": 5, "lengths": torch.tensor([10, 4])},
            r"K = 5 for set 1 of 4 points",
        ),
        (
            {"points": torch.zeros(2, 10, 3), "K": 2, "start": torch.tensor([0])},
            "start must be an int64 tensor shaped",
        ),
        (
            {"points": torch.zeros(1, 10, 3), "K": 2, "start": torch.tensor([10])},
            "start must index a point",
        ),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        sample_farthest_points(**kwargs)


def test_pytorch3d_positional_order_and_names():
    generator = torch.Generator().manual_seed(4)
    points = torch.randn(2, 30, 3, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([30, 18])
    positional = sample_farthest_points(points, lengths, 6, False)
    named = sample_farthest_points(points=points, lengths=lengths, K=6, random_start_point=False)
    assert torch.equal(positional.idx, named.idx)
    for b in range(2):
        assert positional.idx[b].tolist() == reference_fps(points[b, : lengths[b]].numpy(), 6)
    selected, idx = positional  # PyTorch3D returns a (points, idx) pair
    assert selected.shape == (2, 6, 3) and idx.shape == (2, 6)


def test_default_k_is_pytorch3ds_50():
    assert sample_farthest_points(torch.randn(1, 60, 3)).idx.shape == (1, 50)


def test_k_per_set_pads_with_minus_one_and_zero_points():
    generator = torch.Generator().manual_seed(5)
    points = torch.randn(3, 25, 3, generator=generator, dtype=torch.float64) + 10.0
    K = torch.tensor([4, 7, 1])
    result = sample_farthest_points(points, K=K)
    assert result.idx.shape == (3, 7) and result.points.shape == (3, 7, 3)
    for b in range(3):
        k = int(K[b])
        assert result.idx[b, :k].tolist() == reference_fps(points[b].numpy(), k)
        assert result.idx[b, k:].tolist() == [-1] * (7 - k)
        assert torch.all(result.points[b, k:] == 0)
        torch.testing.assert_close(result.points[b, :k], points[b, result.idx[b, :k]])
    as_list = sample_farthest_points(points, K=[4, 7, 1])
    assert torch.equal(as_list.idx, result.idx)


def test_random_start_point_draws_like_pytorch3d_under_a_seed():
    # PyTorch3D draws each set's start with torch.randint(high=lengths[b], size=(1,)) in batch
    # order from the default generator; the same seed gives the same starts here.
    generator = torch.Generator().manual_seed(6)
    points = torch.randn(4, 50, 3, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([50, 9, 31, 2])
    torch.manual_seed(123)
    expected_starts = [int(torch.randint(high=int(n), size=(1,))) for n in lengths]
    torch.manual_seed(123)
    result = sample_farthest_points(points, lengths, 2, True)
    assert result.idx[:, 0].tolist() == expected_starts
    for b in range(4):
        valid = points[b, : lengths[b]].numpy()
        assert result.idx[b].tolist() == reference_fps(valid, 2, expected_starts[b])
    torch.manual_seed(123)
    again = sample_farthest_points(points, lengths, 2, random_start_point=True)
    assert torch.equal(again.idx, result.idx)
    assert (
        len(
            {
                tuple(
                    sample_farthest_points(points, K=2, random_start_point=True).idx[:, 0].tolist()
                )
                for _ in range(5)
            }
        )
        > 1
    )


def test_num_samples_is_a_deprecated_alias_of_k():
    points = torch.randn(2, 20, 3)
    with pytest.warns(DeprecationWarning, match="use K="):
        old = sample_farthest_points(points, num_samples=5)
    assert torch.equal(old.idx, sample_farthest_points(points, K=5).idx)
    with pytest.raises(TypeError, match="not both"), pytest.warns(DeprecationWarning):
        sample_farthest_points(points, K=4, num_samples=5)


def test_the_old_positional_number_of_samples_is_named():
    with pytest.raises(TypeError, match=r"got the int 10: the number of samples is K"):
        sample_farthest_points(torch.randn(1, 20, 3), 10)


def test_start_and_random_start_point_exclude_each_other():
    with pytest.raises(ValueError, match="not both"):
        sample_farthest_points(
            torch.randn(1, 20, 3), K=2, random_start_point=True, start=torch.tensor([3])
        )
