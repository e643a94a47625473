"""Reading and writing point clouds as PLY files (ASCII and binary, little or big endian)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

__all__ = ["read_ply", "write_ply"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _as_array(name: str, value: Any, count: int | None) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got shape {array.shape}")
    if count is not None and array.shape[0] != count:
        raise ValueError(f"{name} has {array.shape[0]} rows but points has {count}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def write_ply(
    path: str | os.PathLike,
    points: Any,
    normals: Any = None,
    colors: Any = None,
    *,
    binary: bool = True,
) -> None:
    """Write a point cloud as a PLY file.

    Arguments:
        path: Output file.
        points: ``(N, 3)`` array or tensor, written as float32 ``x, y, z``.
        normals: Optional ``(N, 3)``, written as float32 ``nx, ny, nz``.
        colors: Optional ``(N, 3)``: uint8, or floats in [0, 1] (scaled to 0-255); written as
            uchar ``red, green, blue``.
        binary: Binary little-endian (default) or ASCII.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from pcflow.io import read_ply, write_ply
        >>> path = os.path.join(tempfile.mkdtemp(), "cloud.ply")
        >>> write_ply(path, np.zeros((4, 3)), colors=np.ones((4, 3)))
        >>> read_ply(path)["colors"][0].tolist()
        [255, 255, 255]
    """
    points = _as_array("points", points, None)
    count = points.shape[0]
    fields: list[tuple[str, str, np.ndarray]] = [("x y z", "float", points.astype("<f4"))]
    if normals is not None:
        fields.append(("nx ny nz", "float", _as_array("normals", normals, count).astype("<f4")))
    if colors is not None:
        colors = _as_array("colors", colors, count)
        if colors.dtype.kind == "f":
            if colors.size and (colors.min() < 0 or colors.max() > 1):
                raise ValueError("float colors must lie in [0, 1]")
            colors = np.round(colors * 255.0)
        elif colors.size and (colors.min() < 0 or colors.max() > 255):
            raise ValueError("integer colors must lie in [0, 255]")
        fields.append(("red green blue", "uchar", colors.astype("u1")))
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += ["comment written by pcflow", f"element vertex {count}"]
    dtype = []
    for names, ply_type, array in fields:
        for name in names.split():
            header.append(f"property {ply_type} {name}")
            dtype.append((name, array.dtype.str))
    header.append("end_header")
    table = np.empty(count, dtype=dtype)
    for names, _, array in fields:
        for column, name in enumerate(names.split()):
            table[name] = array[:, column]
    with open(path, "wb") as stream:
        stream.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            stream.write(table.tobytes())
        else:
            formats = []
            for names, ply_type, _ in fields:
                formats += ["%.9g" if ply_type == "float" else "%d"] * len(names.split())
            rows = np.column_stack([table[name].astype(np.float64) for name, _ in dtype])
            if count:
                np.savetxt(stream, rows, fmt=formats, delimiter=" ")


def _parse_header(stream: Any, path: str) -> tuple[str, list[dict[str, Any]]]:
    magic = stream.readline()
    if magic.strip() != b"ply":
        raise ValueError(f"{path} is not a PLY file (first line {magic[:20]!r}, expected b'ply')")
    file_format, elements = None, []
    while True:
        line = stream.readline()
        if not line:
            raise ValueError(f"{path}: PLY header has no 'end_header' line (truncated file?)")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _FORMATS:
                raise ValueError(f"{path}: unsupported PLY format line {line.strip()!r}")
            file_format = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise ValueError(f"{path}: malformed PLY element line {line.strip()!r}")
            elements.append({"name": words[1], "count": int(words[2]), "properties": []})
        elif words[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element: {line.strip()!r}")
            if len(words) == 5 and words[1] == "list":
                if words[2] not in _PLY_TYPES or words[3] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown PLY type in {line.strip()!r}")
                elements[-1]["properties"].append((words[4], "list", words[2], words[3]))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1]["properties"].append((words[2], words[1], None, None))
            else:
                raise ValueError(f"{path}: malformed or unknown PLY property {line.strip()!r}")
        else:
            raise ValueError(f"{path}: unknown PLY header line {line.strip()!r}")
    if file_format is None:
        raise ValueError(f"{path}: PLY header has no 'format' line")
    for element in elements:
        names = [name for name, *_ in element["properties"]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"{path}: PLY element {element['name']!r} names the properties {repeated} "
                "more than once"
            )
    return file_format, elements


def _minimum_bytes(element: dict[str, Any], file_format: str) -> int:
    """The fewest bytes ``element``'s rows can take: checked against the file's size before
    anything is allocated, so a header claiming 10^12 vertices is refused at once."""
    properties = element["properties"]
    if file_format == "ascii":
        per_row = 2 * len(properties)  # one character and one separator per value
    else:
        per_row = sum(
            np.dtype(_PLY_TYPES[count_type if kind == "list" else kind]).itemsize
            for _, kind, count_type, _ in properties
        )
    return element["count"] * per_row


def _read_element(stream: Any, element: dict[str, Any], file_format: str, path: str) -> Any:
    count, properties = element["count"], element["properties"]
    order = _FORMATS[file_format]
    has_list = any(kind == "list" for _, kind, _, _ in properties)
    if file_format == "ascii":
        rows = []
        for row in range(count):
            line = stream.readline()
            if not line:
                raise ValueError(
                    f"{path}: element {element['name']!r} ends after {row} of {count} rows "
                    "(truncated file)"
                )
            rows.append(line.split())
        if not has_list:
            try:
                values = np.array(rows, dtype=np.float64).reshape(count, len(properties))
            except ValueError as error:
                raise ValueError(
                    f"{path}: malformed rows in element {element['name']!r}: {error}"
                ) from error
            return {name: values[:, i] for i, (name, *_rest) in enumerate(properties)}
        return {"_lists": rows}
    if not has_list:
        dtype = np.dtype([(name, order + _PLY_TYPES[kind]) for name, kind, _, _ in properties])
        data = stream.read(dtype.itemsize * count)
        if len(data) != dtype.itemsize * count:
            raise ValueError(
                f"{path}: element {element['name']!r} needs {dtype.itemsize * count} bytes but the "
                f"file holds {len(data)} (truncated file)"
            )
        table = np.frombuffer(data, dtype=dtype)
        return {name: table[name] for name in table.dtype.names}
    lists = []
    for _ in range(count):
        row = []
        for _name, kind, count_type, item_type in properties:
            if kind != "list":
                size = np.dtype(_PLY_TYPES[kind]).itemsize
                raw = stream.read(size)
                if len(raw) != size:
                    raise ValueError(f"{path}: truncated element {element['name']!r}")
                continue
            count_dtype = np.dtype(order + _PLY_TYPES[count_type])
            raw = stream.read(count_dtype.itemsize)
            if len(raw) != count_dtype.itemsize:
                raise ValueError(f"{path}: truncated element {element['name']!r}")
            length = int(np.frombuffer(raw, count_dtype)[0])
            item_dtype = np.dtype(order + _PLY_TYPES[item_type])
            raw = stream.read(item_dtype.itemsize * length)
            if len(raw) != item_dtype.itemsize * length:
                raise ValueError(f"{path}: truncated element {element['name']!r}")
            row = np.frombuffer(raw, item_dtype).tolist()
        lists.append(row)
    return {"_lists": lists}


def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the vertices (and triangle faces, if any) of a PLY file.

    Reads ASCII, binary little-endian and binary big-endian files with any vertex properties.

    Arguments:
        path: The PLY file.

    Returns:
        A dict with ``"points"`` float32 ``(N, 3)``, and when present ``"normals"`` float32
        ``(N, 3)`` (``nx ny nz``), ``"colors"`` uint8 ``(N, 3)`` (``red green blue``, or
        ``diffuse_*``) and ``"faces"`` int64 ``(F, 3)`` (triangles only).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a valid PLY file (its size must match its header), has
            no ``x y z`` vertices, holds NaN or infinite points or normals (which `write_ply`
            refuses too), or faces whose indices are not vertices; the message names the file
            and the problem.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PLY file {path} does not exist")
    with open(path, "rb") as stream:
        file_format, elements = _parse_header(stream, path)
        body = os.fstat(stream.fileno()).st_size - stream.tell()
        needed = sum(_minimum_bytes(element, file_format) for element in elements)
        if needed > body:
            counts = ", ".join(f"{e['count']:,} {e['name']}" for e in elements)
            raise ValueError(
                f"{path}: the PLY header claims {counts} (at least {needed:,} bytes of "
                f"{file_format} data), but only {body:,} bytes follow it (truncated file or "
                "wrong header)"
            )
        data = {}
        for element in elements:
            data[element["name"]] = _read_element(stream, element, file_format, path)
        rest = stream.read()
        if rest.strip() if file_format == "ascii" else rest:
            raise ValueError(
                f"{path}: {len(rest):,} bytes follow the elements the PLY header declares "
                f"({file_format}); the header does not match the data (an ASCII body under a "
                "binary header, or wrong counts)"
            )
    vertex = data.get("vertex")
    if vertex is None or not all(k in vertex for k in ("x", "y", "z")):
        raise ValueError(f"{path}: PLY file has no 'vertex' element with x, y, z properties")
    result = {"points": np.stack([vertex[k] for k in "xyz"], axis=1).astype(np.float32)}
    if all(k in vertex for k in ("nx", "ny", "nz")):
        result["normals"] = np.stack([vertex[k] for k in ("nx", "ny", "nz")], 1).astype(np.float32)
    for key in ("points", "normals"):
        # write_ply refuses these: reading them back must too.
        if key in result and not np.isfinite(result[key]).all():
            bad = np.flatnonzero(~np.isfinite(result[key]).all(axis=1))
            raise ValueError(
                f"{path}: the {key} of {len(bad)} vertices hold NaN or infinite values "
                f"(first at vertex {bad[0]})"
            )
    for prefix in ("", "diffuse_"):
        names = [prefix + c for c in ("red", "green", "blue")]
        if all(k in vertex for k in names):
            result["colors"] = np.stack([vertex[k] for k in names], axis=1).astype(np.uint8)
            break
    face = data.get("face")
    if face is not None and "_lists" in face:
        rows = face["_lists"]
        if file_format == "ascii":
            rows = [_ascii_face(row, index, path) for index, row in enumerate(rows)]
        triangles = [row for row in rows if len(row) == 3]
        faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
        count = len(result["points"])
        if faces.size and (faces.min() < 0 or faces.max() >= count):
            raise ValueError(
                f"{path}: face indices must lie in [0, {count - 1}] ({count} vertices), got "
                f"values in [{faces.min()}, {faces.max()}]"
            )
        result["faces"] = faces
    return result


def _ascii_face(row: list[bytes], index: int, path: str) -> list[int]:
    try:
        length = int(row[0])
        if length < 0 or len(row) < 1 + length:
            raise ValueError(f"it lists {length} indices but holds {len(row) - 1}")
        return [int(value) for value in row[1 : 1 + length]]
    except (ValueError, IndexError) as error:
        text = b" ".join(row).decode("ascii", errors="replace")[:80]
        raise ValueError(
            f"{path}: malformed face {index} {text!r}: a count and that many integer vertex "
            f"indices expected ({error})"
        ) from None
