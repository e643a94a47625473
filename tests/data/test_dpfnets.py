"""Tests for DPFNetsShapeNet on miniature files written in DPF-Nets' and FlowGAN's exact layouts.

The writer below follows DPF-Nets' preprocessing as its public code writes it: no groups, every
dataset at the root as ``<part>_<key>``; meshes centred on the area-weighted mean of their face
centroids and scaled to unit radius, with ``orig_c``/``orig_s`` to undo it; uint32 faces and
uint64 bounds; uint8 labels indexing the sorted synsets; models sorted by synset, then by model
folder name, the first ``int(0.8 n)`` of each synset in train; and 24 renderings per model,
``(24 M, 4, 137, 137)`` uint8, channel-first B, G, R, alpha. The renderings are made here with
3D-R2N2's camera around the model in ShapeNet's frame, so the tests know every view's camera.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from pcflow.data import (
    R2N2_SYNSETS,
    DPFNetsShapeNet,
    ShapeNetR2N2,
    load_image_rgba,
    project_points,
    r2n2_camera,
    render_mesh,
)
from pcflow.recipes.flowgan.data import SeededSamples

ROOT = Path(__file__).resolve().parents[2]
SIZE = 137
VIEWS = 24
CHAIR, AIRPLANE, CAR = "03001627", "02691156", "02958343"
# Bounds on the distance of a sampled point to its mesh: float32 rounding of coordinates of size
# at most ~1 (the stored frame), or of the stored float32 vertices, scale and centre on top.
EPS = float(np.finfo(np.float32).eps)


@dataclass
class Model:
    """A test model: its synset, folder name and mesh in ShapeNet's frame, its 24 cameras."""

    synset: str
    name: str
    mesh: trimesh.Trimesh
    cameras: list[tuple[float, float, float]] = field(default_factory=list)


def _shape(k: int) -> trimesh.Trimesh:
    # An L whose back moves, grows and leans with k: each model's silhouette is its own.
    seat = trimesh.creation.box([0.5, 0.1, 0.5])
    back = trimesh.creation.box([0.5 - 0.03 * k, 0.3 + 0.03 * k, 0.1])
    back.apply_transform(trimesh.transformations.rotation_matrix(0.12 * k, [0, 0, 1]))
    back.apply_translation([0.02 * k - 0.08, 0.2 + 0.01 * k, -0.2])
    mesh = trimesh.util.concatenate([seat, back])
    mesh.apply_scale(0.8 + 0.02 * k)  # ShapeNet's frame: neither centred nor unit radius
    mesh.apply_translation([0.01 * k, -0.02, 0.03])
    return mesh


def _model(synset: str, name: str, k: int) -> Model:
    cameras = [
        ((15.0 * v + 47.0 * k) % 360.0, 15.0 + 3.0 * (v % 5), 0.75 + 0.02 * (v % 3))
        for v in range(VIEWS)
    ]
    return Model(synset, name, _shape(k), cameras)


def _normalised(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, float]:
    """DPF-Nets' normalisation: area-weighted mean of face centroids, farthest vertex at 1."""
    triangles = mesh.vertices[mesh.faces]
    cross = np.cross(triangles[:, 2] - triangles[:, 0], triangles[:, 2] - triangles[:, 1])
    areas = np.linalg.norm(cross, axis=1) / 2
    center = (areas[:, None] * triangles.mean(1)).sum(0) / areas.sum()
    scale = np.linalg.norm(mesh.vertices - center, axis=1).max()
    return (mesh.vertices - center) / scale, center, float(scale)


def _rendering(model: Model, view: int) -> np.ndarray:
    """View ``view`` of ``model`` as RGBA ``(H, W, 4)`` uint8, 3D-R2N2's camera."""
    azimuth, elevation, distance = model.cameras[view]
    intrinsics, extrinsics = r2n2_camera(azimuth, elevation, distance, SIZE)
    return render_mesh(model.mesh, intrinsics, extrinsics, SIZE, supersample=1)


