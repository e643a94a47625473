"""Tests for pcflow.data.transforms and pcflow.data.camera."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcflow.data import (
    ColorJitter,
    Compose,
    NormalizePoints,
    RandomBackground,
    RandomRotation,
    Resize,
    SubsamplePoints,
    intrinsics_matrix,
    look_at_extrinsics,
    normalize_points,
    project_points,
    subsample_points,
)
from pcflow.data.transforms import random_rotation_matrix


def _sample(num_points: int = 50) -> dict:
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(num_points, 3, generator=generator) * 0.3 + torch.tensor([0.2, -0.1, 0.3])
    mask = torch.zeros(1, 20, 20)
    mask[:, 5:15, 6:14] = 1.0
    image = torch.ones(3, 20, 20)
    image[:, 5:15, 6:14] = torch.tensor([0.8, 0.2, 0.1])[:, None, None]
    return {
        "image": image,
        "mask": mask,
        "points": points,
        "points_target": points.flip(0) * 0.9,
        "normals": torch.nn.functional.normalize(points, dim=1),
        "camera": {
            "intrinsics": torch.from_numpy(intrinsics_matrix(22.0, 20)).float(),
            "extrinsics": torch.from_numpy(look_at_extrinsics(30.0, 25.0, 3.0)).float(),
        },
    }


def _project(sample: dict, key: str = "points") -> torch.Tensor:
    return project_points(
        sample[key], sample["camera"]["intrinsics"], sample["camera"]["extrinsics"]
    )[0]


def test_normalize_points_matches_numpy_reference() -> None:
    points = torch.randn(2, 40, 3, dtype=torch.float64) * 3 + 1
    sphere, centers, scales = normalize_points(points, "unit_sphere", "centroid")
    for b in range(2):
        p = points[b].numpy()
        expected = (p - p.mean(0)) / np.max(np.linalg.norm(p - p.mean(0), axis=1))
        np.testing.assert_allclose(sphere[b].numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(sphere * scales + centers, points)
    diagonal, _, _ = normalize_points(points[0], "unit_diagonal", "bbox")
    extent = diagonal.max(0).values - diagonal.min(0).values
    assert float(extent.norm()) == pytest.approx(1.0)
    box_centre = (diagonal.max(0).values + diagonal.min(0).values) / 2
    torch.testing.assert_close(box_centre, torch.zeros(3, dtype=torch.float64))


def test_normalize_points_errors() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        normalize_points(torch.randn(5, 2))
    with pytest.raises(ValueError, match="empty"):
        normalize_points(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="zero extent"):
        normalize_points(torch.ones(4, 3))
    with pytest.raises(ValueError, match="mode"):
        normalize_points(torch.randn(4, 3), mode="cube")
    with pytest.raises(ValueError, match="center"):
        normalize_points(torch.randn(4, 3), center="median")


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 40), wanted=st.integers(1, 90))
def test_subsample_points_any_size(count: int, wanted: int) -> None:
    points = torch.arange(count * 3, dtype=torch.float32).reshape(count, 3)
    index = subsample_points(points, wanted)
    assert index.shape == (wanted,) and int(index.min()) >= 0 and int(index.max()) < count
    if wanted <= count:
        assert len(set(index.tolist())) == wanted  # without replacement
    else:
        assert set(index.tolist()) == set(range(count))  # every point kept at least once


def test_subsample_transform_keeps_normals_with_their_points() -> None:
    sample = SubsamplePoints(17)(_sample())
    assert sample["points"].shape == (17, 3) and sample["points_target"].shape == (17, 3)
    torch.testing.assert_close(
        sample["normals"], torch.nn.functional.normalize(sample["points"], dim=1)
    )
    with pytest.raises(ValueError, match="empty"):
        subsample_points(torch.zeros(0, 3), 3)
    with pytest.raises(ValueError, match="num_points"):
        SubsamplePoints(0)


@pytest.mark.parametrize("axis", [None, "x", "y", "z"])
def test_random_rotation_matrix_is_a_rotation(axis: str | None) -> None:
    rotation = random_rotation_matrix(axis, 180.0, torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(3, dtype=torch.float64))
    assert float(torch.det(rotation)) == pytest.approx(1.0, abs=1e-6)
    if axis is not None:
        fixed = torch.zeros(3, dtype=torch.float64)
        fixed["xyz".index(axis)] = 1.0
        torch.testing.assert_close(rotation @ fixed, fixed)


def test_rotation_about_y_matches_the_formula() -> None:
    generator = torch.Generator().manual_seed(4)
    rotation = random_rotation_matrix("y", 90.0, generator)
    angle = math.atan2(float(rotation[0, 2]), float(rotation[0, 0]))
    c, s = math.cos(angle), math.sin(angle)
    expected = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    torch.testing.assert_close(rotation, expected)
    assert abs(angle) <= math.pi / 2 + 1e-6


@pytest.mark.parametrize(
    "transform",
    [
        RandomRotation("y"),
        RandomRotation(None),
        NormalizePoints(),
        NormalizePoints("unit_diagonal"),
    ],
)
def test_point_transforms_keep_projections(transform) -> None:
    sample = _sample()
    before = _project(sample), _project(sample, "points_target")
    after_sample = transform(sample)
    assert not torch.allclose(after_sample["points"], sample["points"])
    torch.testing.assert_close(_project(after_sample), before[0], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(
        _project(after_sample, "points_target"), before[1], atol=1e-3, rtol=1e-4
    )


def test_rotation_rotates_normals_too() -> None:
    after = RandomRotation(None)(_sample())
    torch.testing.assert_close(
        after["normals"], torch.nn.functional.normalize(after["points"], dim=1), atol=1e-5, rtol=0
    )


def test_normalize_transform_normalises_both_clouds_together() -> None:
    after = NormalizePoints()(_sample())
    both = torch.cat([after["points"], after["points_target"]])
    assert float(both.norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(both.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_resize_scales_images_and_intrinsics() -> None:
    sample = _sample()
    resized = Resize(40)(sample)
    assert resized["image"].shape == (3, 40, 40) and resized["mask"].shape == (1, 40, 40)
    torch.testing.assert_close(_project(resized), 2 * _project(sample))
    # The box mask [5, 15) x [6, 14) becomes [10, 30) x [12, 28) at twice the size (bilinear
    # blurs one pixel at the edges).
    assert float(resized["mask"][0, 11:29, 13:27].min()) == pytest.approx(1.0)
    assert float(resized["mask"][0, :9].max()) == 0.0
    assert float(resized["mask"][0, 31:].max()) == 0.0
    assert Resize((10, 30))(sample)["image"].shape == (3, 10, 30)


def test_colour_augmentations_leave_the_background_white() -> None:
    generator = torch.Generator().manual_seed(0)
    sample = _sample()
    jitter = Compose([ColorJitter(0.5, 0.5, 0.5, generator=generator)])
    jittered = jitter(sample)
    background = sample["mask"][0] == 0
    assert torch.all(jittered["image"][:, background] == 1.0)
    assert not torch.allclose(jittered["image"], sample["image"])
    recoloured = RandomBackground(p=1.0, generator=generator)(sample)
    colour = recoloured["image"][:, 0, 0]
    assert torch.all(recoloured["image"][:, background] == colour[:, None])
    torch.testing.assert_close(recoloured["image"][:, ~background], sample["image"][:, ~background])
    with pytest.raises(ValueError, match="brightness"):
        ColorJitter(brightness=2.0)


def test_look_at_camera_sees_the_origin_upright() -> None:
    intrinsics = intrinsics_matrix(50.0, 64)
    for azimuth, elevation in [(0, 30), (120, 20), (250, 40)]:
        extrinsics = look_at_extrinsics(azimuth, elevation, 2.5)
        rotation = extrinsics[:, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        centre = -rotation.T @ extrinsics[:, 3]
        np.testing.assert_allclose(np.linalg.norm(centre), 2.5)
        assert math.degrees(math.asin(centre[1] / 2.5)) == pytest.approx(elevation)
        pixels, depth = project_points(
            np.array([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0]]), intrinsics, extrinsics
        )
        torch.testing.assert_close(pixels[0], torch.tensor([32.0, 32.0], dtype=torch.float64))
        assert float(pixels[1, 1]) < 32.0  # world up is image up
        assert float(depth[0]) == pytest.approx(2.5)


def test_project_points_shape_errors() -> None:
    with pytest.raises(ValueError, match="points"):
        project_points(torch.zeros(4, 2), torch.eye(3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="extrinsics"):
        project_points(torch.zeros(4, 3), torch.eye(3), torch.zeros(3, 3))
