"""Tests of pcflow.metrics.jsd against a loop implementation of PointFlow's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pcflow.metrics import generation_metrics, jensen_shannon_divergence
from pcflow.metrics.jsd import grid_counts, unit_cube_grid


def loop_grid(resolution: int, in_sphere: bool) -> list[tuple[float, float, float]]:
    spacing = 1.0 / (resolution - 1)
    points = []
    for i in range(resolution):
        for j in range(resolution):
            for k in range(resolution):
                p = (i * spacing - 0.5, j * spacing - 0.5, k * spacing - 0.5)
                if not in_sphere or math.sqrt(sum(c * c for c in p)) <= 0.5:
                    points.append(p)
    return points


def loop_counts(clouds: torch.Tensor, grid: np.ndarray) -> np.ndarray:
    # Nearest grid point by the full float64 distance matrix, one cloud at a time.
    counts = np.zeros(len(grid))
    for cloud in clouds.double().numpy():
        squared = ((cloud[:, None, :] - grid[None, :, :]) ** 2).sum(-1)
        for index in squared.argmin(1):
            counts[index] += 1
    return counts


def loop_jsd(p: np.ndarray, q: np.ndarray) -> float:
    # The KL form: (KL(P || M) + KL(Q || M)) / 2 in bits, with M the mixture.
    p, q = p / p.sum(), q / q.sum()
    total = 0.0
    for a, b in zip(p, q):
        m = (a + b) / 2
        if a > 0:
            total += 0.5 * a * math.log2(a / m)
        if b > 0:
            total += 0.5 * b * math.log2(b / m)
    return total


@pytest.mark.parametrize("in_sphere", [True, False])
def test_grid_is_pointflows(in_sphere: bool) -> None:
    expected = np.array(loop_grid(9, in_sphere))
    np.testing.assert_allclose(unit_cube_grid(9, in_sphere), expected, atol=1e-15)
    assert len(unit_cube_grid(28, False)) == 28**3


@pytest.mark.parametrize("in_sphere", [True, False])
@pytest.mark.parametrize("resolution", [5, 28])
def test_equals_loop_reference(in_sphere: bool, resolution: int) -> None:
    generator = torch.Generator().manual_seed(resolution)
    generated = torch.rand(4, 200, 3, generator=generator, dtype=torch.float64) - 0.5
    reference = (torch.rand(3, 150, 3, generator=generator, dtype=torch.float64) - 0.5) * 0.5
    if in_sphere:
        generated = generated * 0.57
    grid = np.array(loop_grid(resolution, in_sphere))
    p, q = loop_counts(generated, grid), loop_counts(reference, grid)
    np.testing.assert_array_equal(grid_counts(generated, resolution, in_sphere), p)
    value = jensen_shannon_divergence(generated, reference, resolution, in_sphere)
    assert value == pytest.approx(loop_jsd(p, q), rel=1e-12, abs=1e-15)
    assert 0.0 < value <= 1.0


def test_identical_and_disjoint_sets() -> None:
    clouds = torch.rand(3, 100, 3) * 0.4 - 0.2
    assert jensen_shannon_divergence(clouds, clouds.flip(0)) == 0.0
    left = torch.rand(2, 100, 3) * 0.2 - torch.tensor([0.3, 0.1, 0.1])
    right = torch.rand(2, 100, 3) * 0.2 + torch.tensor([0.1, -0.1, -0.1])
    assert jensen_shannon_divergence(left, right) == pytest.approx(1.0)  # disjoint: 1 bit


def test_warns_outside_the_unit_cube_and_checks_input() -> None:
    with pytest.warns(RuntimeWarning, match="generated reach .* divide by 2"):
        jensen_shannon_divergence(torch.rand(2, 50, 3) * 2 - 1, torch.rand(2, 50, 3) * 0.5 - 0.25)
    with pytest.raises(ValueError, match="reference must have shape"):
        jensen_shannon_divergence(torch.zeros(2, 50, 3), torch.rand(2, 50, 2))
    with pytest.raises(ValueError, match="NaN"):
        jensen_shannon_divergence(torch.full((1, 5, 3), float("nan")), torch.rand(1, 5, 3))
    with pytest.raises(ValueError, match="resolution"):
        jensen_shannon_divergence(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3), 1)


def test_in_generation_metrics() -> None:
    generated = (torch.rand(3, 40, 3) - 0.5) * 0.5
    reference = (torch.rand(3, 40, 3) - 0.5) * 0.4
    got = generation_metrics(generated, reference, metrics=("jsd",), progress=False)
    assert got == {"JSD": jensen_shannon_divergence(generated, reference)}
    with pytest.raises(ValueError, match="JSD needs 3D points"):
        generation_metrics(torch.rand(3, 40, 2), torch.rand(3, 40, 2), metrics=("jsd",))
