"""Tests of PointPermutation against plain indexing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nflows.transforms import CompositeTransform, InverseTransform

from pcflow.transforms import PointPermutation


@settings(max_examples=20, deadline=None)
@given(st.permutations(list(range(5))), st.integers(1, 3), st.integers(1, 6))
def test_matches_indexing_and_inverts(permutation, batch, num_points):
    layer = PointPermutation(permutation)
    points = torch.randn(batch, num_points, 5)
    outputs, logabsdet = layer(points)
    assert torch.equal(outputs, points[..., list(permutation)])
    assert torch.equal(logabsdet, torch.zeros(batch))
    back, _ = layer.inverse(outputs)
    assert torch.equal(back, points)
    assert torch.equal(CompositeTransform([layer, InverseTransform(layer)])(points)[0], points)


def test_ignores_context():
    layer = PointPermutation([1, 2, 0])
    points = torch.randn(2, 4, 3)
    assert torch.equal(layer(points, torch.randn(2, 7))[0], layer(points)[0])


@pytest.mark.parametrize("permutation", [[0, 0, 1], [1, 2, 3], []])
def test_rejects_non_permutations(permutation):
    with pytest.raises(ValueError, match="permutation must be a permutation"):
        PointPermutation(permutation)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, N, 3\)"):
        PointPermutation([2, 1, 0])(torch.randn(2, 4, 4))
