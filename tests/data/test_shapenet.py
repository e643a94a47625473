"""Tests for ShapeNetR2N2 on a tiny fixture written in 3D-R2N2's and PointFlow's layouts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from pcflow.data import SORTED_80_20, ShapeNetR2N2, project_points, r2n2_camera, render_mesh

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
    # ShapeNetCore v1's layout, the meshes 3D-R2N2 rendered.
    (root / "ShapeNetCore.v1" / SYNSET / model_id).mkdir(parents=True)
    mesh.export(root / "ShapeNetCore.v1" / SYNSET / model_id / "model.obj")
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


SHIFTS = {"model_a": 0.0, "model_b": 0.1, "model_c": 0.05}


def _pytorch3d_pixels(
    points: np.ndarray, azimuth: float, elevation: float, ratio: float, size: int
):
    """PyTorch3D's R2N2 camera (meshrcnn's compute_extrinsic_matrix, BLENDER_INTRINSIC), to pixels.

    Transcribed from pytorch3d/datasets/r2n2: the 4x4 world-to-camera matrix with Blender's
    .obj import rotation folded in, the Blender projection, then NDC (x right, y up, in [-1, 1]
    across the image) to pixel coordinates with the top-left corner at (0, 0).
    """
    a, e = -math.pi * azimuth / 180.0, -math.pi * elevation / 180.0
    sa, ca, se, ce = math.sin(a), math.cos(a), math.sin(e), math.cos(e)
    world_to_object = np.array([[ca * ce, sa * ce, -se], [-sa, ca, 0], [ca * se, sa * se, ce]])
    object_to_camera = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rt = np.eye(4)
    rt[:3, :3] = object_to_camera @ world_to_object
    rt[:3, 3] = -(object_to_camera @ np.array([ratio * 1.75, 0.0, 0.0]))
    rt = rt @ np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    blender = np.array(
        [[2.1875, 0, 0, 0], [0, 2.1875, 0, 0], [0, 0, -1.002002, -0.2002002], [0, 0, -1.0, 0]]
    )
    clip = np.concatenate([points, np.ones((len(points), 1))], 1) @ (blender @ rt).T
    ndc = clip[:, :3] / clip[:, 3:]
    return np.stack([(ndc[:, 0] + 1) / 2 * size, (1 - ndc[:, 1]) / 2 * size], 1)


def test_camera_matches_pytorch3d_r2n2() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.4, 0.4, size=(50, 3))
    for azimuth, elevation, ratio in rng.uniform([0, 10, 0.6], [360, 40, 0.95], size=(6, 3)):
        intrinsics, extrinsics = r2n2_camera(azimuth, elevation, ratio, 137)
        pixels, _ = project_points(points, intrinsics, extrinsics)
        expected = _pytorch3d_pixels(points, azimuth, elevation, ratio, 137)
        # float64 throughout: pixels of size ~100 agree to a few ulps.
        np.testing.assert_allclose(pixels.numpy(), expected, rtol=0, atol=1e-10)


def test_clouds_sampled_on_shapenet_v1_meshes(root: Path) -> None:
    data = ShapeNetR2N2(root, mesh_root=root / "ShapeNetCore.v1", split="train",
                        categories=["chair"], num_points=300, views=[0, 1], normalize=None,
                        mesh_points=2000, sample_seed=0)  # fmt: skip
    assert len(data) == 4
    for index in range(len(data)):
        sample = data[index]
        mesh = _mesh(SHIFTS[sample["model_id"]])
        both = torch.cat([sample["points"], sample["points_target"]]).double().numpy()
        _, distance, _ = trimesh.proximity.closest_point(mesh, both)
        # float32 rounding of coordinates below 1 in size.
        assert distance.max() <= 4 * np.finfo(np.float32).eps
        pixels, _ = project_points(sample["points"], **sample["camera"])
        column, row = pixels.floor().long().clamp(0, SIZE - 1).unbind(-1)
        assert (sample["mask"][0, row, column] > 0).float().mean() > 0.95
    # The mesh sample is seeded by the model: its views draw from one cloud (and share its
    # normalisation), so two views' subsets of 2 x 300 of 2,000 points share points.
    first, second = data[0], data[1]
    assert first["model_id"] == second["model_id"]
    rows = {tuple(r) for r in torch.cat([first["points"], first["points_target"]]).tolist()}
    assert rows & {tuple(r) for r in second["points"].tolist()}
    with pytest.raises(ValueError, match="pointcloud_root or mesh_root"):
        ShapeNetR2N2(root, root, mesh_root=root / "ShapeNetCore.v1")


def test_pytorch3d_splits_json_and_the_sorted_split(root: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits.json"
    table = {
        "train": {SYNSET: {"model_c": [1], "model_a": [0, 1]}},
        "test": {SYNSET: {"model_b": [0]}},
    }
    splits.write_text(json.dumps(table))
    for source in ({"mesh_root": root / "ShapeNetCore.v1"}, {"pointcloud_root": root}):
        data = ShapeNetR2N2(root, split="train", categories=["chair"], num_points=50,
                            splits=splits, **source)  # fmt: skip
        assert [(data[i]["model_id"], data[i]["view"]) for i in range(len(data))] == [
            ("model_c", 1),
            ("model_a", 0),
            ("model_a", 1),
        ]
    # FlowGAN's split: sorted model names, the first int(0.8 * 3) = 2 in train.
    kwargs = {"mesh_root": root / "ShapeNetCore.v1", "views": [0, 1], "splits": SORTED_80_20}
    train = ShapeNetR2N2(root, split="train", num_points=50, **kwargs)
    test = ShapeNetR2N2(root, split="test", num_points=50, **kwargs)
    assert [train[i]["model_id"] for i in range(len(train))] == ["model_a"] * 2 + ["model_b"] * 2
    assert [test[i]["model_id"] for i in range(len(test))] == ["model_c"] * 2
    with pytest.raises(ValueError, match="'train' and 'test', got 'val'"):
        ShapeNetR2N2(root, split="val", **kwargs)
    with pytest.raises(ValueError, match=r"has no 'val' \(found \['test', 'train'\]\)"):
        ShapeNetR2N2(root, root, "val", splits=splits)
    splits.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        ShapeNetR2N2(root, root, "train", splits=splits)
    with pytest.raises(FileNotFoundError, match="splits must be None, 'sorted_80_20' or"):
        ShapeNetR2N2(root, root, "train", splits=tmp_path / "missing.json")


def test_flowgan_trains_on_the_sorted_split_without_validation(root: Path) -> None:
    from pcflow.recipes.flowgan import FlowGANConfig, build_dataset

    config = FlowGANConfig.preset("tiny").with_overrides(
        [f"data.source={root}", f"data.options.mesh_root={root / 'ShapeNetCore.v1'}",
         "data.options.views=[0, 1]", "data.categories=[chair]"]
    )  # fmt: skip
    assert [len(build_dataset(config, split)) for split in ("train", "val", "test")] == [4, 0, 2]
    config = config.with_overrides(["data.options.splits=sorted_80_20"])
    del config.data.options["mesh_root"]
    config.data.options["pointcloud_root"] = str(root)
    assert [len(build_dataset(config, split)) for split in ("train", "val", "test")] == [4, 0, 2]


def test_categories_and_object_points_without_loading_samples(root: Path) -> None:
    from pcflow.data import CategorizedShapes

    data = ShapeNetR2N2(root, split="train", categories=["chair"], num_points=100, views=[0, 1])
    assert isinstance(data, CategorizedShapes) and data.num_objects == 2
    assert [data.sample_category(i) for i in range(len(data))] == ["chair"] * 4
    assert data.object_category(1) == "chair"
    for obj, model_id in enumerate(("model_a", "model_b")):
        raw = torch.from_numpy(
            np.load(root / "ShapeNetCore.v2.PC15k" / SYNSET / "train" / f"{model_id}.npy")
        ).double()
        # The whole cloud, normalised to the unit sphere around its centroid (the default).
        centred = raw - raw.mean(0)
        expected = centred / centred.norm(dim=1).max()
        points = torch.as_tensor(data.object_points(obj)).double()
        assert points.shape == raw.shape
        assert torch.allclose(points, expected, atol=1e-5)
        # The samples' points are a subset of it.
        sample = data[2 * obj]["points"].double()
        assert float(torch.cdist(sample, points).min(1).values.max()) < 1e-5


def test_points_only_reads_pointflow_tree_without_renderings(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcflow.data.shapenet as shapenet

    with_images = ShapeNetR2N2(root, split="train", num_points=500, views=[0, 1], sample_seed=4)
    expected = [with_images[2 * model] for model in range(2)]

    def must_not_decode(*args, **kwargs):
        raise AssertionError("a points-only dataset decoded an image")

    monkeypatch.setattr(shapenet, "load_image_rgba", must_not_decode)
    monkeypatch.setattr(shapenet, "_read_metadata", must_not_decode)
    data = ShapeNetR2N2(root, split="train", num_points=500, views=[0, 1], sample_seed=4,
                        image_size=16, images=False)  # fmt: skip
    assert len(data) == data.num_objects == 2
    for model, first_view in enumerate(expected):
        sample = data[model]
        assert sorted(sample) == [
            "category",
            "category_name",
            "model_id",
            "points",
            "points_target",
        ]
        assert sample["model_id"] == first_view["model_id"]
        assert torch.equal(sample["points"], first_view["points"])
        assert torch.equal(sample["points_target"], first_view["points_target"])
    # PointFlow's tree alone (no renderings at all): every cloud of the split is a sample,
    # normalised to the unit sphere around its centroid, as PC15k's loaders centre them.
    shutil.rmtree(root / "ShapeNetRendering")
    clouds = root / "ShapeNetCore.v2.PC15k"
    unrendered = clouds / SYNSET / "test" / "model_d.npy"
    np.save(unrendered, np.load(clouds / SYNSET / "test" / "model_c.npy")[:1000] * 2.0)
    test = ShapeNetR2N2(clouds, split="test", num_points=400, images=False)
    assert [test[i]["model_id"] for i in range(len(test))] == ["model_c", "model_d"]
    raw = torch.from_numpy(np.load(unrendered)).double()
    centred = raw - raw.mean(0)
    reference = centred / centred.norm(dim=1).max()
    points = test[1]["points"].double()
    assert points.shape == (400, 3)
    assert float(torch.cdist(points, reference).min(1).values.max()) < 1e-5
    assert float(points.norm(dim=1).max()) <= 1 + 1e-6
    with pytest.raises(FileNotFoundError, match=r"no point clouds for split 'val'"):
        ShapeNetR2N2(clouds, split="val", categories=None, images=False)
