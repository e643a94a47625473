"""Pictures of reconstructions: seeded, and a diverged model's clouds left out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pcflow.viz import draw_reconstructions, seeded_reconstruction


class Noisy(nn.Module):
    """Predicts random clouds; ``poisoned`` predictions hold an infinite point."""

    def __init__(self, poisoned: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.poisoned = poisoned

    def reconstruct(self, images, num_points, sampling=None):
        temperature = 1.0 if sampling is None else sampling.temperature
        clouds = temperature * torch.randn(images.shape[0], num_points, 3)
        clouds[list(self.poisoned), 0, 0] = float("inf")
        return clouds


def _samples(count: int) -> list[dict]:
    return [
        {"image": torch.rand(3, 16, 16), "points": torch.randn(30, 3), "category_name": f"c{i}"}
        for i in range(count)
    ]


def test_seeded_reconstruction_repeats_and_keeps_the_callers_rng() -> None:
    torch.manual_seed(3)
    images = torch.rand(2, 3, 8, 8)
    state = torch.get_rng_state()
    first = seeded_reconstruction(Noisy(), images, 20, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, seeded_reconstruction(Noisy(), images, 20, seed=1))
    other = seeded_reconstruction(Noisy(), images, 20, seed=2)
    assert not torch.equal(first, other)


def test_diverged_clouds_are_left_out_with_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    models = {"a": Noisy(), "b": Noisy(poisoned=(1,))}
    with pytest.warns(UserWarning, match=r"1 of 3 predicted clouds for x\.png .* at step 4"):
        path = draw_reconstructions(
            models, _samples(3), tmp_path / "x.png", num_points=30, when="at step 4"
        )
    assert path == tmp_path / "x.png" and path.stat().st_size > 0
    with pytest.warns(UserWarning, match="2 of 2"):
        nothing = draw_reconstructions(
            {"a": Noisy(poisoned=(0, 1))}, _samples(2), tmp_path / "y.png", num_points=30
        )
    assert nothing is None and not (tmp_path / "y.png").exists()
