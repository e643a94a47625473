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


def _camera(azimuth: float = 30.0, size: int = 32) -> dict:
    from pcflow.data.camera import intrinsics_matrix, look_at_extrinsics

    return {
        "intrinsics": torch.as_tensor(intrinsics_matrix(1.1 * size, size), dtype=torch.float32),
        "extrinsics": torch.as_tensor(look_at_extrinsics(azimuth, 20.0, 2.5), dtype=torch.float32),
    }


def test_reconstruction_grid_from_the_image_viewpoint(tmp_path: Path) -> None:
    from pcflow.data.camera import project_points
    from pcflow.viz import plot_reconstructions

    generator = torch.Generator().manual_seed(0)
    truths = [torch.rand(200, 3, generator=generator) - 0.5 for _ in range(3)]
    predictions = [t + 0.05 * torch.randn(200, 3, generator=generator) for t in truths]
    cameras = [_camera(a) for a in (0.0, 60.0, 120.0)]
    images = [torch.rand(3, 32, 32, generator=generator) for _ in range(3)]
    path = tmp_path / "grid.png"
    figure = plot_reconstructions(
        images, predictions, truths, path, cameras=cameras, labels=["a", "b", "c"], dpi=50
    )
    axes = figure.get_axes()
    # Two rows of (image, prediction, truth) x 2 examples, the last group half empty.
    assert len(axes) == 3 * 3 and all(a.name != "3d" for a in axes)
    assert [a.get_title() for a in axes[:3]] == ["input image", "prediction", "truth"]
    # Each cloud is drawn where the example's camera sees it, on the image's pixel frame.
    truth_axis = axes[5]  # example 1: image, prediction, truth
    drawn = truth_axis.collections[0].get_offsets()
    pixels, _ = project_points(truths[1].double(), cameras[1]["intrinsics"].double(),
                               cameras[1]["extrinsics"].double())  # fmt: skip
    np.testing.assert_allclose(np.sort(drawn[:, 0]), np.sort(pixels[:, 0].numpy()), rtol=1e-6)
    assert truth_axis.get_xlim() == (0.0, 32.0) and truth_axis.get_ylim() == (32.0, 0.0)
    assert any(text.get_text() == "b" for text in axes[3].texts)
    with Image.open(path) as picture:  # sized for a page: wider than tall
        assert picture.size[0] > picture.size[1]


def test_reconstruction_grid_methods_and_3d_fallback() -> None:
    from pcflow.viz import plot_reconstructions

    clouds = [torch.rand(50, 3) for _ in range(2)]
    figure = plot_reconstructions(
        [torch.rand(3, 16, 16)] * 2, {"A": clouds, "B": clouds}, clouds, examples_per_row=1
    )
    axes = figure.get_axes()
    assert [a.get_title() for a in axes[:4]] == ["input image", "A", "B", "truth"]
    panels = [a for a in axes if a.name == "3d"]
    assert len(panels) == 6 and panels[0].get_xlim() == panels[-1].get_xlim()  # one scale


def test_reconstruction_grid_bad_input() -> None:
    from pcflow.viz import plot_reconstructions

    cloud = torch.rand(5, 3)
    with pytest.raises(ValueError, match="images is empty"):
        plot_reconstructions([], [], [])
    with pytest.raises(ValueError, match="predictions 'prediction' has 1 clouds but there are 2"):
        plot_reconstructions([torch.rand(3, 8, 8)] * 2, [cloud], [cloud, cloud])
    with pytest.raises(ValueError, match="cameras has 1 entries"):
        plot_reconstructions([torch.rand(3, 8, 8)] * 2, [cloud] * 2, [cloud] * 2, cameras=[{}])
    with pytest.raises(ValueError, match=r"cameras\[0\] must be a mapping"):
        plot_reconstructions([torch.rand(3, 8, 8)], [cloud], [cloud], cameras=[None])
    with pytest.raises(ValueError, match=r"clouds\[0\] holds NaN"):
        plot_reconstructions([torch.rand(3, 8, 8)], [cloud * float("nan")], [cloud])


def test_sample_reconstructions_take_image_camera_and_label_from_the_samples() -> None:
    from pcflow.viz import plot_sample_reconstructions

    generator = torch.Generator().manual_seed(1)
    samples = [
        {
            "image": torch.rand(3, 32, 32, generator=generator),
            "points": torch.rand(100, 3, generator=generator) - 0.5,
            "camera": _camera(angle),
            "category_name": name,
        }
        for angle, name in ((0.0, "mug"), (90.0, "lamp"))
    ]
    predictions = {"FlowGAN": [s["points"] + 0.01 for s in samples]}
    figure = plot_sample_reconstructions(samples, predictions, examples_per_row=1)
    axes = figure.get_axes()
    assert [a.get_title() for a in axes[:3]] == ["input image", "FlowGAN", "truth"]
    assert all(a.name != "3d" for a in axes)  # drawn through the samples' cameras
    assert any(text.get_text() == "lamp" for text in axes[3].texts)
    # A sample without a camera: all are drawn in 3D, none projected.
    del samples[1]["camera"]
    figure = plot_sample_reconstructions(samples, [s["points"] for s in samples])
    assert any(a.name == "3d" for a in figure.get_axes())