def _bounds(arrays: list[np.ndarray]) -> np.ndarray:
    """Offsets ``(M + 1,)`` of arrays stored one after the other."""
    return np.concatenate([[0], np.cumsum([len(a) for a in arrays])])


def write_meshes(file: h5py.File, part: str, models: list[Model], labels: list[int]) -> None:
    """One part of a DPF-Nets meshes file, as its preprocessing writes it."""
    normalised = [_normalised(m.mesh) for m in models]
    vertices = [v.astype(np.float32) for v, _, _ in normalised]
    faces = [np.asarray(m.mesh.faces, dtype=np.uint32) for m in models]
    file.create_dataset(f"{part}_vertices_c", data=np.concatenate(vertices), dtype=np.float32)
    file.create_dataset(f"{part}_faces_vc", data=np.concatenate(faces), dtype=np.uint32)
    file.create_dataset(f"{part}_vertices_c_bounds", data=_bounds(vertices), dtype=np.uint64)
    file.create_dataset(f"{part}_faces_bounds", data=_bounds(faces), dtype=np.uint64)
    file.create_dataset(f"{part}_orig_c", data=[c for _, c, _ in normalised], dtype=np.float32)
    file.create_dataset(f"{part}_orig_s", data=[s for _, _, s in normalised], dtype=np.float32)
    low = np.array([v.min(0) for v in vertices])
    high = np.array([v.max(0) for v in vertices])
    file.create_dataset(f"{part}_bbox_c", data=(low + high) / 2, dtype=np.float32)
    file.create_dataset(f"{part}_bbox_s", data=(high - low).max(1), dtype=np.float32)
    file.create_dataset(f"{part}_labels", data=labels, dtype=np.uint8)


def write_images(file: h5py.File, part: str, models: list[Model], labels: list[int]) -> None:
    """One part of a DPF-Nets images file: 24 renderings per model, BGRA, channel-first."""
    images = file.create_dataset(f"{part}_images", (VIEWS * len(models), 4, SIZE, SIZE), np.uint8)
    for m, model in enumerate(models):
        for view in range(VIEWS):
            rgba = _rendering(model, view)
            images[VIEWS * m + view] = rgba[..., [2, 1, 0, 3]].transpose(2, 0, 1)  # BGRA, CHW
    file.create_dataset(f"{part}_labels", data=labels, dtype=np.uint8)


def all13_parts(models: list[Model]) -> dict[str, list[Model]]:
    """DPF-Nets' split: sorted synsets, sorted models, the first int(0.8 n) of each in train."""
    parts: dict[str, list[Model]] = {"train": [], "test": []}
    for synset in sorted({m.synset for m in models}):
        ordered = sorted((m for m in models if m.synset == synset), key=lambda m: m.name)
        cut = int(0.8 * len(ordered))
        parts["train"] += ordered[:cut]
        parts["test"] += ordered[cut:]
    return parts


def write_pair(
    folder: Path, prefix: str, parts: dict[str, list[Model]], label_of: dict[str, int]
) -> Path:
    with h5py.File(folder / f"{prefix}_meshes.h5", "w") as meshes:
        with h5py.File(folder / f"{prefix}_images.h5", "w") as images:
            for part, models in parts.items():
                labels = [label_of[m.synset] for m in models]
                write_meshes(meshes, part, models, labels)
                write_images(images, part, models, labels)
    return folder / f"{prefix}_meshes.h5"


@pytest.fixture(scope="module")
def all13(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Model]]]:
    """A ``ShapeNetAll13`` pair: 5 chairs (4 train, 1 test), 3 airplanes (2 train, 1 test)."""
    folder = tmp_path_factory.mktemp("all13")
    # Folder names out of order: the file holds them sorted.
    names = ["d4", "a1", "e5", "b2", "c3"]
    models = [_model(CHAIR, name, k) for k, name in enumerate(names)]
    models += [_model(AIRPLANE, name, 5 + k) for k, name in enumerate(["z", "x", "y"])]
    parts = all13_parts(models)
    label_of = {s: i for i, s in enumerate(sorted(R2N2_SYNSETS))}
    write_pair(folder, "ShapeNetAll13", parts, label_of)
    for model in models:  # the renderings' folders and cameras the file was made from
        rendering = folder / "ShapeNetRendering" / model.synset / model.name / "rendering"
        rendering.mkdir(parents=True)
        lines = [f"{a} {e} 0 {d} 25" for a, e, d in model.cameras]
        (rendering / "rendering_metadata.txt").write_text("\n".join(lines) + "\n")
    return folder, parts


