"""Tests for pcflow.io: PLY round trips, interoperability with trimesh, and corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from pcflow.io import read_ply, write_ply


@settings(max_examples=20, deadline=None)
@given(
    count=st.integers(0, 30),
    binary=st.booleans(),
    with_normals=st.booleans(),
    with_colors=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    count: int,
    binary: bool,
    with_normals: bool,
    with_colors: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(count, 3)).astype(np.float32) * 100
    normals = rng.normal(size=(count, 3)).astype(np.float32) if with_normals else None
    colors = rng.integers(0, 256, size=(count, 3)).astype(np.uint8) if with_colors else None
    path = tmp_path_factory.mktemp("ply") / "cloud.ply"
    write_ply(path, points, normals=normals, colors=colors, binary=binary)
    data = read_ply(path)
    np.testing.assert_array_equal(data["points"], points)  # %.9g is exact for float32
    assert data["points"].dtype == np.float32 and data["points"].shape == (count, 3)
    if with_normals:
        np.testing.assert_array_equal(data["normals"], normals)
    else:
        assert "normals" not in data
    if with_colors:
        np.testing.assert_array_equal(data["colors"], colors)
        assert data["colors"].dtype == np.uint8
    else:
        assert "colors" not in data


def test_float_colours_and_tensors(tmp_path: Path) -> None:
    points = torch.rand(6, 3)
    colors = torch.tensor([[0.0, 0.5, 1.0]]).repeat(6, 1)
    write_ply(tmp_path / "a.ply", points, colors=colors, binary=False)
    data = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(data["points"], points.numpy())
    assert data["colors"][0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("binary", [True, False])
def test_trimesh_reads_what_we_write(tmp_path: Path, binary: bool) -> None:
    points = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    write_ply(tmp_path / "a.ply", points, binary=binary)
    cloud = trimesh.load(tmp_path / "a.ply")
    np.testing.assert_allclose(np.asarray(cloud.vertices), points, rtol=1e-6)


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_we_read_what_trimesh_writes(tmp_path: Path, encoding: str) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=1)
    mesh.export(tmp_path / "mesh.ply", encoding=encoding)
    data = read_ply(tmp_path / "mesh.ply")
    np.testing.assert_allclose(data["points"], mesh.vertices, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(data["faces"], mesh.faces)


def test_big_endian_file(tmp_path: Path) -> None:
    points = np.arange(12, dtype=">f4").reshape(4, 3)
    header = (
        "ply\nformat binary_big_endian 1.0\nelement vertex 4\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    (tmp_path / "b.ply").write_bytes(header.encode() + points.tobytes())
    np.testing.assert_array_equal(read_ply(tmp_path / "b.ply")["points"], points.astype(np.float32))


def test_corrupt_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.ply"):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "text.ply").write_text("hello\n")
    with pytest.raises(ValueError, match="not a PLY file"):
        read_ply(tmp_path / "text.ply")
    write_ply(tmp_path / "full.ply", np.ones((10, 3)))
    blob = (tmp_path / "full.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(blob[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(tmp_path / "cut.ply")
    (tmp_path / "noend.ply").write_bytes(blob.split(b"end_header")[0])
    with pytest.raises(ValueError, match="end_header"):
        read_ply(tmp_path / "noend.ply")
    (tmp_path / "badtype.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty quaternion x\nend_header\n1\n"
    )
    with pytest.raises(ValueError, match="quaternion"):
        read_ply(tmp_path / "badtype.ply")
    (tmp_path / "noxyz.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n"
    )
    with pytest.raises(ValueError, match="x, y, z"):
        read_ply(tmp_path / "noxyz.ply")
    write_ply(tmp_path / "ascii.ply", np.ones((3, 3)), binary=False)
    text = (tmp_path / "ascii.ply").read_text().replace("1 1 1\n", "1 x 1\n", 1)
    (tmp_path / "garbled.ply").write_text(text)
    with pytest.raises(ValueError, match="malformed rows"):
        read_ply(tmp_path / "garbled.ply")


def test_write_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        write_ply(tmp_path / "a.ply", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="normals has 3 rows but points has 4"):
        write_ply(tmp_path / "a.ply", np.zeros((4, 3)), normals=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        write_ply(tmp_path / "a.ply", np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_ply(tmp_path / "a.ply", np.zeros((4, 3)), colors=np.full((4, 3), 2.0))
