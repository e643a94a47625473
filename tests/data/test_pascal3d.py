"""Tests for Pascal3D and its camera, on a fixture written in PASCAL3D+'s layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import trimesh
from PIL import Image

from pcflow.data import Pascal3D, pascal3d_camera, project_points

VIEW = {"azimuth": 40.0, "elevation": 15.0, "distance": 4.0, "focal": 1.0, "px": 41.0,
        "py": 33.0, "theta": 8.0, "viewport": 120.0}  # fmt: skip


def reference_project(points: np.ndarray, v: dict) -> np.ndarray:
    """PASCAL3D+'s project_3d.m, transcribed line by line (1-based pixel coordinates)."""
    a, e, d = math.radians(v["azimuth"]), math.radians(v["elevation"]), v["distance"]
    centre = np.array(
        [d * math.cos(e) * math.sin(a), -d * math.cos(e) * math.cos(a), d * math.sin(e)]
    )
    a, e = -a, -(math.pi / 2 - e)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    rotation = rx @ rz
    m = v["viewport"]
    projection = np.diag([m * v["focal"], m * v["focal"], -1.0]) @ np.concatenate(
        [rotation, -(rotation @ centre)[:, None]], axis=1
    )
    x = projection @ np.concatenate([points, np.ones((len(points), 1))], axis=1).T
    x = x[:2] / x[2]
    t = math.radians(v["theta"])
    x = (np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) @ x).T
    x[:, 1] = -x[:, 1]
    return x + np.array([v["px"], v["py"]])


def _cad_mesh() -> trimesh.Trimesh:
    # z-up like PASCAL3D+'s CAD models; asymmetric so that a mirrored camera would show.
    body = trimesh.creation.box([1.2, 0.5, 0.3])
    cabin = trimesh.creation.box([0.5, 0.4, 0.3])
    cabin.apply_translation([-0.2, 0.0, 0.3])
    return trimesh.util.concatenate([body, cabin])


def _struct_array(rows: list[dict]) -> np.ndarray:
    array = np.empty((1, len(rows)), dtype=[(k, "O") for k in rows[0]])
    for i, row in enumerate(rows):
        for key, value in row.items():
            array[0, i][key] = value
    return array


@pytest.fixture
def root(tmp_path: Path) -> Path:
    mesh = _cad_mesh()
    (tmp_path / "CAD").mkdir()
    other = trimesh.creation.icosphere(subdivisions=1)
    models = _struct_array(
        [
            {"vertices": np.asarray(other.vertices), "faces": np.asarray(other.faces) + 1.0},
            {"vertices": np.asarray(mesh.vertices), "faces": np.asarray(mesh.faces) + 1.0},
        ]
    )
    scipy.io.savemat(tmp_path / "CAD" / "car.mat", {"car": models})
    pixels = reference_project(np.asarray(mesh.vertices), VIEW)
    bbox = np.array([*pixels.min(0), *pixels.max(0)])
    viewpoint = {k: np.float64(v) for k, v in VIEW.items()}
    objects = [
        {"class": "car", "bbox": bbox, "viewpoint": viewpoint, "cad_index": 2.0,
         "truncated": 0.0, "occluded": 0.0, "difficult": 0.0},
        {"class": "person", "bbox": bbox, "viewpoint": viewpoint, "cad_index": 1.0,
         "truncated": 0.0, "occluded": 0.0, "difficult": 0.0},
        {"class": "car", "bbox": bbox, "viewpoint": viewpoint, "cad_index": 1.0,
         "truncated": 1.0, "occluded": 0.0, "difficult": 0.0},
    ]  # fmt: skip
    for image_id in ("n0001", "n0002"):
        images = tmp_path / "Images" / "car_imagenet"
        annotations = tmp_path / "Annotations" / "car_imagenet"
        images.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
        photo = np.full((64, 80, 3), 230, np.uint8)
        photo[int(bbox[1]) : int(bbox[3]), int(bbox[0]) : int(bbox[2])] = (40, 60, 200)
        Image.fromarray(photo).save(images / f"{image_id}.JPEG")
        record = {"filename": f"{image_id}.JPEG", "objects": _struct_array(objects)}
        scipy.io.savemat(annotations / f"{image_id}.mat", {"record": record})
    (tmp_path / "Image_sets").mkdir()
    (tmp_path / "Image_sets" / "car_imagenet_val.txt").write_text("n0001\nn0002\n")
    return tmp_path