def _on_surface(mesh: trimesh.Trimesh, points: torch.Tensor) -> np.ndarray:
    _, distance, _ = trimesh.proximity.closest_point(mesh, points.double().numpy())
    return distance


def _in_mask(points: torch.Tensor, mask: torch.Tensor, intrinsics, extrinsics) -> float:
    """The fraction of ``points`` that project into ``mask`` ``(1, H, W)`` grown by one pixel.

    The renderer casts one ray per pixel centre, so a point of the surface can fall in a pixel
    next to the drawn silhouette, never further.
    """
    size = mask.shape[-1]
    pixels, depth = project_points(points.double(), intrinsics, extrinsics)
    assert bool((depth > 0).all())
    grown = torch.nn.functional.max_pool2d((mask > 0).float()[None], 3, 1, 1)[0, 0]
    column, row = pixels.floor().long().clamp(0, size - 1).unbind(-1)
    return float((grown[row, column] > 0).double().mean())


def _uncovered(sample: dict, model: Model, view: int) -> float:
    """The fraction of view ``view``'s silhouette pixels with no projected point within 2 px."""
    azimuth, elevation, distance = model.cameras[view]
    intrinsics, extrinsics = r2n2_camera(azimuth, elevation, distance, SIZE)
    pixels, _ = project_points(sample["points"].double(), intrinsics, extrinsics)
    rows, columns = np.nonzero(sample["mask"][0].numpy() > 0)
    distance_to_cloud, _ = cKDTree(pixels.numpy()).query(np.stack([columns, rows], 1) + 0.5)
    return float((distance_to_cloud > 2).mean())


def _inside(sample: dict, model: Model, view: int) -> float:
    """The fraction of the ShapeNet-frame cloud that falls on view ``view`` of ``model``."""
    azimuth, elevation, distance = model.cameras[view]
    intrinsics, extrinsics = r2n2_camera(azimuth, elevation, distance, SIZE)
    return _in_mask(sample["points"], sample["mask"], intrinsics, extrinsics)


