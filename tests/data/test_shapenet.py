"""Tests for ShapeNetR2N2 on a tiny fixture written in 3D-R2N2's and PointFlow's layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from pcflow.data import ShapeNetR2N2, project_points, r2n2_camera, render_mesh

SYNSET = "03001627"  # chair
VIEWS = [(30.0, 25.0, 0.7), (200.0, 30.0, 0.8)]  # azimuth, elevation, distance fraction
SIZE = 40


def _mesh(shift: float) -> trimesh.Trimesh:
    # An L shape: asymmetric, so a wrong camera convention would not agree with the image.
    seat = trimesh.creation.box(
        [0.5, 0.1, 0.5], trimesh.transformations.translation_matrix([0, 0, 0])
    )
    back = trimesh.creation.box([0.5, 0.5, 0.1])
    back.apply_translation([0.0, 0.3, -0.2 + shift])
    return trimesh.util.concatenate([seat, back])


def _write_model(root: Path, split: str, model_id: str, shift: float) -> trimesh.Trimesh:
    mesh = _mesh(shift)
    folder = root / "ShapeNetRendering" / SYNSET / model_id / "rendering"
    folder.mkdir(parents=True)
    lines = []
    for view, (azimuth, elevation, distance) in enumerate(VIEWS):
        intrinsics, extrinsics = r2n2_camera(azimuth, elevation, distance, SIZE)
        rgba = render_mesh(mesh, intrinsics, extrinsics, SIZE, supersample=1)
        Image.fromarray(rgba, "RGBA").save(folder / f"{view:02d}.png")
        lines.append(f"{azimuth} {elevation} 0 {distance} 25")
    (folder / "rendering_metadata.txt").write_text("\n".join(lines) + "\n")
    clouds = root / "ShapeNetCore.v2.PC15k" / SYNSET / split
    clouds.mkdir(parents=True, exist_ok=True)
    points, _ = trimesh.sample.sample_surface(mesh, 3000, seed=0)
    np.save(clouds / f"{model_id}.npy", points.astype(np.float32))
    return mesh


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _write_model(tmp_path, "train", "model_a", 0.0)
    _write_model(tmp_path, "train", "model_b", 0.1)
    _write_model(tmp_path, "test", "model_c", 0.05)
    return tmp_path


def test_samples_and_cameras_agree_with_the_renderings(root: Path) -> None:
    data = ShapeNetR2N2(root, split="train", categories=["chair"], num_points=500, sample_seed=0)
    assert len(data) == 2 * 24  # pointcloud_root defaults to rendering_root
    data = ShapeNetR2N2(root, root, "train", categories=[SYNSET], num_points=500, views=[0, 1])
    assert len(data) == 4 and data.categories == ["chair"]
    for index in range(len(data)):
        sample = data[index]
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["mask"].shape == (1, SIZE, SIZE)
        assert sample["points"].shape == sample["points_target"].shape == (500, 3)
        assert sample["category_name"] == "chair" and sample["model_id"].startswith("model_")
        both = torch.cat([sample["points"], sample["points_target"]])
        assert float(both.norm(dim=1).max()) <= 1.0 + 1e-5  # unit sphere
        assert torch.all(sample["image"][:, sample["mask"][0] == 0] == 1.0)  # white background
        pixels, depth = project_points(
            sample["points"], sample["camera"]["intrinsics"], sample["camera"]["extrinsics"]
        )
        assert bool((depth > 0).all())
        column, row = pixels.floor().long().clamp(0, SIZE - 1).unbind(-1)
        assert (sample["mask"][0, row, column] > 0).float().mean() > 0.95


def test_resize_hdf5_layout_and_no_normalisation(root: Path) -> None:
    path = root / "clouds.h5"
    with h5py.File(path, "w") as file:
        group = file.create_group(f"{SYNSET}/train")
        clouds = [
            np.load(root / "ShapeNetCore.v2.PC15k" / SYNSET / "train" / f"model_{m}.npy")
            for m in "ab"
        ]
        group["points"] = np.stack(clouds)
        group["model_ids"] = np.array([b"model_a", b"model_b"])
    data = ShapeNetR2N2(
        root / "ShapeNetRendering",
        path,
        "train",
        categories=["chair"],
        num_points=100,
        image_size=24,
        normalize=None,
        views=[1],
    )
    sample = data[1]
    assert sample["image"].shape == (3, 24, 24) and sample["model_id"] == "model_b"
    stored = {tuple(r) for r in clouds[1].tolist()}
    assert {tuple(r) for r in sample["points"].tolist()} <= stored
    pixels, _ = project_points(
        sample["points"], sample["camera"]["intrinsics"], sample["camera"]["extrinsics"]
    )
    column, row = pixels.floor().long().clamp(0, 23).unbind(-1)
    assert (sample["mask"][0, row, column] > 0).float().mean() > 0.9
    with pytest.raises(FileNotFoundError, match="no group"):
        ShapeNetR2N2(root, path, "val", categories=["chair"])


def test_bad_models_are_skipped_with_a_warning(root: Path) -> None:
    clouds = root / "ShapeNetCore.v2.PC15k" / SYNSET / "train"
    np.save(clouds / "model_empty.npy", np.zeros((0, 3), np.float32))
    np.save(clouds / "model_norender.npy", np.ones((10, 3), np.float32))
    (clouds / "model_corrupt.npy").write_bytes(b"garbage")
    renderings = root / "ShapeNetRendering" / SYNSET
    for model in ("model_empty", "model_corrupt"):
        shutil.copytree(renderings / "model_a", renderings / model)
    with pytest.warns(UserWarning, match="skipped 3 models") as record:
        data = ShapeNetR2N2(root, root, "train", categories=["chair"])
    message = str(record[0].message)
    assert "model_empty" in message and "holds no points" in message
    assert "model_norender (no rendering folder)" in message and "model_corrupt" in message
    assert len(data) == 2 * 24


def test_corrupt_files_are_named(root: Path) -> None:
    data = ShapeNetR2N2(root, root, "test", categories=["chair"], views=[0, 1])
    folder = root / "ShapeNetRendering" / SYNSET / "model_c" / "rendering"
    (folder / "01.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"01\.png"):
        data[1]
    (folder / "rendering_metadata.txt").write_text("30 twenty 0 0.7 25\n")
    with pytest.raises(ValueError, match=r"rendering_metadata.txt, line 1"):
        data[0]
    # A cloud that breaks after the dataset was built is named when loaded.
    (folder / "rendering_metadata.txt").write_text("30 20 0 0.7 25\n")
    np.save(root / "ShapeNetCore.v2.PC15k" / SYNSET / "test" / "model_c.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"model_c\.npy"):
        data[0]


def test_missing_directories(tmp_path: Path, root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rendering_root"):
        ShapeNetR2N2(tmp_path / "nope", root, "train")
    with pytest.raises(FileNotFoundError, match="pointcloud_root"):
        ShapeNetR2N2(root, tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match=r"airplane|02691156"):
        ShapeNetR2N2(root, root, "train", categories=["airplane"])
    with pytest.raises(FileNotFoundError, match="no \\(rendering, point cloud\\) pairs"):
        ShapeNetR2N2(root, root, "val")
    with pytest.raises(ValueError, match="unknown ShapeNet category"):
        ShapeNetR2N2(root, root, "train", categories=["dragon"])