def test_camera_matches_pascal3d_projection() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(30, 3))
    for _ in range(5):
        view = {
            "azimuth": rng.uniform(0, 360),
            "elevation": rng.uniform(-30, 60),
            "distance": rng.uniform(5, 9),
            "focal": 1.0,
            "px": rng.uniform(100, 300),
            "py": rng.uniform(100, 300),
            "theta": rng.uniform(-20, 20),
            "viewport": 2000.0,
        }
        intrinsics, extrinsics = pascal3d_camera(
            view["azimuth"],
            view["elevation"],
            view["distance"],
            view["focal"],
            (view["px"], view["py"]),
            view["theta"],
            view["viewport"],
        )
        np.testing.assert_allclose(extrinsics[:, :3] @ extrinsics[:, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(extrinsics[:, :3]) == pytest.approx(1.0)
        pixels, depth = project_points(points, intrinsics, extrinsics)
        assert bool((depth > 0).all())
        # 1-based pixel centres at k are 0-based centres at k - 1 + 0.5.
        np.testing.assert_allclose(pixels.numpy(), reference_project(points, view) - 0.5, atol=1e-8)


def test_objects_cropped_with_cad_points_and_silhouette(root: Path) -> None:
    data = Pascal3D(root, "val", categories=["car"], num_points=400, image_size=48, margin=0.0)
    assert len(data) == 4  # two car objects per image; the person is not a car
    sample = data[0]
    assert sample["has_points"] and sample["model_id"] == "n0001#0"
    assert sample["image"].shape == (3, 48, 48) and sample["mask"].shape == (1, 48, 48)
    assert sample["points"].shape == sample["points_target"].shape == (400, 3)
    assert float(sample["points"].norm(dim=1).max()) <= 1.0 + 1e-5
    _, distance, _ = trimesh.proximity.closest_point(
        _cad_mesh(), sample["points"].numpy().astype(np.float64)
    )  # normalised, so not on the raw mesh: check the shape through the camera instead
    assert distance.max() > 0
    pixels, depth = project_points(
        sample["points"], sample["camera"]["intrinsics"], sample["camera"]["extrinsics"]
    )
    assert bool((depth > 0).all())
    column, row = pixels.floor().long().unbind(-1)
    assert int(column.min()) >= -1 and int(column.max()) <= 48 and int(row.max()) <= 48
    column, row = column.clamp(0, 47), row.clamp(0, 47)
    assert (sample["mask"][0, row, column] > 0).float().mean() > 0.95
    # With no margin the silhouette spans the crop along the box's longer side.
    silhouette = sample["mask"][0] > 0
    columns = torch.nonzero(silhouette.any(0)).flatten()
    assert int(columns.min()) <= 1 and int(columns.max()) >= 46
    # The painted box in the photo lines up with the silhouette.
    blue = sample["image"][2] - sample["image"][0] > 0.3
    assert (blue & silhouette).sum() / silhouette.sum() > 0.8


def test_skips_and_objects_without_cad(root: Path) -> None:
    data = Pascal3D(root, "val", categories=["car"], skip_difficult=True, image_size=32)
    assert len(data) == 2
    (root / "CAD" / "car.mat").unlink()
    sample = Pascal3D(root, "val", categories=["car"], num_points=50, image_size=32)[0]
    assert not sample["has_points"]
    assert torch.equal(sample["points"], torch.zeros(50, 3))
    assert torch.equal(sample["mask"], torch.ones(1, 32, 32))
    # Without split lists, sorted ids are split 80/20: both images (round(1.6) = 2) train.
    (root / "Image_sets" / "car_imagenet_val.txt").unlink()
    assert len(Pascal3D(root, "train", categories=["car"])) == 4
    with pytest.warns(UserWarning, match="no annotated objects"):
        assert len(Pascal3D(root, "val", categories=["car"])) == 0


def test_bad_input_is_named(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Pascal3D(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown PASCAL3D"):
        Pascal3D(root, categories=["dragon"])
    with pytest.raises(FileNotFoundError, match="bus_imagenet"):
        Pascal3D(root, categories=["bus"])
    (root / "Annotations" / "car_imagenet" / "n0002.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(ValueError, match=r"n0002\.mat"):
        Pascal3D(root, categories=["car"])
    (root / "Annotations" / "car_imagenet" / "n0002.mat").unlink()
    (root / "Images" / "car_imagenet" / "n0001.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(FileNotFoundError, match=r"n0002\.mat"):
        Pascal3D(root, categories=["car"])
    (root / "Image_sets" / "car_imagenet_val.txt").write_text("n0001\n")
    with pytest.raises(ValueError, match=r"n0001\.JPEG"):
        Pascal3D(root, categories=["car"])[0]


def test_pascal_subset_splits_follow_the_voc_lists(root: Path) -> None:
    # The release's pascal subset: annotations per class, splits only in VOC's Main lists.
    annotations = root / "Annotations" / "car_pascal"
    annotations.mkdir()
    voc = root / "PASCAL" / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (root / "Images" / "car_pascal").mkdir()
    source = root / "Annotations" / "car_imagenet" / "n0001.mat"
    photo = root / "Images" / "car_imagenet" / "n0001.JPEG"
    for image_id in ("2008_000001", "2008_000002", "2008_000003"):
        (annotations / f"{image_id}.mat").write_bytes(source.read_bytes())
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(photo.read_bytes())
    (voc / "JPEGImages" / "2008_000003.jpg").rename(
        root / "Images" / "car_pascal" / "2008_000003.jpg"
    )
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    # VOC's lists name every image of the split; those without a car annotation are not cars.
    (main / "train.txt").write_text("2008_000001\n2008_000003\n2008_000050\n")
    (main / "val.txt").write_text("2008_000002\n2008_000077\n")
    train = Pascal3D(root, "train", ["car"], num_points=20, subset="pascal", image_size=16)
    val = Pascal3D(root, "val", ["car"], num_points=20, subset="pascal", image_size=16)
    assert [train[i]["model_id"] for i in range(len(train))] == [
        "2008_000001#0", "2008_000001#2", "2008_000003#0", "2008_000003#2"
    ]  # fmt: skip
    assert [val[i]["model_id"] for i in range(len(val))] == ["2008_000002#0", "2008_000002#2"]
    assert val[0]["image"].shape == (3, 16, 16) and train[3]["has_points"]
    (main / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"VOC's list .*ImageSets/Main/val\.txt"):
        Pascal3D(root, "val", ["car"], subset="pascal")
