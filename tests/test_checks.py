"""Input validation gives messages that name the argument and the shapes."""

from __future__ import annotations

import pytest
import torch

from pcflow._checks import check_context, check_lengths, check_points


def test_check_points_accepts_and_returns_shape() -> None:
    assert check_points("points", torch.zeros(2, 5, 3), 3) == (2, 5, 3)


@pytest.mark.parametrize(
    ("tensor", "pattern"),
    [
        (torch.zeros(5, 3), r"points must have shape \(B, N, 3\).*got shape \(5, 3\)"),
        (torch.zeros(2, 5, 4), r"got shape \(2, 5, 4\)"),
        (torch.zeros(2, 0, 3), "empty point sets"),
        (torch.tensor([[[0.0, float("nan"), 0.0]]]), "1 NaN"),
        (torch.tensor([[[0.0, float("inf"), 0.0]]]), "1 infinite"),
    ],
)
def test_check_points_rejects(tensor: torch.Tensor, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        check_points("points", tensor, 3)


def test_check_points_rejects_integers() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        check_points("points", torch.zeros(2, 5, 3, dtype=torch.long), 3)


def test_check_context_batch_mismatch() -> None:
    with pytest.raises(ValueError, match="batch size 3 but the points have batch size 2"):
        check_context("context", torch.zeros(3, 8), 2, 8)


def test_check_context_missing_and_unexpected() -> None:
    with pytest.raises(ValueError, match="required"):
        check_context("context", None, 2, 8)
    with pytest.raises(ValueError, match="takes no context"):
        check_context("context", torch.zeros(2, 8), 2, None)


def test_check_lengths_range() -> None:
    check_lengths("x_lengths", torch.tensor([1, 4]), 2, 4)
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        check_lengths("x_lengths", torch.tensor([0, 4]), 2, 4)
    with pytest.raises(ValueError, match=r"shaped \(2,\)"):
        check_lengths("x_lengths", torch.tensor([1, 2, 3]), 2, 4)
