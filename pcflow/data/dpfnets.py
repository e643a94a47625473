"""ShapeNet as DPF-Nets and FlowGAN store it: HDF5 meshes (and renderings), sampled at load."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcflow.data.camera import R2N2_MAX_CAMERA_DISTANCE, r2n2_camera
from pcflow.data.protocol import ModelCategories
from pcflow.data.shapenet import R2N2_SYNSETS, _read_metadata
from pcflow.data.transforms import Resize

__all__ = ["SHAPENET_CORE55_SYNSETS", "DPFNetsShapeNet"]

SHAPENET_CORE55_SYNSETS = {
    "02691156": "airplane", "02747177": "trash_can", "02773838": "bag", "02801938": "basket",
    "02808440": "bathtub", "02818832": "bed", "02828884": "bench", "02843684": "birdhouse",
    "02871439": "bookshelf", "02876657": "bottle", "02880940": "bowl", "02924116": "bus",
    "02933112": "cabinet", "02942699": "camera", "02946921": "can", "02954340": "cap",
    "02958343": "car", "02992529": "cellphone", "03001627": "chair", "03046257": "clock",
    "03085013": "keyboard", "03207941": "dishwasher", "03211117": "display",
    "03261776": "earphone", "03325088": "faucet", "03337140": "file_cabinet",
    "03467517": "guitar", "03513137": "helmet", "03593526": "jar", "03624134": "knife",
    "03636649": "lamp", "03642806": "laptop", "03691459": "loudspeaker", "03710193": "mailbox",
    "03759954": "microphone", "03761084": "microwave", "03790512": "motorbike",
    "03797390": "mug", "03928116": "piano", "03938244": "pillow", "03948459": "pistol",
    "03991062": "pot", "04004475": "printer", "04074963": "remote_control", "04090263": "rifle",
    "04099429": "rocket", "04225987": "skateboard", "04256520": "sofa", "04330267": "stove",
    "04379243": "table", "04401088": "telephone", "04460130": "tower", "04468005": "train",
    "04530566": "watercraft", "04554684": "washer",
}  # fmt: skip
"""The 55 ShapeNetCore v2 synsets, sorted, synset id to name (names of the 13 3D-R2N2 ones as in
`R2N2_SYNSETS`). DPF-Nets' ``ShapeNetCore55v2`` labels index this sorted list (chair is 18, car
16, as its generation configs say)."""

_MESH_KEYS = ("vertices_c", "faces_vc", "vertices_c_bounds", "faces_bounds", "labels")
_PARTS = ("train", "val", "test")
_VIEWS_PER_MODEL = 24
_PER_CATEGORY_NAME = re.compile(r"ShapeNet_(\d{8})_(images|meshes)")
# Meshes are stored at unit radius; this camera distance keeps the whole sphere in the view of
# 3D-R2N2's lens (half field of view atan(16 / 35)), with a margin.
_RENDER_DISTANCE = 2.6 / R2N2_MAX_CAMERA_DISTANCE


def _open(path: Path, role: str) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"cannot read {role} file {path}: it is truncated or not HDF5 ({error})"
        ) from error


def _layout_error(path: Path, keys: list[str], expected: str) -> ValueError:
    shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
    hint = ""
    if any(re.fullmatch(r"\d{8}", key) for key in keys):
        hint = (
            "; groups named by synset are pcflow's own /<synset>/<split>/points layout, read by "
            "pcflow.data.ShapeNetR2N2"
        )
    return ValueError(
        f"{path} is not in the DPF-Nets/FlowGAN layout: expected {expected} at the file's root; "
        f"found keys [{shown}]{hint}"
    )


def _partner(path: Path) -> tuple[Path, Path | None]:
    """The (meshes, images) pair that ``path`` names; images ``None`` when there are none."""
    name = path.name
    if name.endswith("_images.h5"):
        meshes = path.with_name(name[: -len("_images.h5")] + "_meshes.h5")
        if not meshes.is_file():
            raise FileNotFoundError(
                f"images file {path} needs its meshes file {meshes.name} next to it; not found"
            )
        return meshes, path
    if name.endswith("_meshes.h5"):
        images = path.with_name(name[: -len("_meshes.h5")] + "_images.h5")
        return path, images if images.is_file() else None
    return path, None


class DPFNetsShapeNet(ModelCategories, Dataset):
    """ShapeNet meshes (and 3D-R2N2 renderings) in the HDF5 files of DPF-Nets and FlowGAN.

    Reads the files of DPF-Nets' preprocessing, which FlowGAN's code reads too:

    - single-view reconstruction, ``ShapeNetAll13_images.h5`` with ``ShapeNetAll13_meshes.h5``
      (parts ``train`` and ``test``: the first ``int(0.8 n)`` models of each synset, sorted by
      model folder name, then the rest);
    - FlowGAN's per-category pairs ``ShapeNet_<synset>_images.h5`` and ``..._meshes.h5``;
    - generation and autoencoding, ``ShapeNetCore55v2_meshes.h5`` and
      ``ShapeNetCore55v2_meshes_resampled.h5`` (parts ``train``, ``val``, ``test``; no images).

    Every dataset sits at the file's root as ``<part>_<key>``. The meshes file holds
    ``<part>_vertices_c`` ``(V, 3)`` float32 and ``<part>_faces_vc`` ``(F, 3)`` uint32 (0-based
    in each shape), concatenated, with the offsets of each shape in ``<part>_vertices_c_bounds``
    and ``<part>_faces_bounds`` ``(M + 1,)`` uint64; ``<part>_orig_c`` ``(M, 3)`` and
    ``<part>_orig_s`` ``(M,)`` undo the normalisation (``v * s + c``); ``<part>_labels`` ``(M,)``
    uint8 index the sorted synsets (`R2N2_SYNSETS` for the 13-category files,
    `SHAPENET_CORE55_SYNSETS` for ShapeNetCore55). Each mesh is stored centred on its surface's
    centroid and scaled to unit radius. The images file holds ``<part>_images``
    ``(24 M, 4, 137, 137)`` uint8, channel-first B, G, R, alpha, row ``24 m + v`` being view
    ``v`` of model ``m``, and ``<part>_labels``. No model ids are stored: ``"model_id"`` is
    ``"<part>/<row>"``.

    Points are sampled area-uniformly on the stored mesh each time a sample is loaded (as the
    DPF-Nets loaders do): ``points`` and ``points_target`` are two independent samples. They stay
    at the stored unit radius (DPF-Nets and FlowGAN then divide by 2, FlowGAN's
    ``model.cloud_scale``), or go back to ShapeNet's frame with ``original_scale``.

    Images are returned as pcflow's samples hold them, RGB composited on white, with the alpha
    channel as ``"mask"``. The files store no cameras, so these samples have no ``"camera"``,
    unless ``rendering_root`` names the 3D-R2N2 renderings the files were made from: each
    synset's model folders there, sorted and split as the preprocessing split them, give every
    row its model id and each view its camera (from ``rendering_metadata.txt``, in the frame of
    the returned points).
    A meshes file without images (ShapeNetCore55) is rendered instead: view ``v`` is
    :func:`pcflow.data.render_mesh` from 3D-R2N2's camera at azimuth ``15 v`` degrees and
    elevation 25 degrees (30 for odd views) around the unit-radius mesh, and the sample holds
    that ``"camera"``.

    With ``images=False`` the dataset is points only: one sample per *model* (not per view),
    without ``"image"``, ``"mask"``, ``"view"`` and ``"camera"``; no images file is opened and
    nothing is rendered. With ``sample_seed``, model ``m``'s points are those of its first
    view's sample in the image view.

    Arguments:
        path: The ``*_meshes.h5`` or ``*_images.h5`` file; the other one of the pair is found
            next to it (``<prefix>_images.h5`` / ``<prefix>_meshes.h5``).
        split: The file's part: ``"train"``, ``"test"`` and, for ShapeNetCore55, ``"val"``.
        categories: Synset ids or names to keep; ``None`` for all in the file.
        num_points: Points in ``points`` and in ``points_target``.
        images: ``True`` for the images file named like the meshes file (or renderings where
            there is none), the path of the images file when it is named otherwise, or
            ``False`` for points only (see above).
        views: Which of the 24 views to use (default all).
        image_size: Resize images to this size (FlowGAN uses 224); ``None`` keeps 137.
        render_size: Size of the rendered images of a meshes file without images.
        original_scale: Return points in ShapeNet's frame (``v * orig_s + orig_c``).
        label_synsets: The sorted synset list the labels index, when it is neither of the above
            (a per-category file ``ShapeNet_<synset>_*.h5`` takes its synset from its name).
        transform: Optional callable on each sample dict.
        sample_seed: Makes point samples depend only on ``(sample_seed, index)``; ``None`` draws
            from torch's global generator.
        rendering_root: ``ShapeNetRendering`` (or its parent) of 3D-R2N2, for model ids and
            cameras of the ``train``/``test`` parts of images files (see above).

    References:
        Klokov, Boyer, Verbeek. "Discrete Point Flow Networks for Efficient Point Cloud
        Generation." ECCV 2020 (the files' layout, from its preprocessing code).

        Wei, Vosselman, Yang. "Flow-based GAN for 3D Point Cloud Generation from a Single
        Image." BMVC 2022 (trains on the same files).

    Example:
        >>> data = DPFNetsShapeNet("ShapeNetAll13_meshes.h5", "train", ["chair"])  # doctest: +SKIP
        >>> data[0]["points"].shape  # doctest: +SKIP
        torch.Size([2500, 3])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        categories: Sequence[str] | None = None,
        num_points: int = 2500,
        *,
        images: bool | str | os.PathLike = True,
        views: Sequence[int] | None = None,
        image_size: int | None = None,
        render_size: int = 137,
        original_scale: bool = False,
        label_synsets: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        sample_seed: int | None = None,
        rendering_root: str | os.PathLike | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"DPF-Nets HDF5 file {path} does not exist")
        meshes_path, images_path = _partner(path)
        if not isinstance(images, (bool, str, os.PathLike)):
            raise TypeError(
                f"images must be True, False or the path of an images file, got {images!r}"
            )
        self.images = images is not False
        if not isinstance(images, bool):
            images_path = Path(images)
            if not images_path.is_file():
                raise FileNotFoundError(f"images file {images_path} does not exist")
        if int(num_points) < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.views = list(range(_VIEWS_PER_MODEL)) if views is None else [int(v) for v in views]
        bad = [v for v in self.views if not 0 <= v < _VIEWS_PER_MODEL]
        if bad or not self.views:
            raise ValueError(f"views must be a non-empty list of 0..23, got {list(self.views)}")
        self.meshes_path, self.images_path = meshes_path, images_path
        self.split, self.num_points = split, int(num_points)
        self.original_scale, self.render_size = bool(original_scale), int(render_size)
        self.rendering_root = None if rendering_root is None else Path(rendering_root)
        if self.rendering_root is not None and images_path is None:
            raise ValueError(
                f"rendering_root gives the cameras of the images files; {meshes_path} has none "
                "(its samples are rendered, with their cameras)"
            )
        self.resize = Resize(image_size) if image_size is not None else None
        self.transform, self.sample_seed = transform, sample_seed

        with _open(meshes_path, "meshes") as file:
            labels = self._read_meshes_index(file, meshes_path)
        if images_path is not None and self.images:
            with _open(images_path, "images") as file:
                self._check_images(file, images_path, labels)

        all_synsets = self._label_synsets(meshes_path, labels, label_synsets)
        present = sorted({all_synsets[label] for label in np.unique(labels).tolist()})
        names_of = {**SHAPENET_CORE55_SYNSETS, **R2N2_SYNSETS}
        if categories is None:
            synsets = present
        else:
            names = {names_of.get(s, s): s for s in all_synsets.values()}
            synsets = []
            for category in categories:
                synset = names.get(category, category)
                if synset not in all_synsets.values():
                    raise ValueError(
                        f"unknown category {category!r} for {meshes_path.name}: give a synset id "
                        f"or a name of {sorted(names)}"
                    )
                if synset not in present:
                    raise ValueError(
                        f"{meshes_path} part {split!r} holds no model of category {category!r}; "
                        f"it holds {[all_synsets.get(s, s) for s in present]}"
                    )
                synsets.append(synset)
        self.synsets = synsets
        self.categories = [names_of.get(s, s) for s in synsets]
        position = {synset: index for index, synset in enumerate(synsets)}
        # (category index, model row) for each kept model, in the file's order.
        self._models = [
            (position[all_synsets[label]], row)
            for row, label in enumerate(labels.tolist())
            if all_synsets[label] in position
        ]
        self._meshes_file: Any = None
        self._images_file: Any = None
        self._rendered_models: list[Path] | None = None
        if self.rendering_root is not None:
            self._rendered_models = self._match_renderings(labels, all_synsets)

    def _match_renderings(self, labels: np.ndarray, synsets: dict[int, str]) -> list[Path]:
        """The rendering folder of each row of the part: DPF-Nets' sorted 80/20 split."""
        root = self.rendering_root
        if (root / "ShapeNetRendering").is_dir():
            root = root / "ShapeNetRendering"
        if self.split not in ("train", "test"):
            raise ValueError(f"rendering_root needs the 'train' or 'test' part, not {self.split!r}")
        folders = []
        for synset in sorted(set(synsets[label] for label in labels.tolist())):
            rows = [r for r, label in enumerate(labels.tolist()) if synsets[label] == synset]
            if rows != list(range(len(folders), len(folders) + len(rows))):
                raise ValueError(f"{self.meshes_path}: the rows of {synset} are not contiguous")
            if not (root / synset).is_dir():
                raise FileNotFoundError(f"rendering folder {root / synset} does not exist")
            models = sorted(p for p in (root / synset).iterdir() if p.is_dir())
            cut = int(0.8 * len(models))
            part = models[:cut] if self.split == "train" else models[cut:]
            if len(part) != len(rows):
                raise ValueError(
                    f"{root / synset} holds {len(models)} models, whose sorted 80/20 split gives "
                    f"{len(part)} {self.split} models, but {self.meshes_path.name} has "
                    f"{len(rows)}: not the renderings this file was made from"
                )
            folders += part
        return folders

    def _read_meshes_index(self, file: Any, path: Path) -> np.ndarray:
        keys = sorted(file.keys())
        parts = [p for p in _PARTS if all(f"{p}_{k}" in file for k in _MESH_KEYS)]
        if not parts:
            expected = ", ".join(f"<part>_{k}" for k in _MESH_KEYS) + " (parts train/val/test)"
            raise _layout_error(path, keys, expected)
        part = self.split
        if part not in parts:
            raise ValueError(f"{path} has no part {part!r}: its parts are {parts}")
        vertex_bounds = np.asarray(file[f"{part}_vertices_c_bounds"][()], dtype=np.int64)
        face_bounds = np.asarray(file[f"{part}_faces_bounds"][()], dtype=np.int64)
        labels = np.asarray(file[f"{part}_labels"][()]).astype(np.int64).reshape(-1)
        vertices, faces = file[f"{part}_vertices_c"], file[f"{part}_faces_vc"]
        count = len(labels)
        if count == 0:
            raise ValueError(f"{path}: part {part!r} is empty ({part}_labels holds no model)")
        where = f"{path}: part {part!r}"
        if vertex_bounds.shape != (count + 1,) or face_bounds.shape != (count + 1,):
            raise ValueError(
                f"{where} has {count} labels, so {part}_vertices_c_bounds and {part}_faces_bounds "
                f"must have shape ({count + 1},); got {vertex_bounds.shape} and {face_bounds.shape}"
            )
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(
                f"{where}: {part}_vertices_c and {part}_faces_vc must have shape (V, 3) and "
                f"(F, 3), got {vertices.shape} and {faces.shape}"
            )
        for name, bounds, stored in (
            ("vertices_c", vertex_bounds, vertices.shape[0]),
            ("faces_vc", face_bounds, faces.shape[0]),
        ):
            if bounds[0] != 0 or np.any(np.diff(bounds) < 0) or bounds[-1] != stored:
                raise ValueError(
                    f"{where}: {part}_{name}'s bounds must rise from 0 to its {stored} rows, got "
                    f"{bounds[0]} .. {bounds[-1]}: the file is truncated or not written in one run"
                )
        if self.original_scale or self.rendering_root is not None:
            for key, shape in (("orig_c", (count, 3)), ("orig_s", (count,))):
                if f"{part}_{key}" not in file or file[f"{part}_{key}"].shape != shape:
                    found = file[f"{part}_{key}"].shape if f"{part}_{key}" in file else "missing"
                    raise ValueError(
                        f"{where}: original_scale and rendering_root need {part}_{key} of shape "
                        f"{shape}, got {found}"
                    )
            self._centers = np.asarray(file[f"{part}_orig_c"][()], dtype=np.float32)
            self._scales = np.asarray(file[f"{part}_orig_s"][()], dtype=np.float32)
        self._vertex_bounds, self._face_bounds = vertex_bounds, face_bounds
        return labels

    def _check_images(self, file: Any, path: Path, labels: np.ndarray) -> None:
        part = self.split
        keys = sorted(file.keys())
        if f"{part}_images" not in file:
            if not any(k.endswith("_images") for k in keys):
                raise _layout_error(path, keys, "<part>_images (24 M, 4, 137, 137) uint8")
            raise ValueError(f"images file {path} has no {part}_images: found keys {keys}")
        images = file[f"{part}_images"]
        if images.ndim != 4 or images.shape[1] != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"{path}: {part}_images must be (24 M, 4, H, W) uint8 (B, G, R, alpha), got "
                f"{images.shape} {images.dtype}"
            )
        count = len(labels)
        if images.shape[0] != _VIEWS_PER_MODEL * count:
            raise ValueError(
                f"images file {path.name} and meshes file {self.meshes_path.name} do not match: "
                f"part {part!r} has {images.shape[0]} images ({images.shape[0] / 24:g} models of "
                f"24 views) and {count} meshes"
            )
        if f"{part}_labels" in file:
            image_labels = np.asarray(file[f"{part}_labels"][()]).astype(np.int64).reshape(-1)
            if image_labels.shape != labels.shape or np.any(image_labels != labels):
                raise ValueError(
                    f"images file {path.name} and meshes file {self.meshes_path.name} do not "
                    f"match: part {part!r}'s labels differ (models in another order or set)"
                )

    @staticmethod
    def _label_synsets(
        path: Path, labels: np.ndarray, given: Sequence[str] | None
    ) -> dict[int, str]:
        if given is not None:
            synsets = [str(s) for s in given]
        else:
            match = _PER_CATEGORY_NAME.search(path.name)
            if match:  # one synset; its labels depend on how many the preprocessing saw
                return {int(label): match.group(1) for label in np.unique(labels)}
            large = int(labels.max()) >= len(R2N2_SYNSETS) or "55" in path.name
            synsets = sorted(SHAPENET_CORE55_SYNSETS if large else R2N2_SYNSETS)
        if int(labels.min()) < 0 or int(labels.max()) >= len(synsets):
            raise ValueError(
                f"{path}: labels run from {int(labels.min())} to {int(labels.max())}, outside the "
                f"{len(synsets)} synsets they index; pass label_synsets"
            )
        return dict(enumerate(synsets))

    @staticmethod
    def parts(path: str | os.PathLike) -> list[str]:
        """The parts (``"train"``, ``"val"``, ``"test"``) that the meshes file ``path`` (or the
        meshes file of the images file ``path``) holds."""
        meshes_path, _ = _partner(Path(path))
        with _open(meshes_path, "meshes") as file:
            return [p for p in _PARTS if all(f"{p}_{k}" in file for k in _MESH_KEYS)]

    def __len__(self) -> int:
        return len(self._models) * (len(self.views) if self.images else 1)

    def mesh(self, model: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored mesh of the ``model``-th kept model: vertices ``(V, 3)``, faces ``(F, 3)``.

        Vertices are float32 in the stored, normalised frame; faces are int64, 0-based.
        """
        import h5py

        if self._meshes_file is None:
            self._meshes_file = h5py.File(self.meshes_path, "r")
        _, row = self._models[model]
        part, file = self.split, self._meshes_file
        v0, v1 = self._vertex_bounds[row], self._vertex_bounds[row + 1]
        f0, f1 = self._face_bounds[row], self._face_bounds[row + 1]
        where = f"{self.meshes_path}: {part} model {row}"
        try:
            vertices = np.asarray(file[f"{part}_vertices_c"][v0:v1], dtype=np.float32)
            faces = np.asarray(file[f"{part}_faces_vc"][f0:f1], dtype=np.int64)
        except OSError as error:
            raise ValueError(f"{where}: cannot read the mesh (truncated file?): {error}") from error
        if len(faces) == 0:
            raise ValueError(f"{where} has no faces: no surface to sample")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError(
                f"{where}: face indices run to {faces.max()}, but the shape has {len(vertices)} "
                "vertices"
            )
        if not np.isfinite(vertices).all():
            raise ValueError(f"{where} holds NaN or infinite vertices")
        return vertices, faces

    def _image(self, row: int, view: int) -> tuple[Tensor, Tensor]:
        import h5py

        if self._images_file is None:
            self._images_file = h5py.File(self.images_path, "r")
        try:
            bgra = self._images_file[f"{self.split}_images"][_VIEWS_PER_MODEL * row + view]
        except OSError as error:
            raise ValueError(
                f"{self.images_path}: cannot read {self.split}_images[{24 * row + view}] "
                f"(truncated file?): {error}"
            ) from error
        # The same arithmetic as load_image_rgba, so a PNG and its HDF5 copy load identically.
        rgba = np.asarray(bgra, dtype=np.float32)[[2, 1, 0, 3]] / 255.0
        alpha = rgba[3:]
        rgb = rgba[:3] * alpha + (1.0 - alpha)
        return torch.from_numpy(np.ascontiguousarray(rgb)), torch.from_numpy(alpha.copy())

    def render_camera(self, view: int) -> tuple[np.ndarray, np.ndarray]:
        """Intrinsics ``(3, 3)``, extrinsics ``(3, 4)`` of rendered view ``view`` (stored frame)."""
        elevation = 30.0 if view % 2 else 25.0
        return r2n2_camera(15.0 * view, elevation, _RENDER_DISTANCE, self.render_size)

    def sample_category(self, index: int) -> str:
        """The category name of sample ``index``, without loading it."""
        return self.object_category(index // (len(self.views) if self.images else 1))

    def object_points(self, index: int) -> np.ndarray:
        """``num_points`` points ``(num_points, 3)`` sampled area-uniformly on the ``index``-th
        kept model's mesh (seeded by ``index``), in the frame of the samples' points."""
        import trimesh

        points, _ = trimesh.sample.sample_surface(
            self._surface(index), self.num_points, seed=np.random.default_rng(index)
        )
        if self.original_scale:
            _, row = self._models[index]
            points = points * float(self._scales[row]) + self._centers[row].astype(np.float64)
        return points.astype(np.float32)

    def _surface(self, model: int) -> Any:
        import trimesh

        vertices, faces = self.mesh(model)
        mesh = trimesh.Trimesh(vertices.astype(np.float64), faces, process=False)
        if not mesh.area > 0:
            raise ValueError(
                f"{self.meshes_path}: {self.split} model {self._models[model][1]}'s faces have no "
                "area: no surface to sample"
            )
        return mesh

    def __getitem__(self, index: int) -> dict[str, Any]:
        import trimesh

        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        if self.images:
            model, view_position = divmod(index, len(self.views))
        else:  # seeded as the model's first view in the image view
            model, view_position = index, 0
            index = model * len(self.views)
        category, row = self._models[model]
        view = self.views[view_position]
        mesh = self._surface(model)
        generator = None
        if self.sample_seed is not None:
            generator = torch.Generator().manual_seed(self.sample_seed * 1_000_003 + index)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        points, _ = trimesh.sample.sample_surface(
            mesh, 2 * self.num_points, seed=np.random.default_rng(seed)
        )
        camera = None
        model_id = f"{self.split}/{row}"
        if self._rendered_models is not None:
            model_id = self._rendered_models[row].name
        if not self.images:
            if self.original_scale:
                points = points * float(self._scales[row]) + self._centers[row].astype(np.float64)
            points = torch.from_numpy(points.astype(np.float32))
            sample = {
                "points": points[: self.num_points],
                "points_target": points[self.num_points :],
                "category": category,
                "category_name": self.categories[category],
                "model_id": model_id,
            }
            return self.transform(sample) if self.transform is not None else sample
        if self.images_path is not None:
            image, mask = self._image(row, view)
            if self._rendered_models is not None:
                camera = self._rendering_camera(row, view, image.shape[-1])
        else:
            from pcflow.data.synthetic import render_mesh

            intrinsics, extrinsics = self.render_camera(view)
            rgba = render_mesh(mesh, intrinsics, extrinsics, self.render_size, supersample=1)
            rgba = rgba.astype(np.float32).transpose(2, 0, 1) / 255.0
            image, mask = torch.from_numpy(rgba[:3].copy()), torch.from_numpy(rgba[3:].copy())
            camera = {"intrinsics": intrinsics, "extrinsics": extrinsics}
        if self.original_scale:
            center = self._centers[row].astype(np.float64)
            scale = float(self._scales[row])
            points = points * scale + center
            if camera is not None and self.images_path is None:
                # Rendered around the stored mesh, v = (p - c) / s: x_cam = R v + t, i.e.
                # s x_cam = R p + (s t - R c), the same pixels.
                extrinsics = camera["extrinsics"].copy()
                extrinsics[:, 3] = scale * extrinsics[:, 3] - extrinsics[:, :3] @ center
                camera["extrinsics"] = extrinsics
        points = torch.from_numpy(points.astype(np.float32))
        sample = {
            "image": image,
            "mask": mask,
            "points": points[: self.num_points],
            "points_target": points[self.num_points :],
            "category": category,
            "category_name": self.categories[category],
            "model_id": model_id,
            "view": view,
        }
        if camera is not None:
            sample["camera"] = {k: torch.from_numpy(v).float() for k, v in camera.items()}
        if self.resize is not None:
            sample = self.resize(sample)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _rendering_camera(self, row: int, view: int, size: int) -> dict[str, np.ndarray]:
        folder = self._rendered_models[row] / "rendering"  # type: ignore[index]
        metadata = _read_metadata(folder / "rendering_metadata.txt")
        if view >= len(metadata):
            raise ValueError(f"{folder / 'rendering_metadata.txt'} has no line for view {view}")
        azimuth, elevation, _, distance, _ = metadata[view]
        intrinsics, extrinsics = r2n2_camera(azimuth, elevation, distance, size)
        if not self.original_scale:
            # The camera sees ShapeNet's frame p = s v + c: x_cam = s (R v + (R c + t) / s).
            center, scale = self._centers[row].astype(np.float64), float(self._scales[row])
            extrinsics[:, 3] = (extrinsics[:, :3] @ center + extrinsics[:, 3]) / scale
        return {"intrinsics": intrinsics, "extrinsics": extrinsics}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_meshes_file"] = state["_images_file"] = None  # h5py handles stay in one process
        return state
