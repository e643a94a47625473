"""Tests of PointActNorm: data initialisation, exact log-determinant, round trips."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from pcflow.transforms import PointActNorm


def test_data_initialisation_normalises_first_batch():
    layer = PointActNorm(3)
    points = torch.randn(4, 200, 3, dtype=torch.float64) * torch.tensor([5.0, 0.1, 2.0]) + 3
    layer = layer.double()
    outputs, _ = layer(points)
    flat = outputs.reshape(-1, 3)
    torch.testing.assert_close(
        flat.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0
    )
    # eps = 1e-6 is added to the standard deviation (0.1 for y): relative 1e-5.
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(flat.std(0, unbiased=False), ones, rtol=1e-4, atol=0)
    assert bool(layer.initialized)
    # Later batches reuse the parameters: no re-initialisation.
    before = layer.log_scale.detach().clone()
    layer(points * 10)
    torch.testing.assert_close(layer.log_scale.detach(), before)


def test_eval_mode_does_not_initialise():
    layer = PointActNorm(3).eval()
    points = torch.randn(2, 10, 3) * 4
    outputs, logabsdet = layer(points)
    torch.testing.assert_close(outputs, points)
    assert not bool(layer.initialized) and torch.equal(logabsdet, torch.zeros(2))


def test_logabsdet_and_round_trip():
    layer = PointActNorm(3).double()
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([0.3, -1.2, 0.5]))
        layer.shift.copy_(torch.tensor([1.0, 2.0, -3.0]))
    layer.initialized.fill_(True)
    points = torch.randn(2, 5, 3, dtype=torch.float64)
    outputs, logabsdet = layer(points)
    point_jacobian = jacobian(lambda x: layer(x.view(1, 1, 3))[0].view(3), points[0, 0])
    per_point = torch.linalg.slogdet(point_jacobian)[1]
    torch.testing.assert_close(
        logabsdet, torch.full((2,), 5 * float(per_point), dtype=torch.float64)
    )
    back, back_logabsdet = layer.inverse(outputs)
    assert (back - points).abs().max() < 1e-12
    torch.testing.assert_close(back_logabsdet, -logabsdet)


def test_state_dict_keeps_initialisation():
    layer = PointActNorm(3)
    layer(torch.randn(2, 30, 3) * 3)
    fresh = PointActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)
    points = torch.randn(1, 4, 3)
    torch.testing.assert_close(fresh(points)[0], layer(points)[0])


def test_errors():
    layer = PointActNorm(3)
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, N, 3\)"):
        layer(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="empty point sets"):
        layer(torch.randn(2, 0, 3))
    with pytest.raises(ValueError, match="must be finite"):
        layer(torch.full((1, 2, 3), float("nan")))
