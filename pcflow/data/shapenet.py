"""ShapeNet: 3D-R2N2 renderings paired with PointFlow's PC15k point clouds (or an HDF5 file)."""

from __future__ import annotations

import json
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcflow.data.camera import r2n2_camera
from pcflow.data.protocol import ModelCategories
from pcflow.data.transforms import NormalizePoints, Resize

__all__ = ["R2N2_SYNSETS", "SORTED_80_20", "ShapeNetR2N2", "load_image_rgba"]

R2N2_SYNSETS = {
    "02691156": "airplane",
    "02828884": "bench",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "display",
    "03636649": "lamp",
    "03691459": "loudspeaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "watercraft",
}
"""The 13 ShapeNet categories of 3D-R2N2 (and FlowGAN), synset id to name."""

_NAME_TO_SYNSET = {name: synset for synset, name in R2N2_SYNSETS.items()}

SORTED_80_20 = "sorted_80_20"
"""`ShapeNetR2N2`'s ``splits`` for FlowGAN's and DPF-Nets' split: each synset's rendered models
sorted by name, the first ``int(0.8 n)`` in ``"train"`` and the rest in ``"test"``."""


def load_image_rgba(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Load an image as RGB composited on white plus its alpha.

    Arguments:
        path: Any image PIL reads (PNG with or without alpha, JPEG...).

    Returns:
        ``image`` float32 ``(3, H, W)`` in [0, 1] on white and ``mask`` float32 ``(1, H, W)``
        (the alpha channel; ones for images without one).

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If PIL cannot decode it; the message names the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {path}: {type(error).__name__}: {error}") from error
    alpha = rgba[..., 3:] if has_alpha else np.ones_like(rgba[..., 3:])
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return image, torch.from_numpy(np.ascontiguousarray(alpha.transpose(2, 0, 1)))


def _synset_of(category: str) -> str:
    if category in R2N2_SYNSETS:
        return category
    if category in _NAME_TO_SYNSET:
        return _NAME_TO_SYNSET[category]
    if category.isdigit():
        return category
    raise ValueError(
        f"unknown ShapeNet category {category!r}: give a synset id or one of "
        f"{sorted(_NAME_TO_SYNSET)}"
    )


def _read_metadata(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"3D-R2N2 camera file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) < 4:
            raise ValueError(
                f"{path}, line {number}: expected 'azimuth elevation in-plane distance fov', "
                f"got {line.strip()!r}"
            )
        rows.append(values[:5] + [0.0] * (5 - len(values[:5])))
    return np.array(rows, dtype=np.float64)


class ShapeNetR2N2(ModelCategories, Dataset):
    """3D-R2N2 renderings of ShapeNet paired with surface point clouds: one sample per view.

    Or, with ``images=False``, the point clouds alone (PointFlow's PC15k, the generation data):
    one sample per *model* (not per view), without ``"image"``, ``"mask"``, ``"view"`` and
    ``"camera"``. No rendering is read or needed, so every model with a cloud in ``split`` is
    kept, rendered or not: ``ShapeNetR2N2("ShapeNetCore.v2.PC15k", split="test",
    images=False)`` reads PointFlow's tree alone. With ``sample_seed``, where every model has
    all ``views``, a model's points are those of its first view's sample in the image view.

    Renderings follow 3D-R2N2's layout,
    ``ShapeNetRendering/<synset>/<model>/rendering/{00..23}.png`` (137 x 137 RGBA) with
    ``rendering_metadata.txt`` (one line per view: azimuth, elevation, in-plane rotation,
    distance, field of view), turned into cameras by :func:`pcflow.data.camera.r2n2_camera`.

    Point clouds come either from PointFlow's layout,
    ``ShapeNetCore.v2.PC15k/<synset>/<split>/<model>.npy`` (``(15000, 3)`` each), or from one
    HDF5 file holding, for each synset and split, a group ``/<synset>/<split>`` with datasets
    ``points`` ``(M, P, 3)`` and ``model_ids`` ``(M,)`` (strings). Models with a cloud but no
    rendering folder, and clouds that are empty or unreadable, are skipped with one warning
    listing them; a dataset with no pairs at all is an error. Images that fail to decode raise
    an error naming the file when loaded.

    With ``mesh_root`` (ShapeNetCore v1, ``<synset>/<model>/model.obj``, the meshes 3D-R2N2
    rendered), clouds are instead sampled area-uniformly on each model's mesh (``mesh_points``
    points, seeded by the model, then subsets per sample), in exactly the frame of the cameras.

    ``splits`` chooses the models (and views) of ``split``: ``None`` takes the point-cloud
    data's own split folders or groups; `SORTED_80_20` (``"sorted_80_20"``) is FlowGAN's and
    DPF-Nets' split of the rendered models (see `SORTED_80_20`); a path names PyTorch3D's
    splits JSON, ``{split: {synset: {model: [view indices]}}}``, which selects models and views
    (3D-R2N2's standard splits put a few models' views in two splits).

    Points are normalised per shape (``normalize``, default the paper's unit sphere around the
    centroid) from the whole stored cloud before subsampling, and the camera is updated to match.
    The camera assumes the cloud lives in the frame of the mesh 3D-R2N2 rendered (ShapeNet's
    y-up frame); PointFlow's clouds come from ShapeNetCore v2, whose scale can differ from the
    v1 meshes that 3D-R2N2 rendered, so treat projections of real data as approximate.

    Arguments:
        rendering_root: ``ShapeNetRendering`` or its parent folder.
        pointcloud_root: ``ShapeNetCore.v2.PC15k`` (or its parent), or an ``.h5``/``.hdf5`` file;
            ``None`` looks next to the renderings (both folders under ``rendering_root``).
        split: ``"train"``, ``"val"`` or ``"test"`` (as named in the point-cloud data or
            ``splits``).
        categories: Synset ids or names (``"chair"``); ``None`` for all of ``R2N2_SYNSETS``
            present.
        num_points: Points in ``points`` and ``points_target`` (disjoint random subsets when the
            cloud has at least ``2 * num_points`` points).
        views: Which of the 24 views to use (default all).
        image_size: Resize images to this size (FlowGAN uses 224); ``None`` keeps 137.
        normalize: ``"unit_sphere"``, ``"unit_diagonal"`` or ``None`` (as stored).
        transform: Optional callable on each sample dict.
        sample_seed: Makes point subsets depend only on ``(sample_seed, index)``.
        mesh_root: ShapeNetCore v1 folder to sample clouds from, instead of ``pointcloud_root``.
        mesh_points: Points sampled on each mesh (with ``mesh_root``).
        splits: ``None``, `SORTED_80_20` or the path of PyTorch3D's splits JSON (see above);
            `SORTED_80_20` when ``None`` with ``mesh_root``.
        images: Return the renderings (one sample per view); ``False`` for points only (see
            above).
    """

    def __init__(
        self,
        rendering_root: str | os.PathLike,
        pointcloud_root: str | os.PathLike | None = None,
        split: str = "train",
        categories: Sequence[str] | None = None,
        num_points: int = 2500,
        *,
        views: Sequence[int] | None = None,
        image_size: int | None = None,
        normalize: str | None = "unit_sphere",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        sample_seed: int | None = None,
        mesh_root: str | os.PathLike | None = None,
        mesh_points: int = 15_000,
        splits: str | os.PathLike | None = None,
        images: bool = True,
    ) -> None:
        if mesh_root is not None:
            if pointcloud_root is not None:
                raise ValueError("give pointcloud_root or mesh_root, not both")
            pointcloud_root = mesh_root
            splits = SORTED_80_20 if splits is None else splits  # meshes have no split folders
            if not Path(mesh_root).is_dir():
                raise FileNotFoundError(f"mesh_root {mesh_root} is not a directory")
        if pointcloud_root is None:
            pointcloud_root = rendering_root
        rendering_root, pointcloud_root = Path(rendering_root), Path(pointcloud_root)
        if not rendering_root.is_dir():
            raise FileNotFoundError(f"rendering_root {rendering_root} is not a directory")
        if (rendering_root / "ShapeNetRendering").is_dir():
            rendering_root = rendering_root / "ShapeNetRendering"
        if not pointcloud_root.exists():
            raise FileNotFoundError(f"pointcloud_root {pointcloud_root} does not exist")
        if pointcloud_root.is_dir() and (pointcloud_root / "ShapeNetCore.v2.PC15k").is_dir():
            pointcloud_root = pointcloud_root / "ShapeNetCore.v2.PC15k"
        if int(num_points) < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.rendering_root, self.pointcloud_root = rendering_root, pointcloud_root
        self.split, self.num_points = split, int(num_points)
        self.views = list(range(24)) if views is None else [int(v) for v in views]
        self.normalize = NormalizePoints(normalize) if normalize is not None else None
        self.resize = Resize(image_size) if image_size is not None else None
        self.transform, self.sample_seed = transform, sample_seed
        self.images = bool(images)
        self._meshes, self.mesh_points = mesh_root is not None, int(mesh_points)
        self._hdf5 = not self._meshes and pointcloud_root.suffix.lower() in (".h5", ".hdf5")
        chosen = self._split_models(splits, split, rendering_root)
        if categories is None:
            synsets = sorted(R2N2_SYNSETS)
        else:
            synsets = [_synset_of(c) for c in categories]
        self.synsets = synsets
        self.categories = [R2N2_SYNSETS.get(s, s) for s in synsets]
        self._models: list[tuple[int, str, Any]] = []  # (category index, model id, cloud source)
        self._items: list[tuple[int, int]] = []  # (position in _models, view)
        skipped: list[str] = []
        for index, synset in enumerate(synsets):
            if chosen is None:
                pairs = self._clouds(synset, categories is not None)
                model_views: dict[str, list[int]] = {}
            else:
                if categories is not None and synset not in chosen:
                    raise FileNotFoundError(f"splits {splits} hold no {split!r} models of {synset}")
                model_views = chosen.get(synset, {})
                pairs = [(m, self._find_cloud(synset, m)) for m in model_views]
            for model_id, source in pairs:
                rendered = (rendering_root / synset / model_id / "rendering").is_dir()
                if self.images and not rendered:
                    skipped.append(f"{synset}/{model_id} (no rendering folder)")
                    continue
                problem = self._check_cloud(source)
                if problem:
                    skipped.append(f"{synset}/{model_id} ({problem})")
                    continue
                wanted = model_views.get(model_id) or self.views
                model_views_kept = [v for v in wanted if v in self.views]
                if not self.images:
                    model_views_kept = model_views_kept[:1] or [self.views[0]]
                self._items += [(len(self._models), v) for v in model_views_kept]
                self._models.append((index, model_id, source))
        if skipped:
            shown = "; ".join(skipped[:10]) + (
                f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            )
            warnings.warn(f"ShapeNetR2N2 skipped {len(skipped)} models: {shown}", stacklevel=2)
        if not self._items:
            what = "(rendering, point cloud) pairs" if self.images else "point clouds"
            raise FileNotFoundError(
                f"no {what} for split {split!r} and synsets {synsets} under "
                + (
                    f"{rendering_root} and {pointcloud_root}"
                    if self.images
                    else f"{pointcloud_root}"
                )
            )
        self._file = None

    @staticmethod
    def _split_models(
        splits: str | os.PathLike | None, split: str, rendering_root: Path
    ) -> dict[str, dict[str, list[int]]] | None:
        """``{synset: {model: views}}`` of ``split`` (empty views: all), or ``None``."""
        if splits is None:
            return None
        if isinstance(splits, str) and splits == SORTED_80_20:
            if split not in ("train", "test"):
                raise ValueError(f"the {SORTED_80_20} split has 'train' and 'test', got {split!r}")
            chosen = {}
            for folder in sorted(p for p in rendering_root.iterdir() if p.is_dir()):
                models = sorted(p.name for p in folder.iterdir() if p.is_dir())
                cut = int(0.8 * len(models))
                kept = models[:cut] if split == "train" else models[cut:]
                chosen[folder.name] = {model: [] for model in kept}
            return chosen
        path = Path(splits)
        if not path.is_file():
            raise FileNotFoundError(
                f"splits must be None, {SORTED_80_20!r} or a splits JSON file; {path} does not "
                "exist"
            )
        try:
            table = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"splits file {path} is not JSON: {error}") from error
        if not isinstance(table, dict) or split not in table:
            found = sorted(table) if isinstance(table, dict) else type(table).__name__
            raise ValueError(
                f"splits file {path} must map split names to {{synset: {{model: [views]}}}}; "
                f"it has no {split!r} (found {found})"
            )
        chosen = {}
        for synset, models in table[split].items():
            if not isinstance(models, dict) or not all(
                isinstance(v, list) and all(isinstance(i, int) for i in v) for v in models.values()
            ):
                raise ValueError(
                    f"splits file {path}: {split}/{synset} must map model ids to lists of view "
                    "indices"
                )
            chosen[synset] = {model: list(views) for model, views in models.items()}
        return chosen

    def _find_cloud(self, synset: str, model_id: str) -> Any:
        """The cloud source of a model chosen by ``splits`` (a mesh, or a PC15k file)."""
        if self._meshes:
            return ("mesh", self.pointcloud_root / synset / model_id / "model.obj")
        if self._hdf5:
            raise ValueError(
                "splits other than None need clouds from mesh_root or PointFlow's folders, "
                f"not the HDF5 file {self.pointcloud_root}"
            )
        found = sorted((self.pointcloud_root / synset).glob(f"*/{model_id}.npy"))
        return found[0] if found else self.pointcloud_root / synset / "*" / f"{model_id}.npy"

    def _clouds(self, synset: str, required: bool) -> list[tuple[str, Any]]:
        if self._hdf5:
            import h5py

            with h5py.File(self.pointcloud_root, "r") as file:
                meshes = sorted(key for key in file if key.endswith("_vertices_c"))
                if meshes:
                    raise ValueError(
                        f"{self.pointcloud_root} holds meshes in DPF-Nets' layout (root datasets "
                        f"{meshes}, ...), not pcflow's /<synset>/<split>/points: read it with "
                        "pcflow.data.DPFNetsShapeNet"
                    )
                group = file.get(f"{synset}/{self.split}")
                if group is None:
                    if required:
                        raise FileNotFoundError(
                            f"{self.pointcloud_root} has no group /{synset}/{self.split}"
                        )
                    return []
                if "points" not in group or "model_ids" not in group:
                    raise ValueError(
                        f"{self.pointcloud_root}: group /{synset}/{self.split} must hold datasets "
                        f"'points' (M, P, 3) and 'model_ids' (M,), found {sorted(group)}"
                    )
                ids = [
                    m.decode() if isinstance(m, bytes) else str(m) for m in group["model_ids"][()]
                ]
                return [(model_id, (synset, row)) for row, model_id in enumerate(ids)]
        folder = self.pointcloud_root / synset / self.split
        if not folder.is_dir():
            if required:
                raise FileNotFoundError(f"point-cloud folder {folder} does not exist")
            return []
        return [(path.stem, path) for path in sorted(folder.glob("*.npy"))]

    def _check_cloud(self, source: Any) -> str | None:
        if self._hdf5:
            return None  # shapes are checked per group when read
        if self._meshes:
            return None if source[1].is_file() else f"no mesh {source[1]}"
        try:
            array = np.load(source, mmap_mode="r", allow_pickle=False)
        except Exception as error:
            return f"unreadable {source.name}: {type(error).__name__}"
        if array.ndim != 2 or array.shape[1] != 3:
            return f"{source.name} has shape {array.shape}, expected (N, 3)"
        if array.shape[0] == 0:
            return f"{source.name} holds no points"
        return None

    def _load_cloud(self, source: Any) -> Tensor:
        if self._meshes:
            return self._sample_mesh(source[1])
        if self._hdf5:
            import h5py

            if self._file is None:
                self._file = h5py.File(self.pointcloud_root, "r")
            synset, row = source
            cloud = np.asarray(self._file[f"{synset}/{self.split}/points"][row], dtype=np.float32)
            where = f"{self.pointcloud_root}:/{synset}/{self.split}/points[{row}]"
        else:
            try:
                cloud = np.load(source, allow_pickle=False).astype(np.float32)
            except Exception as error:
                raise ValueError(
                    f"cannot read point cloud {source}: {type(error).__name__}: {error}"
                ) from error
            where = str(source)
        if cloud.ndim != 2 or cloud.shape[1] != 3 or cloud.shape[0] == 0:
            raise ValueError(f"point cloud {where} has shape {cloud.shape}, expected (N > 0, 3)")
        if not np.isfinite(cloud).all():
            raise ValueError(f"point cloud {where} holds NaN or infinite values")
        return torch.from_numpy(cloud)

    def _sample_mesh(self, path: Path) -> Tensor:
        import trimesh

        try:
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as error:
            raise ValueError(f"cannot read mesh {path}: {type(error).__name__}: {error}") from error
        if len(mesh.faces) == 0 or not np.isfinite(mesh.vertices).all():
            raise ValueError(f"mesh {path} has no faces or non-finite vertices: nothing to sample")
        # Seeded by the model, so the whole-cloud normalisation is the same for all its views.
        seed = np.random.SeedSequence(
            zlib.crc32(os.fspath(path.relative_to(self.pointcloud_root)).encode())
        )
        points, _ = trimesh.sample.sample_surface(
            mesh, self.mesh_points, seed=np.random.default_rng(seed)
        )
        return torch.from_numpy(points.astype(np.float32))

    def __len__(self) -> int:
        return len(self._items)

    def sample_category(self, index: int) -> str:
        """The category name of sample ``index``, without loading it."""
        return self.object_category(self._items[index][0])

    def object_points(self, index: int) -> Tensor:
        """The whole cloud ``(P, 3)`` of model ``index``, normalised as its samples' points are."""
        cloud = self._load_cloud(self._models[index][2])
        if self.normalize is not None:
            cloud = self.normalize({"points": cloud})["points"]
        return cloud

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        model, view = self._items[index]
        category, model_id, source = self._models[model]
        cloud = self._load_cloud(source)
        generator = None
        if self.sample_seed is not None:
            # Points only: the seed of the model's first view's sample in the image view.
            key = index if self.images else model * len(self.views)
            generator = torch.Generator().manual_seed(self.sample_seed * 1_000_003 + key)
        count = cloud.shape[0]
        if 2 * self.num_points <= count:
            order = torch.randperm(count, generator=generator)
            first, second = order[: self.num_points], order[self.num_points : 2 * self.num_points]
        else:
            first, second = torch.randint(count, (2, self.num_points), generator=generator)
        sample: dict[str, Any] = {
            "points": cloud,
            "points_target": cloud,
            "category": category,
            "category_name": self.categories[category],
            "model_id": model_id,
        }
        if self.images:
            folder = self.rendering_root / self.synsets[category] / model_id / "rendering"
            sample["image"], sample["mask"] = load_image_rgba(folder / f"{view:02d}.png")
            metadata = _read_metadata(folder / "rendering_metadata.txt")
            if view >= len(metadata):
                raise ValueError(f"{folder / 'rendering_metadata.txt'} has no line for view {view}")
            azimuth, elevation, _, distance, _ = metadata[view]
            size = sample["image"].shape[-1]
            intrinsics, extrinsics = r2n2_camera(azimuth, elevation, distance, size)
            sample["view"] = view
            sample["camera"] = {
                "intrinsics": torch.from_numpy(intrinsics).float(),
                "extrinsics": torch.from_numpy(extrinsics).float(),
            }
        if self.normalize is not None:
            sample = self.normalize(sample)  # from the whole cloud, before subsampling
        sample["points"] = sample["points"][first]
        sample["points_target"] = sample["points_target"][second]
        if self.resize is not None and self.images:
            sample = self.resize(sample)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not cross process boundaries
        return state
