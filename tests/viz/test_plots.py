"""Tests for pcflow.viz.plot_point_clouds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcflow.viz import plot_point_clouds


def test_one_panel_per_cloud_with_equal_axes() -> None:
    clouds = [torch.rand(50, 3), np.random.default_rng(0).normal(size=(80, 3)) * 3]
    figure = plot_point_clouds(clouds, titles=["a", "b"])
    axes = figure.get_axes()
    assert len(axes) == 2 and all(a.name == "3d" for a in axes)
    for axis in axes:
        spans = [np.ptp(axis.get_xlim()), np.ptp(axis.get_ylim()), np.ptp(axis.get_zlim())]
        assert spans == pytest.approx([spans[0]] * 3)
    # Shared limits: the panels' cubes are identical, so sizes compare across panels.
    assert axes[0].get_xlim() == axes[1].get_xlim()
    assert axes[0].get_title() == "a"
    # Colours follow depth: every point gets its own colour value from the colour map.
    assert len(axes[0].collections[0].get_array()) == 50


def test_images_above_clouds_and_png_written(tmp_path: Path) -> None:
    clouds = [torch.rand(30, 3) for _ in range(3)]
    images = [torch.rand(3, 16, 16), np.random.default_rng(0).random((16, 16, 3)), None]
    path = tmp_path / "sub" / "grid.png"
    figure = plot_point_clouds(clouds, images=images, path=path, columns=2, dpi=40)
    assert len([a for a in figure.get_axes() if a.name == "3d"]) == 3
    assert len([a for a in figure.get_axes() if a.name != "3d"]) == 3
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size[0] > 50
        assert np.asarray(picture.convert("L")).std() > 0  # not a blank canvas


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        plot_point_clouds([])
    with pytest.raises(ValueError, match=r"clouds\[1\] must have shape \(N, 3\)"):
        plot_point_clouds([torch.rand(5, 3), torch.rand(5, 2)])
    with pytest.raises(ValueError, match="NaN"):
        plot_point_clouds([torch.full((5, 3), float("nan"))])
    with pytest.raises(ValueError, match="titles has 2 entries"):
        plot_point_clouds([torch.rand(5, 3)], titles=["a", "b"])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        plot_point_clouds([torch.rand(5, 3)], images=[torch.rand(5, 7, 7, 7)])
