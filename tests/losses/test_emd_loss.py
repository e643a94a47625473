"""Tests of pcflow.losses.emd_loss: value and gradient against scipy and finite differences."""

from __future__ import annotations

import time

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
    loss = emd_loss(x, y, method="exact")
    assert loss.item() == pytest.approx(np.mean(per_pair), rel=1e-10)
    total = emd_loss(x, y, method="exact", batch_reduction="sum")
    assert total.item() == pytest.approx(sum(per_pair), rel=1e-10)
    per = emd_loss(x, y, method="exact", batch_reduction=None)
    np.testing.assert_allclose(per.numpy(), per_pair, rtol=1e-10)


def test_default_is_within_its_certified_tolerance() -> None:
    # The default ("auto") is the auction at tol = 5% on CPU: an upper bound within 5%.
    x, y = torch.rand(3, 100, 3, dtype=torch.float64), torch.rand(3, 100, 3, dtype=torch.float64)
    per_pair = np.array([exact_emd(a, b) for a, b in zip(x.numpy(), y.numpy())])
    values = emd_loss(x, y, batch_reduction=None).numpy()
    assert np.all(values >= per_pair * (1 - 1e-12))
    assert np.all(values <= per_pair * 1.05)


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


@pytest.mark.parametrize("method", ["exact", "auction", "sinkhorn"])
def test_huge_coordinates_give_the_exact_value_quickly(method: str) -> None:
    # Issue 19: every float32 cost was inf, the auction's bids NaN, and the loss never returned.
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 16, 3, generator=generator) * 1e20).requires_grad_()
    y = torch.randn(1, 16, 3, generator=generator) * 1e20
    reference = exact_emd(x.detach().double().numpy()[0], y.double().numpy()[0])
    # CPU time of this process: on a shared machine the wall clock also counts other jobs.
    start = time.process_time()
    loss = emd_loss(x, y, method=method, tol=0.01)
    loss.backward()
    assert time.process_time() - start < 1.0
    assert reference <= loss.item() * (1 + 1e-6) <= reference * 1.01 * (1 + 1e-6)
    assert torch.isfinite(x.grad).all()


def test_padded_batch_equals_the_unpadded_sets() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 30, 3, dtype=torch.float64, generator=generator).requires_grad_()
    y = torch.rand(2, 30, 3, dtype=torch.float64, generator=generator)
    lengths = torch.tensor([30, 17])
    loss = emd_loss(x, y, method="exact", batch_reduction=None, lengths=lengths)
    expected = [
        exact_emd(x[b, :n].detach().numpy(), y[b, :n].numpy()) for b, n in enumerate([30, 17])
    ]
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-10)
    loss.sum().backward()
    assert torch.equal(x.grad[1, 17:], torch.zeros(13, 3, dtype=torch.float64))
    assert bool((x.grad[1, :17].abs().sum(-1) > 0).all())
