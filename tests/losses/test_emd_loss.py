"""Tests of pcflow.losses.emd_loss: value and gradient against scipy and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from pcflow.losses import emd_loss


def exact_emd(a: np.ndarray, b: np.ndarray) -> float:
    matrix = cdist(a, b)
    rows, cols = linear_sum_assignment(matrix)
    return float(matrix[rows, cols].mean())


def test_value_equals_exact_emd() -> None:
    x, y = torch.rand(3, 40, 3, dtype=torch.float64), torch.rand(3, 40, 3, dtype=torch.float64)
    per_pair = [exact_emd(a, b) for a, b in zip(x.numpy(), y.numpy())]
    assert emd_loss(x, y).item() == pytest.approx(np.mean(per_pair), rel=1e-10)
    assert emd_loss(x, y, batch_reduction="sum").item() == pytest.approx(sum(per_pair), rel=1e-10)
    np.testing.assert_allclose(emd_loss(x, y, batch_reduction=None).numpy(), per_pair, rtol=1e-10)


def test_gradient_equals_finite_differences_of_exact_emd() -> None:
    # Envelope theorem: with a unique optimal matching, the gradient with the matching fixed
    # is the gradient of the exact EMD. Central differences of scipy's EMD are the reference.
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(1, 8, 3, dtype=torch.float64, generator=generator).requires_grad_()
    y = torch.rand(1, 8, 3, dtype=torch.float64, generator=generator).requires_grad_()
    emd_loss(x, y, method="exact").backward()
    step = 1e-6
    for tensor, grad, first in [(x, x.grad, True), (y, y.grad, False)]:
        base = tensor.detach().numpy()[0]
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[index] += step
            minus[index] -= step
            other = (y if first else x).detach().numpy()[0]
            if first:
                numeric[index] = (exact_emd(plus, other) - exact_emd(minus, other)) / (2 * step)
            else:
                numeric[index] = (exact_emd(other, plus) - exact_emd(other, minus)) / (2 * step)
        np.testing.assert_allclose(grad[0].numpy(), numeric, atol=1e-6)


@pytest.mark.parametrize("method", ["auction", "sinkhorn"])
def test_approximate_loss_close_and_differentiable(method: str) -> None:
    x = torch.rand(2, 64, 3, requires_grad=True)
    y = torch.rand(2, 64, 3)
    exact = np.mean([exact_emd(a, b) for a, b in zip(x.detach().numpy(), y.numpy())])
    loss = emd_loss(x, y, method=method, tol=0.05)
    assert exact * (1 - 1e-5) <= loss.item() <= exact * 1.05
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_zero_distance_gives_zero_gradient() -> None:
    x = torch.rand(2, 16, 3, requires_grad=True)
    loss = emd_loss(x, x.detach().clone())
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_errors() -> None:
    with pytest.raises(ValueError, match="batch_reduction"):
        emd_loss(torch.rand(1, 4, 3), torch.rand(1, 4, 3), batch_reduction="max")
    with pytest.raises(ValueError, match="equal-size sets"):
        emd_loss(torch.rand(1, 4, 3), torch.rand(1, 5, 3))
