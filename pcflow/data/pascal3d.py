"""PASCAL3D+: real images cropped to annotated objects, with CAD-model clouds and cameras."""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pcflow.data.camera import pascal3d_camera
from pcflow.data.shapenet import load_image_rgba
from pcflow.data.transforms import NormalizePoints

__all__ = ["PASCAL3D_CLASSES", "Pascal3D"]

PASCAL3D_CLASSES = (
    "aeroplane", "bicycle", "boat", "bottle", "bus", "car",
    "chair", "diningtable", "motorbike", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 12 rigid PASCAL VOC classes annotated in PASCAL3D+."""

_VOC_MAIN = Path("PASCAL/VOCdevkit/VOC2012/ImageSets/Main")


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"PASCAL3D+ annotation {path} does not exist")
    try:
        return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as error:
        raise ValueError(
            f"cannot read MATLAB file {path}: {type(error).__name__}: {error}"
        ) from error


def _field(struct: Any, name: str, default: Any = None) -> Any:
    return getattr(struct, name, default)


class Pascal3D(Dataset):
    """PASCAL3D+ objects: one sample per annotated object of the chosen classes.

    Reads ``Images/<class>_<subset>/<id>.JPEG`` (or ``.jpg``) and
    ``Annotations/<class>_<subset>/<id>.mat`` (``record.objects``: ``class``, ``bbox``
    ``[x1 y1 x2 y2]`` 1-based, ``viewpoint`` with ``azimuth``, ``elevation``, ``distance``,
    ``focal``, ``px``, ``py``, ``theta``, ``viewport``, and ``cad_index``), with CAD models from
    ``CAD/<class>.mat`` (a struct array named after the class with ``vertices`` and 1-based
    ``faces``). The split's image ids come from ``Image_sets/<class>_imagenet_<split>.txt`` for
    the ``imagenet`` subset and, for the ``pascal`` subset, from PASCAL VOC's lists
    ``PASCAL/VOCdevkit/VOC2012/ImageSets/Main/<split>.txt`` (the images of the list that have an
    annotation of the class); without its list file, the sorted ids of an ``imagenet`` class
    are split 80 % train / 20 % val (the paper's rule), and the ``pascal`` subset is an error.
    ``pascal`` images are read from ``Images/<class>_pascal/`` or, failing that, VOC's
    ``JPEGImages/``.
    Objects without a viewpoint annotation (``distance == 0``) are skipped.

    Each object is cropped to a square around its bounding box (side ``(1 + margin)`` times the
    box's longer side, white outside the photo) and resized to ``image_size``; the camera is
    PASCAL3D+'s annotated one (:func:`pcflow.data.camera.pascal3d_camera`) moved to the crop.

    When the object's CAD model exists, ``points`` and ``points_target`` are disjoint samples of
    its surface (``cad_points`` area-uniform points per model, seeded by the class and CAD
    index), normalised to the unit sphere (the camera follows), ``"mask"`` is the CAD model's
    silhouette ray-cast with that camera, and ``"has_points"`` is True. Without a CAD model,
    ``points`` and ``points_target`` are zeros ``(num_points, 3)``, ``"mask"`` is all ones, and
    ``"has_points"`` is False: filter on it before computing point metrics.

    Arguments:
        root: The ``PASCAL3D+_release1.1`` folder.
        split: ``"train"`` or ``"val"``.
        categories: Class names (default all 12).
        num_points: Points per cloud.
        subset: ``"imagenet"`` or ``"pascal"`` images.
        image_size: Output image size (square).
        margin: Extra context around the bounding box, as a fraction of its longer side.
        cad_points: Surface points sampled per CAD model.
        skip_difficult: Skip objects marked occluded, truncated or difficult.
        transform: Optional callable on each sample dict.
        sample_seed: Makes point subsets depend only on ``(sample_seed, index)``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        categories: Sequence[str] | None = None,
        num_points: int = 2500,
        *,
        subset: str = "imagenet",
        image_size: int = 224,
        margin: float = 0.1,
        cad_points: int = 15_000,
        skip_difficult: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        sample_seed: int | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"PASCAL3D+ root {root} is not a directory")
        if subset not in ("imagenet", "pascal"):
            raise ValueError(f"subset must be 'imagenet' or 'pascal', got {subset!r}")
        categories = list(PASCAL3D_CLASSES if categories is None else categories)
        unknown = [c for c in categories if c not in PASCAL3D_CLASSES]
        if unknown:
            raise ValueError(f"unknown PASCAL3D+ classes {unknown}; known: {PASCAL3D_CLASSES}")
        self.root, self.split, self.subset = root, split, subset
        self.categories = categories
        self.num_points, self.image_size = int(num_points), int(image_size)
        self.margin, self.cad_points = float(margin), int(cad_points)
        self.transform, self.sample_seed = transform, sample_seed
        self._cad_cache: dict[tuple[str, int], Any] = {}
        self._items: list[dict[str, Any]] = []
        for index, name in enumerate(categories):
            annotations = root / "Annotations" / f"{name}_{subset}"
            if not annotations.is_dir():
                raise FileNotFoundError(f"PASCAL3D+ annotation folder {annotations} does not exist")
            for image_id in self._split_ids(name, annotations):
                record = _loadmat(annotations / f"{image_id}.mat")["record"]
                for position, obj in enumerate(np.atleast_1d(_field(record, "objects", []))):
                    if _field(obj, "class") != name:
                        continue
                    viewpoint = _field(obj, "viewpoint")
                    if viewpoint is None or float(_field(viewpoint, "distance", 0.0) or 0.0) == 0:
                        continue
                    if skip_difficult and any(
                        bool(_field(obj, key, 0)) for key in ("occluded", "truncated", "difficult")
                    ):
                        continue
                    self._items.append(
                        {
                            "category": index,
                            "image_id": str(image_id),
                            "object": position,
                            "bbox": np.asarray(_field(obj, "bbox"), dtype=np.float64),
                            "viewpoint": viewpoint,
                            "cad_index": int(_field(obj, "cad_index", 0) or 0),
                        }
                    )
        if not self._items:
            warnings.warn(
                f"Pascal3D found no annotated objects for {categories} ({subset}, {split})",
                stacklevel=2,
            )

    def _split_ids(self, name: str, annotations: Path) -> list[str]:
        if self.subset == "pascal":
            listing = self.root / _VOC_MAIN / f"{self.split}.txt"
            if not listing.is_file():
                raise FileNotFoundError(
                    f"the pascal subset's {self.split!r} split is PASCAL VOC's list {listing}, "
                    "which does not exist (splits: 'train', 'val')"
                )
            ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
            return [i for i in ids if (annotations / f"{i}.mat").is_file()]
        listing = self.root / "Image_sets" / f"{name}_{self.subset}_{self.split}.txt"
        if listing.is_file():
            return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        ids = sorted(path.stem for path in annotations.glob("*.mat"))
        cut = round(0.8 * len(ids))
        if self.split not in ("train", "val"):
            raise ValueError(
                f"split must be 'train' or 'val' without {listing}, got {self.split!r}"
            )
        return ids[:cut] if self.split == "train" else ids[cut:]

    def _image_path(self, name: str, image_id: str) -> Path:
        folder = self.root / "Images" / f"{name}_{self.subset}"
        folders = [folder]
        if self.subset == "pascal":
            folders.append(self.root / _VOC_MAIN.parent.parent / "JPEGImages")
        for candidate in folders:
            for suffix in (".JPEG", ".jpg", ".jpeg", ".png"):
                if (candidate / f"{image_id}{suffix}").is_file():
                    return candidate / f"{image_id}{suffix}"
        raise FileNotFoundError(
            f"PASCAL3D+ image {folder / image_id}.JPEG (or .jpg) does not exist"
        )

    def _cad(self, name: str, cad_index: int) -> Any:
        key = (name, cad_index)
        if key not in self._cad_cache:
            self._cad_cache[key] = self._load_cad(name, cad_index)
        return self._cad_cache[key]

    def _load_cad(self, name: str, cad_index: int) -> Any:
        import trimesh

        path = self.root / "CAD" / f"{name}.mat"
        if cad_index < 1 or not path.is_file():
            return None
        models = np.atleast_1d(_loadmat(path).get(name))
        if cad_index > len(models):
            raise ValueError(
                f"{path} has {len(models)} CAD models, annotation asks for #{cad_index}"
            )
        model = models[cad_index - 1]
        vertices = np.asarray(_field(model, "vertices"), dtype=np.float64).reshape(-1, 3)
        faces = np.asarray(_field(model, "faces"), dtype=np.int64).reshape(-1, 3) - 1
        if len(vertices) == 0 or len(faces) == 0:
            raise ValueError(f"CAD model #{cad_index} in {path} has no faces: no points to sample")
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        seed = np.random.SeedSequence([zlib.crc32(name.encode()), cad_index])
        points, _ = trimesh.sample.sample_surface(
            mesh, self.cad_points, seed=np.random.default_rng(seed)
        )
        return mesh, torch.from_numpy(points.astype(np.float32))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from pcflow.data.synthetic import render_mesh

        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        item = self._items[index]
        name = self.categories[item["category"]]
        photo, _ = load_image_rgba(self._image_path(name, item["image_id"]))
        viewpoint = item["viewpoint"]
        intrinsics, extrinsics = pascal3d_camera(
            float(_field(viewpoint, "azimuth", 0.0)),
            float(_field(viewpoint, "elevation", 0.0)),
            float(_field(viewpoint, "distance")),
            float(_field(viewpoint, "focal", 1.0) or 1.0),
            (float(_field(viewpoint, "px")), float(_field(viewpoint, "py"))),
            float(_field(viewpoint, "theta", 0.0)),
            float(_field(viewpoint, "viewport", 3000.0) or 3000.0),
        )
        # Square crop around the 1-based inclusive box [x1, x2] x [y1, y2].
        x1, y1, x2, y2 = item["bbox"]
        side = (1.0 + self.margin) * max(x2 - x1 + 1, y2 - y1 + 1)
        left = (x1 - 1 + x2) / 2 - side / 2
        top = (y1 - 1 + y2) / 2 - side / 2
        image = self._crop(photo, left, top, side)
        scale = self.image_size / side
        intrinsics = np.diag([scale, scale, 1.0]) @ (
            intrinsics - np.array([[0, 0, left], [0, 0, top], [0, 0, 0]])
        )
        cad = self._cad(name, item["cad_index"])
        generator = None
        if self.sample_seed is not None:
            generator = torch.Generator().manual_seed(self.sample_seed * 1_000_003 + index)
        camera = {
            "intrinsics": torch.from_numpy(intrinsics).float(),
            "extrinsics": torch.from_numpy(extrinsics).float(),
        }
        if cad is None:
            points = torch.zeros(self.num_points, 3)
            target = torch.zeros(self.num_points, 3)
            mask = torch.ones(1, self.image_size, self.image_size)
        else:
            mesh, cloud = cad
            count = cloud.shape[0]
            if 2 * self.num_points <= count:
                order = torch.randperm(count, generator=generator)
                first, second = (
                    order[: self.num_points],
                    order[self.num_points : 2 * self.num_points],
                )
            else:
                first, second = torch.randint(count, (2, self.num_points), generator=generator)
            alpha = render_mesh(mesh, intrinsics, extrinsics, self.image_size, supersample=1)[
                ..., 3
            ]
            mask = torch.from_numpy(alpha.astype(np.float32) / 255.0)[None]
            normalized = NormalizePoints()({"points": cloud, "camera": camera})
            points, target = normalized["points"][first], normalized["points"][second]
            camera = normalized["camera"]
        sample = {
            "image": image,
            "mask": mask,
            "points": points,
            "points_target": target,
            "has_points": cad is not None,
            "category": item["category"],
            "category_name": name,
            "model_id": f"{item['image_id']}#{item['object']}",
            "view": 0,
            "camera": camera,
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _crop(self, photo: torch.Tensor, left: float, top: float, side: float) -> torch.Tensor:
        """Crop ``[left, left + side) x [top, top + side)`` (white outside) and resize."""
        import torch.nn.functional as F

        _, height, width = photo.shape
        size = self.image_size
        # Sample pixel centres of the output grid from the photo (bilinear, white padding).
        centres = (torch.arange(size, dtype=torch.float64) + 0.5) * (side / size)
        xs = (left + centres) / width * 2 - 1
        ys = (top + centres) / height * 2 - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1).float()
        padded = photo - 1.0  # white becomes 0, the padding value of grid_sample
        crop = F.grid_sample(
            padded[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        return (crop + 1.0).clamp(0.0, 1.0)
