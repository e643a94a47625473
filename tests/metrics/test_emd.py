"""Tests of pcflow.metrics.earth_movers_distance against scipy's assignment."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from pcflow.metrics import earth_movers_distance


def reference_emd(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    values = []
    for a, b in zip(x.double().numpy(), y.double().numpy()):
        matrix = cdist(a, b)
        rows, cols = linear_sum_assignment(matrix)
        values.append(matrix[rows, cols].mean())
    return np.array(values)


def surface_samples(num: int, generator: torch.Generator) -> torch.Tensor:
    """Noisy samples of a torus, a sphere and a box surface: (3, num, 3)."""
    u, v = torch.rand(2, num, generator=generator) * 2 * math.pi
    torus = torch.stack(
        [(0.7 + 0.25 * v.cos()) * u.cos(), (0.7 + 0.25 * v.cos()) * u.sin(), 0.25 * v.sin()], -1
    )
    sphere = torch.randn(num, 3, generator=generator)
    sphere = sphere / sphere.norm(dim=1, keepdim=True)
    box = torch.rand(num, 3, generator=generator) * 2 - 1
    face = torch.randint(0, 3, (num,), generator=generator)
    box[torch.arange(num), face] = torch.sign(torch.rand(num, generator=generator) - 0.5)
    box = box * torch.tensor([0.8, 0.5, 0.3])
    clouds = torch.stack([torus, sphere, box])
    return clouds + 0.01 * torch.randn(clouds.shape, generator=generator)


def test_exact_equals_scipy() -> None:
    x, y = torch.rand(4, 80, 3), torch.randn(4, 80, 3)
    np.testing.assert_allclose(
        earth_movers_distance(x.double(), y.double(), "exact").numpy(),
        reference_emd(x, y),
        rtol=1e-10,
    )
    assert earth_movers_distance(x, y, "exact").dtype == torch.float32


def test_translation_and_symmetry() -> None:
    y = torch.rand(2, 64, 3, dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64)
    exact = "exact"
    np.testing.assert_allclose(earth_movers_distance(y + shift, y, exact).numpy(), [0.5, 0.5])
    x = torch.rand(2, 64, 3, dtype=torch.float64)
    np.testing.assert_allclose(
        earth_movers_distance(x, y, exact).numpy(),
        earth_movers_distance(y, x, exact).numpy(),
        rtol=1e-12,
    )
    assert torch.equal(earth_movers_distance(y, y, exact), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("method", ["auction", "sinkhorn"])
def test_approximate_within_documented_error_on_shapes(method: str) -> None:
    generator = torch.Generator().manual_seed(1)
    x = surface_samples(150, generator)
    y = torch.cat([surface_samples(150, generator)[[0, 1]], surface_samples(150, generator)[[0]]])
    exact = reference_emd(x, y)
    approximate = earth_movers_distance(x, y, method=method, tol=0.02).double().numpy()
    relative = approximate / exact - 1
    assert (relative >= -1e-5).all()  # a valid matching: never below the optimum
    assert (relative <= 0.02).all()


def test_errors() -> None:
    with pytest.raises(ValueError, match="equal-size sets"):
        earth_movers_distance(torch.rand(1, 10, 3), torch.rand(1, 12, 3))
    with pytest.raises(ValueError, match="method"):
        earth_movers_distance(torch.rand(1, 10, 3), torch.rand(1, 10, 3), method="approx")
    with pytest.raises(ValueError, match="NaN"):
        earth_movers_distance(torch.rand(1, 10, 3), torch.full((1, 10, 3), float("nan")))
    with pytest.raises(ValueError, match="lengths must lie in"):
        earth_movers_distance(
            torch.rand(1, 10, 3), torch.rand(1, 10, 3), lengths=torch.tensor([11])
        )


@pytest.mark.parametrize("method", ["exact", "auction", "sinkhorn"])
def test_huge_coordinates_give_the_value_within_a_second(method: str) -> None:
    # Issue 19: earth_movers_distance(x, y, "auction") with x, y = randn(1, 16, 3) * 1e20
    # never returned (every float32 cost inf, every bid NaN).
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1, 16, 3, generator=generator) * 1e20
    # CPU time of this process: on a shared machine the wall clock also counts other jobs.
    start = time.process_time()
    value = earth_movers_distance(x, y, method)
    assert time.process_time() - start < 1.0
    exact = reference_emd(x, y)[0]
    # float32 result of a float64 value: one rounding; approximate methods within tol = 1%.
    assert exact * (1 - 1e-6) <= value.item() <= exact * 1.01 * (1 + 1e-6)


@pytest.mark.parametrize("method", ["exact", "auction", "sinkhorn"])
def test_padded_batch_equals_each_unpadded_pair(method: str) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(3, 40, 3, generator=generator, dtype=torch.float64)
    y = torch.rand(3, 40, 3, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([40, 12, 2])
    x[1, 12:], y[2, 2:] = 1e9, -1e9  # padding may hold anything finite
    values = earth_movers_distance(x, y, method, lengths=lengths).numpy()
    exact = np.array(
        [reference_emd(x[b : b + 1, :n], y[b : b + 1, :n])[0] for b, n in enumerate([40, 12, 2])]
    )
    tolerance = 1e-10 if method == "exact" else 0.01
    assert (values >= exact * (1 - 1e-10)).all()
    assert (values <= exact * (1 + tolerance)).all()
    # The deprecated pair of names gives the same values, with a warning naming lengths.
    with pytest.warns(DeprecationWarning, match=r"use lengths="):
        old = earth_movers_distance(x, y, method, x_lengths=lengths, y_lengths=lengths)
    np.testing.assert_array_equal(old.numpy(), values)


def test_deprecated_x_and_y_lengths_must_still_be_equal() -> None:
    x, y = torch.rand(2, 10, 3), torch.rand(2, 10, 3)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="must be equal"):
        earth_movers_distance(
            x, y, x_lengths=torch.tensor([10, 7]), y_lengths=torch.tensor([10, 8])
        )
    # Only x's lengths given means y is full: here they differ, which raises.
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="must be equal"):
        earth_movers_distance(x, y, x_lengths=torch.tensor([10, 7]))
    with pytest.raises(TypeError, match="not also x_lengths"):
        earth_movers_distance(x, y, lengths=torch.tensor([10, 7]), x_lengths=torch.tensor([10, 7]))


def test_one_default_method_and_tol_for_the_metric_and_the_loss() -> None:
    import inspect

    from pcflow.losses import emd_loss
    from pcflow.ops import EMD_DEFAULT_METHOD, EMD_DEFAULT_TOL

    for function in (earth_movers_distance, emd_loss):
        parameters = inspect.signature(function).parameters
        assert parameters["method"].default == EMD_DEFAULT_METHOD == "auto"
        assert parameters["tol"].default == EMD_DEFAULT_TOL == 0.01
    # The default is within its certified tolerance of the exact value, never below it.
    generator = torch.Generator().manual_seed(7)
    x, y = torch.rand(3, 200, 3, generator=generator), torch.rand(3, 200, 3, generator=generator)
    exact = reference_emd(x, y)
    default = earth_movers_distance(x.double(), y.double()).numpy()
    assert (default >= exact * (1 - 1e-10)).all() and (default <= exact * 1.01).all()
    loss = emd_loss(x.double(), y.double(), batch_reduction=None).detach().numpy()
    assert (loss >= exact * (1 - 1e-10)).all() and (loss <= exact * 1.01).all()
