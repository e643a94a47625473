"""Datasets: the built-in synthetic dataset, ShapeNet and PASCAL3D+ loaders, transforms.

Every dataset returns the same sample: a dict with ``"image"`` float32 ``(3, H, W)`` RGB in
[0, 1] on white, ``"mask"`` float32 ``(1, H, W)``, ``"points"`` and ``"points_target"`` float32
``(num_points, 3)``, ``"category"`` int, ``"category_name"`` str, ``"model_id"`` str, ``"view"``
int and ``"camera"`` (``"intrinsics"`` ``(3, 3)``, ``"extrinsics"`` ``(3, 4)`` world-to-camera,
OpenCV convention; see :mod:`pcflow.data.camera`), except where the data stores no camera
(the renderings in DPF-Nets' HDF5 files, `DPFNetsShapeNet`).

Methods that need no images pass ``images=False`` to any dataset (or to `build_dataset`): one
sample per object, without ``"image"``, ``"mask"``, ``"view"`` and ``"camera"``, and no image
is read or rendered. `build_dataset` makes a dataset from a `DataConfig`: the built-in data
(generated once per user under `cache_dir`), a DPF-Nets file, or a data folder.
"""

from __future__ import annotations

from pcflow.data.build import DATA_LAYOUTS, DataConfig, build_dataset
from pcflow.data.cache import LEGACY_CACHE, cache_dir, synthetic_root
from pcflow.data.camera import (
    intrinsics_matrix,
    look_at_extrinsics,
    pascal3d_camera,
    project_points,
    r2n2_camera,
)
from pcflow.data.concat import ConcatShapes
from pcflow.data.dpfnets import SHAPENET_CORE55_SYNSETS, DPFNetsShapeNet
from pcflow.data.pascal3d import PASCAL3D_CLASSES, Pascal3D
from pcflow.data.protocol import CategorizedShapes
from pcflow.data.selection import sample_categories, select_per_category
from pcflow.data.shapenet import R2N2_SYNSETS, SORTED_80_20, ShapeNetR2N2, load_image_rgba
from pcflow.data.synthetic import (
    SYNTHETIC_POINTS,
    SyntheticConfig,
    SyntheticShapes,
    generate_synthetic_dataset,
    render_mesh,
)
from pcflow.data.transforms import (
    ColorJitter,
    Compose,
    NormalizePoints,
    RandomBackground,
    RandomRotation,
    Resize,
    SubsamplePoints,
    normalize_points,
    subsample_points,
)

__all__ = [
    "DATA_LAYOUTS",
    "LEGACY_CACHE",
    "PASCAL3D_CLASSES",
    "R2N2_SYNSETS",
    "SHAPENET_CORE55_SYNSETS",
    "SORTED_80_20",
    "SYNTHETIC_POINTS",
    "CategorizedShapes",
    "ColorJitter",
    "Compose",
    "ConcatShapes",
    "DPFNetsShapeNet",
    "DataConfig",
    "NormalizePoints",
    "Pascal3D",
    "RandomBackground",
    "RandomRotation",
    "Resize",
    "ShapeNetR2N2",
    "SubsamplePoints",
    "SyntheticConfig",
    "SyntheticShapes",
    "build_dataset",
    "cache_dir",
    "generate_synthetic_dataset",
    "intrinsics_matrix",
    "load_image_rgba",
    "look_at_extrinsics",
    "normalize_points",
    "pascal3d_camera",
    "project_points",
    "r2n2_camera",
    "render_mesh",
    "sample_categories",
    "select_per_category",
    "subsample_points",
    "synthetic_root",
]
