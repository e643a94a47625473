"""Tests for the procedural part meshes: inside tests, union-surface sampling, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pcflow.data.shapes import (
    CATEGORY_BUILDERS,
    Part,
    build_object,
    normalize_parts,
    sample_visible_surface,
)


def _box(center: tuple[float, float, float]) -> Part:
    return Part(
        trimesh.creation.box([2.0, 2.0, 2.0], trimesh.transformations.translation_matrix(center))
    )


def test_convex_inside_test_matches_trimesh_contains() -> None:
    rng = np.random.default_rng(0)
    part = Part(trimesh.creation.cylinder(radius=0.7, height=1.5, sections=16))
    points = rng.uniform(-1, 1, size=(2000, 3))
    normals = rng.normal(size=(2000, 3))
    later = np.ones(2000, dtype=bool)
    np.testing.assert_array_equal(part.hides(points, normals, later), part.mesh.contains(points))


def test_joints_are_not_surface() -> None:
    # A thin leg standing under a slab: the leg's top and the slab's underside touch.
    slab = Part(trimesh.creation.box([2.0, 0.2, 2.0]))
    leg = Part(trimesh.creation.box([0.2, 1.0, 0.2]))
    leg.mesh.apply_translation([0.0, -0.6, 0.0])
    points, _ = sample_visible_surface([slab, leg], 20_000, np.random.default_rng(0))
    joint = np.isclose(points[:, 1], -0.1) & (np.abs(points[:, [0, 2]]) < 0.1).all(axis=1)
    assert not joint.any()
    assert np.isclose(points[:, 1], -0.1).sum() > 1000  # the rest of the underside is kept


def test_union_surface_of_overlapping_boxes() -> None:
    # Two 2x2x2 boxes overlapping by half: their union is the box [-1, 2] x [-1, 1] x [-1, 1].
    parts = [_box((0.0, 0.0, 0.0)), _box((1.0, 0.0, 0.0))]
    points, normals = sample_visible_surface(parts, 20_000, np.random.default_rng(1))
    assert points.shape == normals.shape == (20_000, 3)
    on_boundary = (
        np.isclose(points[:, 0], -1) | np.isclose(points[:, 0], 2)
        | np.isclose(np.abs(points[:, 1]), 1) | np.isclose(np.abs(points[:, 2]), 1)
    )  # fmt: skip
    assert on_boundary.all()  # nothing from the hidden faces inside the union
    # Uniform by area over the union's surface (area 32): the end face x = -1 holds 4 / 32.
    fraction = np.isclose(points[:, 0], -1).mean()
    assert fraction == pytest.approx(4 / 32, abs=4 * np.sqrt(0.125 * 0.875 / 20_000))
    # Normals point outwards.
    outward = np.einsum("nd,nd->n", normals, points - np.array([0.5, 0.0, 0.0]))
    assert (outward > 0).all()


def test_normalize_parts_centres_by_area_and_scales_to_unit_sphere() -> None:
    parts = [_box((0.0, 0.0, 0.0)), _box((5.0, 0.0, 0.0))]
    mesh = normalize_parts(parts)
    # Equal areas: the area-weighted centroid is midway; the farthest corner is at radius 1.
    np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-12)
    assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(
        np.concatenate([p.mesh.vertices for p in parts]), mesh.vertices, atol=1e-12
    )


@pytest.mark.parametrize("category", sorted(CATEGORY_BUILDERS))
def test_objects_vary_and_parts_are_watertight(category: str) -> None:
    first = build_object(category, np.random.default_rng(0))
    second = build_object(category, np.random.default_rng(1))
    assert all(part.mesh.is_watertight for part in first)
    extents = [trimesh.util.concatenate([p.mesh for p in o]).extents for o in (first, second)]
    assert not np.allclose(extents[0], extents[1])  # random proportions
    with pytest.raises(ValueError, match="unknown category"):
        build_object("dragon", np.random.default_rng(0))


def test_synthetic_objects_need_no_extra() -> None:
    # `pip install pcflow` must generate the built-in dataset: block every module that only an
    # extra installs, then build the categories with non-convex parts (their inside test casts
    # rays with trimesh, which needs rtree).
    import subprocess
    import sys
    from pathlib import Path

    from packaging.requirements import Requirement
    from setuptools.config.pyprojecttoml import load_file  # tomllib is Python 3.11+

    project = load_file(Path(__file__).parents[2] / "pyproject.toml")["project"]
    core = {Requirement(r).name.lower() for r in project["dependencies"]}
    modules = {"pot": "ot", "pyyaml": "yaml", "pillow": "PIL"}
    extras = {
        modules.get(name, name)
        for group in ("data", "train", "fast", "viz")
        for name in (Requirement(r).name.lower() for r in project["optional-dependencies"][group])
        if name not in core
    }
    assert {"h5py", "matplotlib"} <= extras
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(extras)!r}:
            raise ImportError(f"{{name}} is blocked: only an extra installs it")
sys.meta_path.insert(0, Block())
from pcflow.data.synthetic import SyntheticConfig, _generate_object
config = SyntheticConfig(views_per_object=1, image_size=16, points_per_object=200)
for category in ("mug", "vase", "lamp"):
    _generate_object(config, category, 0)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
