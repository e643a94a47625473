"""Reading and writing point clouds (PLY)."""

from __future__ import annotations

from pcflow.io.ply import read_ply, write_ply

__all__ = ["read_ply", "write_ply"]
