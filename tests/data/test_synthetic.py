"""Tests for the synthetic dataset: geometry, images, cameras, splits, determinism, caching."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import pcflow.data.synthetic as synthetic
from pcflow.data import (
    Resize,
    SyntheticConfig,
    SyntheticShapes,
    generate_synthetic_dataset,
    project_points,
)

# Chairs and airplanes: thin legs and wings are the hard cases for sampling and rendering.
SMALL = SyntheticConfig(
    categories=("chair", "airplane"),
    objects_per_category=3,
    views_per_object=2,
    image_size=32,
    points_per_object=2000,
    split_fractions=(0.34, 0.33, 0.33),
    objects_per_shard=2,
    seed=7,
)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, SMALL, num_workers=0, progress=False)
    return root


def _all_splits(root: Path) -> dict[str, SyntheticShapes]:
    return {s: SyntheticShapes(root, s, num_points=500, progress=False) for s in synthetic.SPLITS}


def _digest(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "shards").glob("*.npz"))
    }


def test_sample_matches_the_contract(small_root: Path) -> None:
    data = SyntheticShapes(small_root, "train", num_points=300, progress=False)
    assert data.categories == ["chair", "airplane"]
    assert list(SyntheticShapes.categories) == list(SyntheticConfig().categories)  # class default
    assert len(data) == data.num_objects * SMALL.views_per_object == 2 * 2
    sample = data[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (1, 32, 32) and sample["mask"].dtype == torch.float32
    assert sample["points"].shape == sample["points_target"].shape == (300, 3)
    assert sample["points"].dtype == torch.float32
    assert 0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1
    assert sample["camera"]["intrinsics"].shape == (3, 3)
    assert sample["camera"]["extrinsics"].shape == (3, 4)
    assert sample["camera"]["extrinsics"].dtype == torch.float32
    assert sample["view"] == 1 and sample["category_name"] == "chair" and sample["category"] == 0
    assert sample["model_id"] == "chair-00000"
    # Background is white: where alpha is 0 the RGB is exactly 1.
    background = sample["mask"][0] == 0
    assert background.any() and (~background).any()
    assert torch.all(sample["image"][:, background] == 1.0)
    # points and points_target are disjoint subsets of the stored sample.
    stored = torch.from_numpy(data.object_points(0))
    rows = {tuple(r) for r in stored.tolist()}
    first = {tuple(r) for r in sample["points"].tolist()}
    second = {tuple(r) for r in sample["points_target"].tolist()}
    assert first <= rows and second <= rows and not first & second


def test_points_lie_on_the_mesh_surface_and_mesh_is_normalised(small_root: Path) -> None:
    data = SyntheticShapes(small_root, "train", num_points=500, return_normals=True, progress=False)
    for index in range(data.num_objects):
        vertices, faces = data.mesh(index)
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        points = data.object_points(index)
        _, distance, _ = trimesh.proximity.closest_point(mesh, points[::4])
        assert distance.max() < 1e-4
        # Unit sphere: the largest vertex radius is 1, around the area-weighted centroid.
        assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        corners = vertices[faces].astype(np.float64)
        area = 0.5 * np.linalg.norm(
            np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
        )
        centroid = (corners.mean(axis=1) * area[:, None]).sum(0) / area.sum()
        assert np.abs(centroid).max() < 1e-5
    normals = data[0]["normals"]
    assert torch.allclose(normals.norm(dim=1), torch.ones(len(normals)), atol=1e-4)


def test_images_show_the_object_where_the_points_project(small_root: Path) -> None:
    data = SyntheticShapes(small_root, "train", num_points=1000, progress=False)
    for index in range(len(data)):
        sample = data[index]
        pixels, depth = project_points(
            sample["points"], sample["camera"]["intrinsics"], sample["camera"]["extrinsics"]
        )
        assert bool((depth > 0).all())
        column, row = pixels.floor().long().unbind(-1)
        size = sample["mask"].shape[-1]
        inside = (column >= 0) & (column < size) & (row >= 0) & (row < size)
        assert bool(inside.all())
        on_mask = sample["mask"][0, row, column] > 0
        assert on_mask.float().mean() > 0.95
        # And conversely, most of the silhouette is covered by projected points.
        covered = torch.zeros(size, size, dtype=torch.bool)
        covered[row, column] = True
        solid = sample["mask"][0] > 0.99
        assert (covered & solid).sum() / solid.sum() > 0.8


def test_resize_keeps_projections_on_the_silhouette(small_root: Path) -> None:
    data = SyntheticShapes(small_root, "test", num_points=800, transform=Resize(48), progress=False)
    sample = data[0]
    assert sample["image"].shape == (3, 48, 48) and sample["mask"].shape == (1, 48, 48)
    pixels, _ = project_points(
        sample["points"], sample["camera"]["intrinsics"], sample["camera"]["extrinsics"]
    )
    column, row = pixels.floor().long().clamp(0, 47).unbind(-1)
    assert (sample["mask"][0, row, column] > 0).float().mean() > 0.95


def test_splits_partition_the_objects(small_root: Path) -> None:
    splits = _all_splits(small_root)
    ids = {name: set(data.model_ids) for name, data in splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    expected = {f"{c}-{i:05d}" for c in SMALL.categories for i in range(3)}
    assert ids["train"] | ids["val"] | ids["test"] == expected
    assert all(len(v) == 2 for v in ids.values())


def test_sample_seed_makes_subsets_reproducible(small_root: Path) -> None:
    a = SyntheticShapes(small_root, "train", num_points=100, sample_seed=3, progress=False)
    b = SyntheticShapes(small_root, "train", num_points=100, sample_seed=3, progress=False)
    assert torch.equal(a[2]["points"], b[2]["points"])
    assert not torch.equal(a[2]["points"], a[3]["points"])
    free = SyntheticShapes(small_root, "train", num_points=100, progress=False)
    assert not torch.equal(free[0]["points"], free[0]["points"])
    # More points than half the stored sample: independent draws, still the right size.
    many = SyntheticShapes(small_root, "train", num_points=1500, progress=False)
    assert many[0]["points"].shape == (1500, 3)


def test_dataloader_batches_samples(small_root: Path) -> None:
    data = SyntheticShapes(small_root, "train", num_points=64, progress=False)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["points"].shape == (3, 64, 3)
    assert batch["camera"]["extrinsics"].shape == (3, 3, 4)
    assert list(batch["model_id"]) == ["chair-00000", "chair-00000", "airplane-00000"]


def test_cache_is_reused_without_regenerating(
    small_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _digest(small_root)
    mtimes = {p: p.stat().st_mtime_ns for p in (small_root / "shards").iterdir()}

    def fail(*args: object) -> None:
        raise AssertionError("the cached dataset was regenerated")

    monkeypatch.setattr(synthetic, "_generate_shard", fail)
    data = SyntheticShapes(small_root, "val", config=SMALL, progress=False)
    assert data.config == SMALL
    assert SyntheticShapes(small_root, "val", progress=False).config == SMALL  # manifest's config
    assert _digest(small_root) == before
    assert {p: p.stat().st_mtime_ns for p in (small_root / "shards").iterdir()} == mtimes
    manifest = json.loads((small_root / "manifest.json").read_text())
    assert manifest["version"] == synthetic.DATASET_VERSION
    assert SyntheticConfig.from_dict(manifest["config"]) == SMALL


def test_mismatched_config_raises_then_regenerates(tmp_path: Path) -> None:
    tiny = dataclasses.replace(
        SMALL, categories=("table",), objects_per_category=2, views_per_object=1
    )
    generate_synthetic_dataset(tmp_path, tiny, num_workers=0, progress=False)
    other = dataclasses.replace(tiny, image_size=16)
    with pytest.raises(ValueError, match=r"image_size: 32 != 16"):
        SyntheticShapes(tmp_path, "train", config=other, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(tmp_path, "train", image_size=16, progress=False)
    data = SyntheticShapes(
        tmp_path,
        "train",
        image_size=16,
        config=tiny,
        regenerate=True,
        num_workers=0,
        progress=False,
    )
    assert data[0]["image"].shape == (3, 16, 16)
    chairs = dataclasses.replace(tiny, categories=("chair",))
    generate_synthetic_dataset(tmp_path, chairs, num_workers=0, progress=False, regenerate=True)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "chair-train-000.npz",
        "chair-val-000.npz",
    ]  # the table shards of the replaced dataset are gone


def test_same_seed_same_bytes_parallel_or_not(tmp_path: Path) -> None:
    tiny = dataclasses.replace(SMALL, objects_per_category=2, views_per_object=1, image_size=16)
    generate_synthetic_dataset(tmp_path / "a", tiny, num_workers=0, progress=False)
    generate_synthetic_dataset(tmp_path / "b", tiny, num_workers=0, progress=False)
    generate_synthetic_dataset(
        tmp_path / "c", dataclasses.replace(tiny, seed=8), num_workers=0, progress=False
    )
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(_digest(tmp_path / "a")) == 2 * 2  # 2 categories x (train, val); test is empty
    different = _digest(tmp_path / "c")
    assert all(different[name] != digest for name, digest in _digest(tmp_path / "a").items())


@pytest.mark.slow
def test_parallel_generation_gives_the_same_bytes(tmp_path: Path) -> None:
    tiny = dataclasses.replace(SMALL, objects_per_category=2, views_per_object=1, image_size=16)
    generate_synthetic_dataset(tmp_path / "serial", tiny, num_workers=0, progress=False)
    generate_synthetic_dataset(tmp_path / "parallel", tiny, num_workers=2, progress=False)
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "parallel")


def test_interrupted_generation_resumes_from_written_shards(tmp_path: Path) -> None:
    tiny = dataclasses.replace(SMALL, categories=("table",), objects_per_category=2)
    generate_synthetic_dataset(tmp_path, tiny, num_workers=0, progress=False)
    (tmp_path / "manifest.json").unlink()  # as if killed before the manifest was written
    kept = tmp_path / "shards" / "table-train-000.npz"
    removed = tmp_path / "shards" / "table-val-000.npz"
    mtime = kept.stat().st_mtime_ns
    removed.unlink()
    generate_synthetic_dataset(tmp_path, tiny, num_workers=0, progress=False)
    assert kept.stat().st_mtime_ns == mtime and removed.exists()


def test_corrupt_or_missing_shard_is_named(tmp_path: Path) -> None:
    tiny = dataclasses.replace(SMALL, categories=("lamp",), objects_per_category=2)
    generate_synthetic_dataset(tmp_path, tiny, num_workers=0, progress=False)
    shard = tmp_path / "shards" / "lamp-train-000.npz"
    shard.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"lamp-train-000\.npz"):
        SyntheticShapes(tmp_path, "train", progress=False)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"lamp-train-000\.npz"):
        SyntheticShapes(tmp_path, "train", progress=False)
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ValueError, match="manifest"):
        SyntheticShapes(tmp_path, "train", progress=False)


def test_generation_error_names_the_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pcflow.data import shapes

    def broken(rng: np.random.Generator) -> list:
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(shapes.CATEGORY_BUILDERS, "vase", broken)
    config = dataclasses.replace(SMALL, categories=("vase",), objects_per_category=1)
    with pytest.raises(RuntimeError, match=r"vase-00000.*ZeroDivisionError: boom"):
        generate_synthetic_dataset(tmp_path, config, num_workers=0, progress=False)
    assert not (tmp_path / "manifest.json").exists()


def test_every_category_builds_a_valid_object() -> None:
    config = SyntheticConfig(views_per_object=1, image_size=16, points_per_object=300)
    for category in config.categories:
        obj = synthetic._generate_object(config, category, 0)
        assert obj["points"].shape == (300, 3)
        assert np.linalg.norm(obj["vertices"], axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert obj["images"][0, ..., 3].max() == 255  # the object is in view


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="categories"):
        SyntheticConfig(categories=("dragon",))
    with pytest.raises(ValueError, match="split_fractions"):
        SyntheticConfig(split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=2)
    with pytest.raises(ValueError, match="distance_range"):
        SyntheticConfig(distance_range=(1.0, 2.0))
    with pytest.raises(ValueError, match="unknown SyntheticConfig fields"):
        SyntheticConfig.from_dict({"colour": 1})
    assert SyntheticConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes("unused", "training")


def test_root_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        generate_synthetic_dataset(path, SMALL, progress=False)


def test_regeneration_deletes_only_its_own_files(tmp_path: Path) -> None:
    tiny = dataclasses.replace(
        SMALL, categories=("table",), objects_per_category=2, views_per_object=1, image_size=16
    )
    generate_synthetic_dataset(tmp_path, tiny, num_workers=0, progress=False)
    shards = tmp_path / "shards"
    own_temporary = shards / ".table-train-000.npz.x1y2.tmp"  # left by a killed write
    own_temporary.write_bytes(b"partial")
    users = [shards / "my_experiment.npz", shards / "mug-train-999.npz", shards / "notes.tmp"]
    np.savez(users[0], points=np.zeros((2, 3)))
    np.savez(users[1], points=np.zeros((2, 3)))  # a shard's name, not a shard's content
    users[2].write_text("mine")
    chairs = dataclasses.replace(tiny, categories=("chair",))
    generate_synthetic_dataset(tmp_path, chairs, num_workers=0, progress=False, regenerate=True)
    assert sorted(p.name for p in shards.iterdir()) == sorted(
        ["chair-train-000.npz", "chair-val-000.npz", *(p.name for p in users)]
    )


def _rewrite_shard(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    synthetic._save_npz(path, arrays)


def test_shard_with_nan_points_or_without_points_is_named(tmp_path: Path) -> None:
    tiny = dataclasses.replace(
        SMALL, categories=("lamp",), objects_per_category=2, views_per_object=1, image_size=16
    )
    generate_synthetic_dataset(tmp_path, tiny, num_workers=0, progress=False)
    shard = tmp_path / "shards" / "lamp-train-000.npz"
    model_id = str(np.load(shard)["model_ids"][0])

    def poison(arrays: dict) -> None:
        arrays["points"][0, 5, 1] = np.nan

    _rewrite_shard(shard, poison)
    with pytest.raises(ValueError, match=rf"lamp-train-000\.npz is corrupt.*{model_id}.*NaN"):
        SyntheticShapes(tmp_path, "train", progress=False)
    _rewrite_shard(shard, lambda arrays: arrays.pop("points"))
    with pytest.raises(ValueError, match=r"lamp-train-000\.npz lacks \['points'\]"):
        SyntheticShapes(tmp_path, "train", progress=False)


@pytest.mark.slow
def test_plain_script_without_main_guard_generates_in_parallel(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "script.py"  # what users write: no `if __name__ == "__main__":`
    script.write_text(
        "import dataclasses\n"
        "from pcflow.data import SyntheticConfig, SyntheticShapes\n"
        f"config = SyntheticConfig(categories=('mug', 'table'), objects_per_category=2,\n"
        f"    views_per_object=1, image_size=16, points_per_object=200, seed=7)\n"
        f"data = SyntheticShapes({str(tmp_path / 'data')!r}, 'train', num_points=50,\n"
        "    config=config, num_workers=2, progress=False)\n"
        "print('samples', len(data))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,  # without the fix, workers die at start and the pool never finishes
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("samples") == 1  # the script ran once, not once per worker


def test_missing_module_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pcflow.data import shapes

    def needs_rtree(rng: np.random.Generator) -> list:
        raise ModuleNotFoundError("No module named 'rtree'", name="rtree")

    monkeypatch.setitem(shapes.CATEGORY_BUILDERS, "mug", needs_rtree)
    config = dataclasses.replace(SMALL, categories=("mug",), objects_per_category=1)
    with pytest.raises(RuntimeError, match=r"mug-00000.*'rtree'; pcflow needs it: pip install rt"):
        generate_synthetic_dataset(tmp_path, config, num_workers=0, progress=False)


def test_categories_and_object_points_without_loading_samples(small_root: Path) -> None:
    from pcflow.data import CategorizedShapes

    data = SyntheticShapes(small_root, "train", num_points=300, progress=False)
    assert isinstance(data, CategorizedShapes)
    assert [data.sample_category(i) for i in range(len(data))] == [
        data[i]["category_name"] for i in range(len(data))
    ]
    views = SMALL.views_per_object
    for obj in range(data.num_objects):
        assert data.object_category(obj) == data[obj * views]["category_name"]
        stored = {tuple(row) for row in data.object_points(obj).tolist()}
        assert {tuple(row) for row in data[obj * views]["points"].tolist()} <= stored


def test_points_only_view_reads_no_rendering(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pcflow.data import CategorizedShapes

    views = SMALL.views_per_object
    for split in synthetic.SPLITS:
        with_images = SyntheticShapes(small_root, split, 300, sample_seed=3, progress=False)
        points_only = SyntheticShapes(
            small_root, split, 300, sample_seed=3, progress=False, images=False
        )
        assert isinstance(points_only, CategorizedShapes)
        assert len(points_only) == points_only.num_objects == with_images.num_objects
        for obj in range(points_only.num_objects):
            sample, first_view = points_only[obj], with_images[obj * views]
            assert sorted(sample) == [
                "category", "category_name", "model_id", "points", "points_target"
            ]  # fmt: skip
            assert sample["model_id"] == first_view["model_id"]
            assert sample["category_name"] == first_view["category_name"]
            assert torch.equal(sample["points"], first_view["points"])
            assert torch.equal(sample["points_target"], first_view["points_target"])
    # Shards whose renderings are gone still read points-only (and only so).
    copy = tmp_path / "no-images"
    (copy / "shards").mkdir(parents=True)
    (copy / "manifest.json").write_bytes((small_root / "manifest.json").read_bytes())
    for shard in (small_root / "shards").glob("*.npz"):
        (copy / "shards" / shard.name).write_bytes(shard.read_bytes())
        _rewrite_shard(copy / "shards" / shard.name, lambda arrays: arrays.pop("images"))
    monkeypatch.setattr(synthetic, "render_mesh", _must_not_run)
    data = SyntheticShapes(copy, "train", 300, sample_seed=3, progress=False, images=False)
    reference = SyntheticShapes(small_root, "train", 300, sample_seed=3, progress=False)
    assert torch.equal(data[1]["points"], reference[views]["points"])
    with pytest.raises(ValueError, match=r"lacks \['images'\]"):
        SyntheticShapes(copy, "train", 300, progress=False)


def _must_not_run(*args, **kwargs):
    raise AssertionError("a points-only dataset rendered or decoded an image")


def test_points_only_generation_renders_nothing_and_keeps_the_objects(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic, "render_mesh", _must_not_run)
    config = dataclasses.replace(SMALL, views_per_object=0)
    points_only = SyntheticShapes(
        tmp_path, "test", 200, config=config, images=False, num_workers=0, progress=False
    )
    rendered = SyntheticShapes(small_root, "test", 200, images=False, progress=False)
    assert points_only.model_ids == rendered.model_ids and points_only.num_objects == 2
    for obj in range(points_only.num_objects):  # rendering draws after the surface sample
        assert np.array_equal(points_only.object_points(obj), rendered.object_points(obj))
    with pytest.raises(
        ValueError, match=r"points-only dataset \(views_per_object=0\).*images=False"
    ):
        SyntheticShapes(tmp_path, "test", 200, progress=False)
    with pytest.raises(
        ValueError, match=r"views_per_object must be 0 \(points only\) or more, got -1"
    ):
        dataclasses.replace(SMALL, views_per_object=-1)


def test_generation_data_has_the_protocol_sizes() -> None:
    from pcflow.data import SYNTHETIC_POINTS

    sizes = {k: len(v) for k, v in synthetic._split_indices(SYNTHETIC_POINTS).items()}
    assert sizes == {"train": 400, "val": 50, "test": 100}
    assert SYNTHETIC_POINTS.views_per_object == 0 and SYNTHETIC_POINTS.points_per_object >= 2 * 2048
    assert {"airplane", "car", "chair"} <= set(SYNTHETIC_POINTS.categories)
