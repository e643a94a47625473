"""PointNetEncoder: brute-force reference, invariances, padding with lengths, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pcflow.encoders import PointNetEncoder

NORMS = [None, "layer", "batch"]


def _reference(encoder: PointNetEncoder, points: torch.Tensor) -> torch.Tensor:
    """Loop over sets and points, applying each linear layer by hand (norm=None only)."""
    linears = [m for m in encoder.mlp if isinstance(m, nn.Linear)]
    out = []
    for cloud in points:
        features = []
        for point in cloud:
            h = point
            for linear in linears:
                h = torch.relu(linear.weight @ h + linear.bias)
            features.append(h)
        out.append(torch.stack(features).max(dim=0).values)
    return torch.stack(out)


def test_default_widths_are_the_papers() -> None:
    encoder = PointNetEncoder()
    shapes = [tuple(m.weight.shape) for m in encoder.mlp if isinstance(m, nn.Linear)]
    assert shapes == [(64, 3), (128, 64), (256, 128), (512, 256)]
    assert encoder(torch.randn(2, 10, 3)).shape == (2, 512)


def test_matches_per_point_loop() -> None:
    encoder = PointNetEncoder(out_features=16, hidden_features=(8, 12))
    points = torch.randn(3, 7, 3, dtype=torch.float64)
    encoder = encoder.double()
    torch.testing.assert_close(encoder(points), _reference(encoder, points))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("training", [False, True])
def test_permutation_invariance(norm: str | None, training: bool) -> None:
    encoder = PointNetEncoder(out_features=32, hidden_features=(16, 16), norm=norm).double()
    encoder.train(training)
    points = torch.randn(4, 50, 3, dtype=torch.float64)
    permuted = torch.stack([cloud[torch.randperm(50)] for cloud in points])
    torch.testing.assert_close(encoder(permuted), encoder(points))


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    num_points=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_permutation_invariance_property(batch: int, num_points: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    encoder = PointNetEncoder(out_features=8, hidden_features=(8,), norm="layer").double()
    points = torch.randn(batch, num_points, 3, generator=generator, dtype=torch.float64)
    order = torch.stack([torch.randperm(num_points, generator=generator) for _ in range(batch)])
    permuted = torch.gather(points, 1, order[..., None].expand(-1, -1, 3))
    torch.testing.assert_close(encoder(permuted), encoder(points))


@pytest.mark.parametrize("norm", NORMS)
def test_duplicated_points_do_not_change_the_output(norm: str | None) -> None:
    # BatchNorm in training mode changes its statistics with duplicates; evaluation mode is exact.
    encoder = PointNetEncoder(out_features=32, hidden_features=(16,), norm=norm).double().eval()
    points = torch.randn(2, 30, 3, dtype=torch.float64)
    duplicated = torch.cat([points, points[:, torch.randint(0, 30, (45,))]], dim=1)
    torch.testing.assert_close(encoder(duplicated), encoder(points))


def test_any_number_of_points() -> None:
    encoder = PointNetEncoder(out_features=8, hidden_features=(4,))
    for num_points in (1, 2, 17, 300):
        assert encoder(torch.randn(2, num_points, 3)).shape == (2, 8)


@pytest.mark.parametrize("norm", [None, "layer"])
def test_lengths_match_encoding_each_set_alone(norm: str | None) -> None:
    encoder = PointNetEncoder(out_features=16, hidden_features=(8,), norm=norm).double()
    sizes = [5, 12, 1]
    padded = torch.full((3, 12, 3), float("nan"), dtype=torch.float64)
    clouds = [torch.randn(n, 3, dtype=torch.float64) for n in sizes]
    for i, cloud in enumerate(clouds):
        padded[i, : len(cloud)] = cloud
    out = encoder(padded, lengths=torch.tensor(sizes))
    expected = torch.cat([encoder(cloud[None]) for cloud in clouds])
    torch.testing.assert_close(out, expected)


def test_lengths_with_batch_norm_exclude_padding_from_statistics() -> None:
    encoder = PointNetEncoder(out_features=16, hidden_features=(8,), norm="batch").double().train()
    sizes = torch.tensor([4, 9])
    padded = torch.randn(2, 9, 3, dtype=torch.float64)
    out = encoder(padded, lengths=sizes)
    # Reference: all valid points of the batch as one set for the statistics, then a max per set.
    valid = torch.cat([padded[0, :4], padded[1, :9]])
    per_point = encoder.mlp(valid)
    expected = torch.stack([per_point[:4].amax(0), per_point[4:].amax(0)])
    torch.testing.assert_close(out, expected)
    other_padding = padded.clone()
    other_padding[0, 4:] = 1e3
    torch.testing.assert_close(encoder(other_padding, lengths=sizes), out)


def test_point_features_are_returned_and_padding_is_zero() -> None:
    encoder = PointNetEncoder(out_features=8, hidden_features=(4,), return_point_features=True)
    points = torch.randn(2, 6, 3)
    pooled, per_point = encoder(points, lengths=torch.tensor([6, 3]))
    assert per_point.shape == (2, 6, 8)
    assert torch.equal(per_point[1, 3:], torch.zeros(3, 8))
    torch.testing.assert_close(pooled[0], per_point[0].amax(0))
    torch.testing.assert_close(pooled[1], per_point[1, :3].amax(0))


def test_gradients_reach_points() -> None:
    encoder = PointNetEncoder(out_features=8, hidden_features=(16,), norm="batch")
    points = torch.randn(3, 20, 3, requires_grad=True)
    encoder(points).sum().backward()
    assert points.grad is not None and points.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("points", "lengths", "error", "pattern"),
    [
        (torch.randn(2, 5, 2), None, ValueError, r"points must have shape \(B, N, 3\)"),
        (torch.randn(5, 3), None, ValueError, "3 dimensions"),
        (torch.zeros(2, 5, 3, dtype=torch.long), None, TypeError, "floating-point"),
        (torch.full((1, 4, 3), float("nan")), None, ValueError, "NaN"),
        (torch.randn(2, 5, 3), torch.tensor([0, 5]), ValueError, r"lengths must lie in \[1, 5\]"),
        (torch.randn(2, 5, 3), torch.tensor([2, 6]), ValueError, r"lengths must lie in \[1, 5\]"),
        (torch.randn(2, 5, 3), torch.tensor([2]), ValueError, r"lengths must be .* \(2,\)"),
    ],
)
def test_bad_input_is_rejected(
    points: torch.Tensor, lengths: torch.Tensor | None, error: type, pattern: str
) -> None:
    encoder = PointNetEncoder(out_features=8, hidden_features=(4,))
    with pytest.raises(error, match=pattern):
        encoder(points, lengths)


def test_nan_in_valid_points_is_rejected_with_lengths() -> None:
    points = torch.randn(1, 4, 3)
    points[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="valid entries"):
        PointNetEncoder(out_features=8)(points, torch.tensor([2]))


def test_bad_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="norm must be"):
        PointNetEncoder(norm="group")