def test_all13_pair_split_order_and_surfaces(all13) -> None:
    folder, parts = all13
    meshes = folder / "ShapeNetAll13_meshes.h5"
    train = DPFNetsShapeNet(meshes, "train", num_points=300, original_scale=True, sample_seed=1)
    assert len(train) == 6 * VIEWS and train.categories == ["airplane", "chair"]
    test = DPFNetsShapeNet(folder / "ShapeNetAll13_images.h5", "test", num_points=300)
    assert len(test) == 2 * VIEWS and DPFNetsShapeNet.parts(meshes) == ["train", "test"]
    chairs = DPFNetsShapeNet(meshes, "train", ["chair"], 300, original_scale=True, views=[3])
    assert len(chairs) == 4 and chairs.categories == ["chair"]
    assert [chairs[i]["model_id"] for i in range(4)] == ["train/2", "train/3", "train/4", "train/5"]
    for index in range(0, len(train), 7):
        sample = train[index]
        model = parts["train"][index // VIEWS]
        assert sample["category_name"] == R2N2_SYNSETS[model.synset]
        assert sample["view"] == index % VIEWS and "camera" not in sample
        assert sample["points"].shape == sample["points_target"].shape == (300, 3)
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["mask"].shape == (1, SIZE, SIZE)
        # On this model's surface, in ShapeNet's frame (v * orig_s + orig_c), both clouds.
        scale = 1.0 + np.abs(model.mesh.vertices).max()
        for key in ("points", "points_target"):
            assert _on_surface(model.mesh, sample[key]).max() <= 8 * EPS * scale
        # ... and not on the neighbouring model's: the test can tell models apart.
        other = parts["train"][(index // VIEWS + 1) % 6]
        assert _on_surface(other.mesh, sample["points"]).max() > 0.01


def test_each_view_pairs_with_its_own_model(all13) -> None:
    folder, parts = all13
    data = DPFNetsShapeNet(folder / "ShapeNetAll13_meshes.h5", "test", num_points=1000,
                           original_scale=True, sample_seed=0)  # fmt: skip
    for index in range(len(data)):
        sample = data[index]
        model, view = parts["test"][index // VIEWS], index % VIEWS
        assert _inside(sample, model, view) == 1.0
        # The cloud fits its own view best: through any other view's camera it leaves that
        # view's silhouette or leaves part of it uncovered.
        mismatch = [
            1 - _inside(sample, model, v) + _uncovered(sample, model, v) for v in range(VIEWS)
        ]
        assert mismatch[view] < min(m for v, m in enumerate(mismatch) if v != view)


def test_rendering_root_gives_model_ids_and_cameras(all13, tmp_path: Path) -> None:
    folder, parts = all13
    meshes = folder / "ShapeNetAll13_meshes.h5"
    for original_scale in (False, True):
        data = DPFNetsShapeNet(meshes, "test", num_points=500, rendering_root=folder,
                               original_scale=original_scale, sample_seed=0)  # fmt: skip
        for index in range(0, len(data), 5):
            sample = data[index]
            assert sample["model_id"] == parts["test"][index // VIEWS].name
            assert _in_mask(sample["points"], sample["mask"], **sample["camera"]) == 1.0
    resized = DPFNetsShapeNet(meshes, "train", ["chair"], 500, views=[4], image_size=64,
                              rendering_root=folder / "ShapeNetRendering")  # fmt: skip
    assert [resized[i]["model_id"] for i in range(4)] == ["a1", "b2", "c3", "d4"]
    sample = resized[2]
    pixels, _ = project_points(sample["points"], **sample["camera"])
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 64
    # Renderings of another set of models are refused, not paired by position.
    shutil.copytree(folder / "ShapeNetRendering", tmp_path / "ShapeNetRendering")
    shutil.rmtree(tmp_path / "ShapeNetRendering" / CHAIR / "e5")
    with pytest.raises(ValueError, match=r"4 models, whose sorted 80/20 split gives 3 train"):
        DPFNetsShapeNet(meshes, "train", rendering_root=tmp_path)


def test_images_match_the_renderings(all13, tmp_path: Path) -> None:
    folder, parts = all13
    data = DPFNetsShapeNet(folder / "ShapeNetAll13_meshes.h5", "train", ["chair"], 10,
                           views=[5, 17], image_size=64)  # fmt: skip
    full = DPFNetsShapeNet(folder / "ShapeNetAll13_meshes.h5", "train", ["chair"], 10)
    for index, (model, view) in enumerate([(0, 5), (0, 17), (1, 5)]):
        Image.fromarray(_rendering(parts["train"][2 + model], view), "RGBA").save(
            tmp_path / "r.png"
        )
        image, mask = load_image_rgba(tmp_path / "r.png")
        sample = full[model * VIEWS + view]
        assert torch.equal(sample["image"], image) and torch.equal(sample["mask"], mask)
        assert sample["image"][:, mask[0] == 0].eq(1).all()  # white background
        assert data[index]["image"].shape == (3, 64, 64)


def test_seeding_and_undoing_the_normalisation(all13) -> None:
    folder, _ = all13
    path = folder / "ShapeNetAll13_meshes.h5"
    stored = DPFNetsShapeNet(path, "train", num_points=200, sample_seed=3)
    original = DPFNetsShapeNet(path, "train", num_points=200, sample_seed=3, original_scale=True)
    first, again, other = stored[30], stored[30], stored[31]
    assert torch.equal(first["points"], again["points"])
    assert not torch.equal(first["points"], other["points"])  # same model, another draw
    assert not torch.equal(first["points"], first["points_target"])
    assert float(first["points"].norm(dim=1).max()) <= 1.0 + 2 * EPS  # stored at unit radius
    with h5py.File(path) as file:
        center = file["train_orig_c"][1].astype(np.float64)
        scale = float(file["train_orig_s"][1])
    expected = first["points"].double() * scale + torch.from_numpy(center)
    bound = 4 * EPS * (1.0 + float(expected.abs().max()))
    assert float((original[30]["points"].double() - expected).abs().max()) <= bound
    # Without sample_seed the draw comes from torch's generator, which SeededSamples seeds.
    free = SeededSamples(DPFNetsShapeNet(path, "train", num_points=200))
    assert torch.equal(free[(30, 7)]["points"], free[(30, 7)]["points"])
    assert not torch.equal(free[(30, 7)]["points"], free[(30, 8)]["points"])


def test_flowgan_per_category_pair(tmp_path: Path) -> None:
    models = [_model(CHAIR, name, k) for k, name in enumerate(["b", "a", "c"])]
    parts = all13_parts(models)
    # FlowGAN's files hold one synset, so its preprocessing labels it 0.
    write_pair(tmp_path, f"ShapeNet_{CHAIR}", parts, {CHAIR: 0})
    data = DPFNetsShapeNet(tmp_path / f"ShapeNet_{CHAIR}_images.h5", "train", num_points=100,
                           original_scale=True, views=[0, 9])  # fmt: skip
    assert len(data) == 4 and data.categories == ["chair"] and data.synsets == [CHAIR]
    for index in range(len(data)):
        sample = data[index]
        model = parts["train"][index // 2]
        assert sample["category_name"] == "chair"
        assert _inside(sample, model, sample["view"]) == 1.0
        assert _on_surface(model.mesh, sample["points"]).max() <= 8 * EPS * 2


# Labels of the 55 sorted synsets, from DPF-Nets' generation configs (chosen_label).
CORE55_LABELS = {AIRPLANE: 0, CAR: 16, CHAIR: 18}


def _write_core55(path: Path, models: dict[str, list[Model]]) -> None:
    with h5py.File(path, "w") as file:
        for part, items in models.items():
            write_meshes(file, part, items, [CORE55_LABELS[m.synset] for m in items])


@pytest.fixture
def core55(tmp_path: Path) -> tuple[Path, dict[str, list[Model]]]:
    chair, car = [_model(CHAIR, "c", 1), _model(CHAIR, "d", 2)], [_model(CAR, "e", 3)]
    parts = {
        "train": chair + car,
        "val": [_model(CHAIR, "f", 4)],
        "test": [_model(AIRPLANE, "g", 5)],
    }
    _write_core55(tmp_path / "ShapeNetCore55v2_meshes.h5", parts)
    return tmp_path / "ShapeNetCore55v2_meshes.h5", parts


def test_core55_meshes_are_rendered_with_their_cameras(core55) -> None:
    path, parts = core55
    assert DPFNetsShapeNet.parts(path) == ["train", "val", "test"]
    data = DPFNetsShapeNet(path, "train", num_points=300, views=[0, 7], render_size=48,
                           sample_seed=0)  # fmt: skip
    assert data.categories == ["car", "chair"] and len(data) == 6  # labels 16 and 18 of 55
    assert [data[i]["category_name"] for i in (0, 2, 4)] == ["chair", "chair", "car"]
    for original_scale in (False, True):
        data = DPFNetsShapeNet(path, "train", num_points=300, views=[0, 7], render_size=48,
                               original_scale=original_scale, sample_seed=0)  # fmt: skip
        for index in range(len(data)):
            sample = data[index]
            model = parts["train"][index // 2]
            assert sample["image"].shape == (3, 48, 48)
            camera = sample["camera"]
            pixels, _ = project_points(sample["points"], **camera)
            assert float(pixels.min()) > 0 and float(pixels.max()) < 48  # all in view
            inside = _in_mask(sample["points"], sample["mask"], **camera)
            assert inside == 1.0
            if original_scale:
                assert _on_surface(model.mesh, sample["points"]).max() <= 8 * EPS * 2
    val = DPFNetsShapeNet(path, "val", ["chair"], num_points=10, views=[1], render_size=16)
    assert len(val) == 1 and val[0]["model_id"] == "val/0"
    # The resampled file keeps the layout.
    resampled = path.with_name("ShapeNetCore55v2_meshes_resampled.h5")
    _write_core55(resampled, {"train": parts["val"], "test": parts["test"]})
    assert DPFNetsShapeNet(resampled, "test", views=[0], render_size=16)[0]["category_name"] == (
        "airplane"
    )


def test_foreign_layouts_are_named(tmp_path: Path, core55) -> None:
    path, _ = core55
    own = tmp_path / "clouds.h5"
    with h5py.File(own, "w") as file:  # pcflow's own layout, for ShapeNetR2N2
        file[f"{CHAIR}/train/points"] = np.zeros((1, 10, 3), np.float32)
        file[f"{CHAIR}/train/model_ids"] = np.array([b"a"])
    with pytest.raises(
        ValueError,
        match=rf"not in the DPF-Nets/FlowGAN layout.*found keys \[{CHAIR}\].*ShapeNetR2N2",
    ):
        DPFNetsShapeNet(own)
    with pytest.raises(ValueError, match=r"expected <part>_vertices_c, <part>_faces_vc"):
        DPFNetsShapeNet(own)
    # And the other way round: pcflow's R2N2 reader names the DPF-Nets layout it was given.
    (tmp_path / "ShapeNetRendering").mkdir()
    with pytest.raises(ValueError, match=r"DPF-Nets.*train_vertices_c.*DPFNetsShapeNet"):
        ShapeNetR2N2(tmp_path, path, "train")
    with pytest.raises(ValueError, match=r"has no part 'valid': its parts are \['train', 'val'"):
        DPFNetsShapeNet(path, "valid")
    with pytest.raises(ValueError, match=r"holds no model of category 'table'"):
        DPFNetsShapeNet(path, "train", ["table"])
    with pytest.raises(ValueError, match=r"unknown category 'dragon'"):
        DPFNetsShapeNet(path, "train", ["dragon"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DPFNetsShapeNet(tmp_path / "missing_meshes.h5")
    with pytest.raises(ValueError, match="rendering_root gives the cameras of the images files"):
        DPFNetsShapeNet(path, rendering_root=tmp_path)


def test_mismatched_truncated_and_empty_files(tmp_path: Path) -> None:
    models = [_model(CHAIR, name, k) for k, name in enumerate("abcde")]
    parts = all13_parts(models)
    label_of = {s: i for i, s in enumerate(sorted(R2N2_SYNSETS))}
    meshes = write_pair(tmp_path, "ShapeNetAll13", parts, label_of)
    images = tmp_path / "ShapeNetAll13_images.h5"
    # Images of another run: one model fewer in train.
    with h5py.File(tmp_path / "other_images.h5", "w") as file:
        write_images(file, "train", parts["train"][:3], [label_of[CHAIR]] * 3)
    with pytest.raises(
        ValueError, match=r"do not match: part 'train' has 72 images \(3 models.*4 meshes"
    ):
        DPFNetsShapeNet(meshes, images=tmp_path / "other_images.h5")
    # Truncated copies (an interrupted download): named, never a crash or a hang.
    for name, source in (("cut_meshes.h5", meshes), ("cut_images.h5", images)):
        data = source.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut_meshes\.h5: it is truncated or not HDF5"):
        DPFNetsShapeNet(tmp_path / "cut_meshes.h5")
    with pytest.raises(ValueError, match=r"images file .*cut_images\.h5: it is truncated"):
        DPFNetsShapeNet(meshes, images=tmp_path / "cut_images.h5")
    # An empty part, and bounds that do not cover the stored rows.
    with h5py.File(tmp_path / "empty_meshes.h5", "w") as file:
        write_meshes(file, "train", parts["train"], [label_of[CHAIR]] * 4)
        for key in ("vertices_c", "faces_vc"):
            file.create_dataset(
                f"test_{key}", (0, 3), np.float32 if key == "vertices_c" else np.uint32
            )
        for key in ("vertices_c_bounds", "faces_bounds"):
            file.create_dataset(f"test_{key}", data=[0], dtype=np.uint64)
        file.create_dataset("test_labels", (0,), np.uint8)
    with pytest.raises(ValueError, match=r"part 'test' is empty"):
        DPFNetsShapeNet(tmp_path / "empty_meshes.h5", "test")
    data = DPFNetsShapeNet(tmp_path / "empty_meshes.h5", "train", views=[0])
    assert len(data) == 4
    with h5py.File(tmp_path / "empty_meshes.h5", "a") as file:  # a mesh squashed to a point
        file["train_vertices_c"][: file["train_vertices_c_bounds"][1]] = 0.0
    with pytest.raises(ValueError, match=r"train model 0's faces have no area"):
        DPFNetsShapeNet(tmp_path / "empty_meshes.h5", "train", views=[0])[0]
    with h5py.File(tmp_path / "short_meshes.h5", "w") as file:
        write_meshes(file, "train", parts["train"], [label_of[CHAIR]] * 4)
        del file["train_faces_vc"]
        faces = np.concatenate([np.asarray(m.mesh.faces) for m in parts["train"]])
        file.create_dataset("train_faces_vc", data=faces[:-5], dtype=np.uint32)
    with pytest.raises(
        ValueError, match=r"faces_vc's bounds must rise from 0 to its \d+ rows.*truncated"
    ):
        DPFNetsShapeNet(tmp_path / "short_meshes.h5", "train")


def test_flowgan_builds_its_datasets_from_the_files(all13, core55) -> None:
    from pcflow.recipes.flowgan import FlowGANConfig, build_dataset

    folder, _ = all13
    config = FlowGANConfig.preset("tiny").with_overrides(
        [f"data.source={folder / 'ShapeNetAll13_meshes.h5'}", "data.categories=[chair]"]
    )
    train = build_dataset(config, "train")
    assert isinstance(train, DPFNetsShapeNet) and len(train) == 4 * VIEWS
    assert train.categories == ["chair"] and train[0]["points"].shape == (64, 3)
    assert len(build_dataset(config, "val")) == 0  # All13 has no val part: no validation
    evaluation = build_dataset(config, "test", evaluation=True)
    assert torch.equal(evaluation[3]["points"], evaluation[3]["points"])  # seeded
    config = config.with_overrides([f"data.source={core55[0]}", "data.options.views=[2]"])
    assert len(build_dataset(config, "val")) == 1


def _run(script: str, *arguments: str) -> None:
    command = [sys.executable, str(ROOT / "examples" / "flowgan" / script), "--no-progress"]
    # The PyTorch path of the flows: this test is about the data, and the fused kernel's
    # first-use build (minutes where checkouts share one extension cache) is tested elsewhere.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PCFLOW_FUSED": "0"}
    result = subprocess.run([*command, *arguments], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_train_and_evaluate_on_the_files(all13, core55) -> None:
    folder, _ = all13
    runs = (
        ("all13", folder / "ShapeNetAll13_meshes.h5", [], {"airplane", "chair"}),
        ("core55", core55[0], ["data.options={views: [0, 1], render_size: 32}"], {"airplane"}),
    )
    # Checkpoints of the tiny model are large: keep them in memory where possible.
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base, prefix="pcflow-dpfnets-") as scratch:
        for name, data, settings, categories in runs:
            out = Path(scratch) / name
            overrides = [item for setting in settings for item in ("--set", setting)]
            _run("train.py", "--preset", "tiny", "--data", str(data), "--out", str(out),
                 "--max-steps", "2", "--set", "train.threads=1", *overrides)  # fmt: skip
            checkpoint = out / "checkpoints" / "last.pt"
            _run("evaluate.py", "--checkpoint", str(checkpoint), "--data", str(data),
                 "--split", "test", "--out", str(out / "eval"))  # fmt: skip
            metrics = json.loads((out / "eval" / "metrics.json").read_text())
            assert set(metrics["FlowGAN"]["per_category"]) == categories


def test_categories_and_object_points_without_loading_samples(all13) -> None:
    from pcflow.data import CategorizedShapes

    folder, parts = all13
    meshes = folder / "ShapeNetAll13_meshes.h5"
    data = DPFNetsShapeNet(meshes, "train", num_points=200, original_scale=True, views=[0, 5])
    assert isinstance(data, CategorizedShapes) and data.num_objects == 6
    for obj, model in enumerate(parts["train"]):
        name = R2N2_SYNSETS[model.synset]
        assert data.object_category(obj) == name
        assert data.sample_category(2 * obj) == data.sample_category(2 * obj + 1) == name
        points = data.object_points(obj)
        assert points.shape == (200, 3)
        # On this model's surface in the samples' frame (ShapeNet's, with original_scale).
        scale = 1.0 + np.abs(model.mesh.vertices).max()
        assert _on_surface(model.mesh, torch.from_numpy(points)).max() <= 8 * EPS * scale
    assert np.array_equal(data.object_points(3), data.object_points(3))  # seeded by the object


def _must_not_run(*args, **kwargs):
    raise AssertionError("a points-only dataset read or rendered an image")


def _no_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way to an image fail: opening an images file, decoding a row, rendering."""
    import pcflow.data.dpfnets as dpfnets
    import pcflow.data.synthetic as synthetic

    opened = dpfnets._open

    def open_meshes_only(path: Path, role: str):
        assert role != "images", f"a points-only dataset opened the images file {path}"
        return opened(path, role)

    monkeypatch.setattr(dpfnets, "_open", open_meshes_only)
    monkeypatch.setattr(DPFNetsShapeNet, "_image", _must_not_run)
    monkeypatch.setattr(synthetic, "render_mesh", _must_not_run)


def test_points_only_all13_reads_no_image(all13, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, parts = all13
    meshes = folder / "ShapeNetAll13_meshes.h5"
    views = [4, 9]
    with_images = {
        original: DPFNetsShapeNet(
            meshes,
            "train",
            num_points=150,
            views=views,
            sample_seed=2,
            original_scale=original,
            rendering_root=folder,
        )
        for original in (False, True)
    }
    expected = {k: [data[m * len(views)] for m in range(6)] for k, data in with_images.items()}
    _no_images(monkeypatch)
    for original in (False, True):
        data = DPFNetsShapeNet(meshes, "train", num_points=150, views=views, sample_seed=2,
                               original_scale=original, rendering_root=folder,
                               images=False)  # fmt: skip
        assert len(data) == data.num_objects == 6 and data.sample_category(5) == "chair"
        for model in range(6):
            sample, first_view = data[model], expected[original][model]
            assert sorted(sample) == [
                "category", "category_name", "model_id", "points", "points_target"
            ]  # fmt: skip
            assert sample["model_id"] == first_view["model_id"] == parts["train"][model].name
            assert sample["category_name"] == first_view["category_name"]
            assert torch.equal(sample["points"], first_view["points"])
            assert torch.equal(sample["points_target"], first_view["points_target"])
    with pytest.raises(TypeError, match=r"images must be True, False or the path .* got 3"):
        DPFNetsShapeNet(meshes, images=3)


def test_points_only_core55_renders_nothing(core55, monkeypatch: pytest.MonkeyPatch) -> None:
    path, parts = core55
    rendered = DPFNetsShapeNet(path, "train", num_points=100, views=[0], render_size=16,
                               sample_seed=1, original_scale=True)  # fmt: skip
    expected = [rendered[m]["points"] for m in range(3)]
    _no_images(monkeypatch)
    for split in ("train", "val", "test"):
        data = DPFNetsShapeNet(path, split, num_points=100, views=[0], images=False,
                               original_scale=True, sample_seed=1)  # fmt: skip
        assert len(data) == len(parts[split])
        for model, sample in enumerate(data):
            assert "image" not in sample and "camera" not in sample
            assert _on_surface(parts[split][model].mesh, sample["points"]).max() <= 8 * EPS * 2
            if split == "train":  # the seed of the model's first (only) view
                assert torch.equal(sample["points"], expected[model])
