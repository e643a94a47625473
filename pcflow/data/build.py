"""A dataset from a typed description: the built-in data, a data folder or file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from pcflow.data.cache import synthetic_root
from pcflow.data.concat import ConcatShapes
from pcflow.data.dpfnets import SHAPENET_CORE55_SYNSETS, DPFNetsShapeNet
from pcflow.data.shapenet import R2N2_SYNSETS, SORTED_80_20, ShapeNetR2N2
from pcflow.data.synthetic import SYNTHETIC_POINTS, SyntheticConfig, SyntheticShapes

__all__ = ["DATA_LAYOUTS", "DataConfig", "build_dataset"]

DATA_LAYOUTS = {
    "flowgan-pairs": "FlowGAN's per-category pairs ShapeNet_<synset>_meshes.h5 (+ _images.h5)",
    "dpfnets": "DPF-Nets' ShapeNetAll13_meshes.h5 (+ _images.h5) or ShapeNetCore55v2_meshes.h5",
    "r2n2": "3D-R2N2's ShapeNetRendering/<synset>/<model>/rendering with point clouds "
    "(ShapeNetCore.v2.PC15k, options.pointcloud_root or options.mesh_root)",
    "pc15k": "PointFlow's ShapeNetCore.v2.PC15k/<synset>/<split>/<model>.npy (points only)",
}
"""The layouts of a data folder that `build_dataset` recognises, by name, with what it looks for."""

_PAIR = re.compile(r"ShapeNet_(\d{8})_meshes\.h5")
_SYNSET = re.compile(r"\d{8}")
_SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    """Where the (image, point cloud) pairs, or the point clouds, come from and their shape.

    Arguments:
        source: ``"synthetic"`` for pcflow's built-in dataset (generated on first use);
            ``"synthetic-points"`` for its points-only data for generation
            (`pcflow.data.SYNTHETIC_POINTS`, read with ``images=False``); a DPF-Nets or FlowGAN
            ``.h5`` file (`pcflow.data.DPFNetsShapeNet`); or a data folder, recognised by its
            layout (`DATA_LAYOUTS`): FlowGAN's per-category pairs (all of them, one dataset,
            categories named), DPF-Nets' files, a ShapeNet root holding the 3D-R2N2 renderings
            and the point clouds (`pcflow.data.ShapeNetR2N2`; name a separate point-cloud
            folder or HDF5 file with ``options: {pointcloud_root: ...}``), or PointFlow's PC15k
            tree (points only).
        root: Folder of the synthetic dataset; ``None`` for the per-user cache
            (`pcflow.data.synthetic_root`: ``$PCFLOW_CACHE_DIR``, ``$XDG_CACHE_HOME/pcflow``
            or ``~/.cache/pcflow``, one folder per config).
        categories: Category names to train and evaluate on; ``None`` for all.
        num_points: Points per training cloud (the encoder's input and, separately sampled,
            the likelihood target). The paper uses 2,500.
        late_num_points: Points per training cloud from epoch ``late_from_epoch`` on (denser
            clouds for the last epochs, where a step costs more per point); ``None`` keeps
            ``num_points`` throughout. Validation during training keeps ``num_points``. The
            loss's sums over points (the points' NLL, the Chamfer term) are scaled by
            ``num_points / late_num_points`` in those epochs, so that the loss weighs each
            point against the latent terms as in the rest of the run.
        late_from_epoch: Epochs at ``num_points`` before ``late_num_points`` applies.
        num_workers: DataLoader worker processes (0: load in the training process).
        synthetic: Fields of `pcflow.data.SyntheticConfig` (categories, objects per category,
            views, image size, ...) for the built-in dataset; empty for its defaults (for
            ``"synthetic-points"``: changes to `pcflow.data.SYNTHETIC_POINTS`).
        options: Extra keyword arguments for the dataset class; passed through unchanged.
    """

    source: str = "synthetic"
    root: str | None = None
    categories: list[str] | None = None
    num_points: int = 512
    late_num_points: int | None = None
    late_from_epoch: int = 0
    num_workers: int = 0
    synthetic: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def num_points_at(self, epoch: int) -> int:
        """Points per training cloud in epoch ``epoch`` (0-based: epochs already trained)."""
        late = self.late_num_points is not None and epoch >= self.late_from_epoch
        return self.late_num_points if late else self.num_points


class _NoSamples(Dataset):
    """A split that the data does not have (no validation part): no samples."""

    categories: tuple[str, ...] = ()
    num_objects = 0

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Any:
        raise IndexError(f"index {index}: this split has no samples")


def build_dataset(
    data: DataConfig,
    split: str,
    *,
    sample_seed: int | None = None,
    images: bool = True,
    progress: bool = True,
) -> Dataset:
    """The dataset ``data`` describes, for one split.

    A split the data does not have (validation of DPF-Nets' All13 files or of the sorted 80/20
    split) is an empty dataset. A folder is read by its layout (`DATA_LAYOUTS`, tried in that
    order); a folder holding both DPF-Nets files reads ``ShapeNetAll13`` with images and
    ``ShapeNetCore55v2`` (generation's data) without: name the file as ``source`` to choose.
    ``"synthetic"`` is generated with its renderings on first use, even when read points-only;
    ``"synthetic-points"`` renders nothing.

    Arguments:
        data: What to read (see `DataConfig`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        sample_seed: Draw each sample's points from this seed, so that evaluations repeat;
            ``None`` draws anew at every access.
        images: Samples with images (one per view); ``False`` for points only, one sample per
            object, with no image read or rendered.
        progress: Show the synthetic dataset's generation progress bar (first use only).

    Returns:
        A dataset of samples (see `pcflow.data`); a `pcflow.data.CategorizedShapes`.

    Raises:
        FileNotFoundError: If ``data.source`` is no file or folder.
        ValueError: If a folder holds none of `DATA_LAYOUTS`, naming it and them.

    Example:
        >>> import tempfile
        >>> config = DataConfig(source="synthetic-points", root=tempfile.mkdtemp(),
        ...     num_points=64, synthetic={"categories": ["mug"], "objects_per_category": 3,
        ...     "points_per_object": 200}, options={"num_workers": 0})
        >>> test = build_dataset(config, "test", images=False, progress=False)
        >>> len(test), sorted(test[0])
        (1, ['category', 'category_name', 'model_id', 'points', 'points_target'])
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if data.source in ("synthetic", "synthetic-points"):
        return _synthetic(data, split, sample_seed, images, progress)
    path = Path(data.source).expanduser()
    if path.is_file() and path.suffix.lower() in (".h5", ".hdf5"):
        return _dpfnets(data, path, split, sample_seed, images, data.categories)
    if not path.is_dir():
        raise FileNotFoundError(
            "data.source must be 'synthetic', 'synthetic-points', an existing data folder or a "
            f"DPF-Nets .h5 file, got {data.source!r}"
        )
    layout = _layout(path, data.options)
    if layout == "flowgan-pairs":
        return _pairs(data, path, split, sample_seed, images)
    if layout == "dpfnets":
        return _dpfnets(data, _dpfnets_file(path, images), split, sample_seed, images,
                        data.categories)  # fmt: skip
    if layout is None:
        looked_for = "; ".join(DATA_LAYOUTS.values())
        raise ValueError(
            f"data.source {path} holds none of the data layouts pcflow reads; looked for "
            f"{looked_for}"
        )
    if layout == "pc15k" and images:
        raise ValueError(
            f"data.source {path} holds PointFlow's point clouds but no 3D-R2N2 renderings "
            "(ShapeNetRendering): it serves points-only methods (images=False)"
        )
    options = dict(data.options)
    splits = options.get("splits", SORTED_80_20 if options.get("mesh_root") else None)
    if split == "val" and splits == SORTED_80_20:
        return _NoSamples()  # the paper's split has no val part
    # data.options may name pointcloud_root (PointFlow's PC15k folder or an HDF5 file), views,
    # image_size, normalize; see pcflow.data.ShapeNetR2N2.
    return ShapeNetR2N2(
        path,
        split=split,
        categories=data.categories,
        num_points=data.num_points,
        sample_seed=sample_seed,
        images=images,
        **options,
    )


def _synthetic(
    data: DataConfig, split: str, sample_seed: int | None, images: bool, progress: bool
) -> Dataset:
    if data.source == "synthetic-points":
        if images:
            raise ValueError(
                "data.source 'synthetic-points' has no images (views_per_object=0): build it "
                "with images=False, or use 'synthetic'"
            )
        config = SyntheticConfig.from_dict({**SYNTHETIC_POINTS.to_dict(), **data.synthetic})
    elif data.synthetic:
        config = SyntheticConfig.from_dict(data.synthetic)
    else:  # an explicit root keeps whatever it holds; the cache is keyed by the config
        config = None if data.root is not None else SyntheticConfig()
    root = Path(data.root).expanduser() if data.root is not None else synthetic_root(config)
    options = {"num_workers": 2, **data.options}
    return SyntheticShapes(
        root,
        split,
        data.num_points,
        config=config,
        categories=data.categories,
        sample_seed=sample_seed,
        progress=progress,
        images=images,
        **options,
    )


def _dpfnets(
    data: DataConfig,
    path: Path,
    split: str,
    sample_seed: int | None,
    images: bool,
    categories: list[str] | None,
) -> Dataset:
    # DPF-Nets / FlowGAN HDF5 files (pcflow.data.DPFNetsShapeNet); data.options go to it.
    if split == "val" and "val" not in DPFNetsShapeNet.parts(path):
        return _NoSamples()  # All13 has no val part: no validation
    options = dict(data.options)
    if not images:
        options["images"] = False
    return DPFNetsShapeNet(
        path, split, categories, data.num_points, sample_seed=sample_seed, **options
    )


def _pairs(
    data: DataConfig, folder: Path, split: str, sample_seed: int | None, images: bool
) -> Dataset:
    """FlowGAN's per-category pairs of a folder, as one dataset."""
    files = {}
    for path in sorted(folder.glob("ShapeNet_*_meshes.h5")):
        match = _PAIR.fullmatch(path.name)
        if match:
            files[match.group(1)] = path
    names = {**SHAPENET_CORE55_SYNSETS, **R2N2_SYNSETS}
    if data.categories is not None:
        known = {names.get(synset, synset): synset for synset in files}
        chosen = []
        for category in data.categories:
            synset = known.get(category, category)
            if synset not in files:
                raise ValueError(
                    f"data.categories names {category!r}, but {folder} holds the pairs of "
                    f"{sorted(known)} only (ShapeNet_<synset>_meshes.h5)"
                )
            chosen.append(synset)
        files = {synset: files[synset] for synset in chosen}
    parts = [_dpfnets(data, path, split, sample_seed, images, None) for path in files.values()]
    parts = [part for part in parts if len(part)]
    return ConcatShapes(parts) if parts else _NoSamples()


def _dpfnets_file(folder: Path, images: bool) -> Path:
    """The DPF-Nets file of a folder: All13 with images, Core55 (generation's) without."""
    all13 = folder / "ShapeNetAll13_meshes.h5"
    core55 = [
        folder / name
        for name in ("ShapeNetCore55v2_meshes.h5", "ShapeNetCore55v2_meshes_resampled.h5")
        if (folder / name).is_file()
    ]
    preferred = [all13, *core55] if images else [*core55, all13]
    return next(path for path in preferred if path.is_file())


def _layout(folder: Path, options: dict[str, Any]) -> str | None:
    """The name of the `DATA_LAYOUTS` entry that ``folder`` holds, or ``None``."""
    if any(_PAIR.fullmatch(path.name) for path in folder.glob("ShapeNet_*_meshes.h5")):
        return "flowgan-pairs"
    names = ("ShapeNetAll13_meshes.h5", "ShapeNetCore55v2_meshes.h5",
             "ShapeNetCore55v2_meshes_resampled.h5")  # fmt: skip
    if any((folder / name).is_file() for name in names):
        return "dpfnets"
    if options.get("pointcloud_root") or options.get("mesh_root"):
        return "r2n2"
    renderings = folder / "ShapeNetRendering"
    rendered = renderings.is_dir() or any(
        _SYNSET.fullmatch(synset.name) and any(synset.glob("*/rendering"))
        for synset in _subfolders(folder)
    )
    clouds = folder / "ShapeNetCore.v2.PC15k"
    clouds = clouds if clouds.is_dir() else folder
    has_clouds = any(
        _SYNSET.fullmatch(synset.name) and any((synset / s).is_dir() for s in _SPLITS)
        for synset in _subfolders(clouds)
    )
    if rendered:
        return "r2n2"
    return "pc15k" if has_clouds else None


def _subfolders(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_dir()]
