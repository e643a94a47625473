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
    result = sample_farthest_points(points, 17)
    for b in range(3):
        assert result.idx[b].tolist() == reference_fps(points[b].numpy(), 17)
    torch.testing.assert_close(result.points, points[torch.arange(3)[:, None], result.idx])


def test_start_and_lengths_match_the_loop_on_each_set():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(3, 40, 2, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([40, 25, 12])
    start = torch.tensor([5, 0, 11])
    result = sample_farthest_points(points, 10, lengths=lengths, start=start)
    for b in range(3):
        valid = points[b, : lengths[b]].numpy()
        assert result.idx[b].tolist() == reference_fps(valid, 10, int(start[b]))


def test_float32_picks_the_farthest_point_up_to_rounding():
    # In float32 a near tie may go either way: check the defining property instead, each pick
    # is (within float32 rounding of a squared distance) the farthest from those before it.
    generator = torch.Generator().manual_seed(2)
    points = torch.rand(2, 500, 3, generator=generator)
    idx = sample_farthest_points(points, 64).idx
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
    idx = sample_farthest_points(torch.cat([clump, line])[None], 20).idx[0]
    assert int((idx >= 900).sum()) >= 15


def test_gradient_reaches_the_selected_points_only():
    points = torch.randn(1, 30, 3, requires_grad=True)
    result = sample_farthest_points(points, 5)
    result.points.sum().backward()
    chosen = torch.zeros(30, dtype=torch.bool)
    chosen[result.idx[0]] = True
    assert torch.all(points.grad[0, chosen] == 1) and torch.all(points.grad[0, ~chosen] == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": torch.zeros(10, 3), "num_samples": 2}, "points must have shape"),
        ({"points": torch.zeros(1, 10, 3, dtype=torch.long), "num_samples": 2}, "floating"),
        ({"points": torch.full((1, 10, 3), float("nan")), "num_samples": 2}, "points"),
        ({"points": torch.zeros(1, 10, 3), "num_samples": 11}, "between 1 and"),
        ({"points": torch.zeros(1, 10, 3), "num_samples": 0}, "between 1 and"),
        ({"points": torch.zeros(1, 10, 3), "num_samples": 2.0}, "num_samples must be an int"),
        (
            {"points": torch.zeros(2, 10, 3), "num_samples": 5, "lengths": torch.tensor([10, 4])},
            r"shortest set \(4\)",
        ),
        (
            {"points": torch.zeros(2, 10, 3), "num_samples": 2, "start": torch.tensor([0])},
            "start must be an int64 tensor shaped",
        ),
        (
            {"points": torch.zeros(1, 10, 3), "num_samples": 2, "start": torch.tensor([10])},
            "start must index a point",
        ),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        sample_farthest_points(**kwargs)
