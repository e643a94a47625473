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


def _header(file_format: str, vertices: int, faces: int | None = None) -> bytes:
    lines = ["ply", f"format {file_format} 1.0", f"element vertex {vertices}"]
    lines += [f"property float {axis}" for axis in "xyz"]
    if faces is not None:
        lines += [f"element face {faces}", "property list uchar int vertex_indices"]
    return ("\n".join([*lines, "end_header"]) + "\n").encode()


def test_size_must_match_the_header(tmp_path: Path) -> None:
    # An ASCII body under a binary header: its bytes would read as tiny floats (near 6e-10).
    path = tmp_path / "mislabelled.ply"
    path.write_bytes(_header("binary_little_endian", 3) + b"0.5 0.25 1\n0.5 0.25 1\n1 1 1\n")
    with pytest.raises(ValueError, match=r"mislabelled\.ply: the PLY header claims 3 vertex"):
        read_ply(path)
    path.write_bytes(_header("binary_little_endian", 1) + b"0.5 0.25 1\n0.5 0.25 1\n1 1 1\n")
    with pytest.raises(ValueError, match=r"mislabelled\.ply: 16 bytes follow the elements"):
        read_ply(path)
    write_ply(tmp_path / "ascii.ply", np.ones((2, 3)), binary=False)
    with open(tmp_path / "ascii.ply", "a") as stream:
        stream.write("\n  \n")  # trailing blank lines are harmless
    assert read_ply(tmp_path / "ascii.ply")["points"].shape == (2, 3)
    with open(tmp_path / "ascii.ply", "a") as stream:
        stream.write("1 2 3\n")
    with pytest.raises(ValueError, match=r"ascii\.ply: 10 bytes follow the elements"):
        read_ply(tmp_path / "ascii.ply")


@pytest.mark.parametrize("file_format", ["binary_little_endian", "ascii"])
def test_header_claiming_a_trillion_vertices_is_refused_at_once(
    tmp_path: Path, file_format: str
) -> None:
    path = tmp_path / "huge.ply"
    path.write_bytes(_header(file_format, 10**12) + b"\0" * 60)
    assert path.stat().st_size < 200
    with pytest.raises(ValueError, match=r"huge\.ply: the PLY header claims 1,000,000,000,000"):
        read_ply(path)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_points_are_refused_like_write_ply_does(
    tmp_path: Path, binary: bool, value: float
) -> None:
    path = tmp_path / "bad.ply"
    points = np.ones((4, 3), dtype=np.float32)
    points[2, 1] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_ply(path, points, binary=binary)
    if binary:
        path.write_bytes(_header("binary_little_endian", 4) + points.astype("<f4").tobytes())
    else:
        rows = "".join(" ".join(f"{v}" for v in row) + "\n" for row in points)
        path.write_bytes(_header("ascii", 4) + rows.encode())
    with pytest.raises(ValueError, match=r"bad\.ply: the points of 1 vertices hold NaN or inf.*2"):
        read_ply(path)


def test_faces_must_index_vertices(tmp_path: Path) -> None:
    path = tmp_path / "faces.ply"
    body = b"0 0 0\n1 0 0\n0 1 0\n"
    path.write_bytes(_header("ascii", 3, 1) + body + b"3 0 1 2\n")
    assert read_ply(path)["faces"].tolist() == [[0, 1, 2]]
    for face in (b"3 0 1 3\n", b"3 0 -1 2\n"):
        path.write_bytes(_header("ascii", 3, 1) + body + face)
        with pytest.raises(ValueError, match=r"faces\.ply: face indices must lie in \[0, 2\]"):
            read_ply(path)
    vertices = np.eye(3, dtype="<f4").tobytes()
    face = np.array([3], "u1").tobytes() + np.array([0, 1, 7], "<i4").tobytes()
    path.write_bytes(_header("binary_little_endian", 3, 1) + vertices + face)
    with pytest.raises(ValueError, match=r"faces\.ply: face indices must lie in \[0, 2\]"):
        read_ply(path)
    path.write_bytes(_header("ascii", 3, 1) + body + b"3 0 2.5 1\n")
    with pytest.raises(ValueError, match=r"faces\.ply: malformed face 0 '3 0 2.5 1'"):
        read_ply(path)
    path.write_bytes(_header("ascii", 3, 1) + body + b"4 0 1 2\n")
    with pytest.raises(ValueError, match=r"faces\.ply: malformed face 0.*lists 4 indices"):
        read_ply(path)


def test_duplicated_property_is_named(tmp_path: Path) -> None:
    path = tmp_path / "twice.ply"
    header = _header("ascii", 1).replace(b"property float z\n", b"property float y\n")
    path.write_bytes(header + b"1 2 3\n")
    with pytest.raises(ValueError, match=r"twice\.ply: PLY element 'vertex' names the .*\['y'\]"):
        read_ply(path)
