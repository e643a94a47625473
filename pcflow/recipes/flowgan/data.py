"""FlowGAN's datasets, from its configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from pcflow.data import (
    SORTED_80_20,
    DPFNetsShapeNet,
    ShapeNetR2N2,
    SyntheticConfig,
    SyntheticShapes,
)
from pcflow.recipes.flowgan.config import FlowGANConfig

__all__ = ["build_dataset"]


def build_dataset(
    config: FlowGANConfig, split: str, *, evaluation: bool = False, progress: bool = True
) -> Dataset:
    """The dataset ``config.data`` describes, for one split.

    Arguments:
        config: The run's configuration.
        split: ``"train"``, ``"val"`` or ``"test"``.
        evaluation: Draw each sample's points from a fixed seed, so that evaluations repeat.
        progress: Show the synthetic dataset's generation progress bar (first use only).

    Returns:
        A dataset of FlowGAN samples (see `pcflow.data`).
    """
    data = config.data
    sample_seed = config.train.seed if evaluation else None
    if data.source == "synthetic":
        synthetic = SyntheticConfig.from_dict(data.synthetic) if data.synthetic else None
        options = {"num_workers": 2, **data.options}
        return SyntheticShapes(
            data.root,
            split,
            data.num_points,
            config=synthetic,
            categories=data.categories,
            sample_seed=sample_seed,
            progress=progress,
            **options,
        )
    root = Path(data.source)
    if root.suffix.lower() == ".h5" and root.is_file():
        # DPF-Nets / FlowGAN HDF5 files (pcflow.data.DPFNetsShapeNet); data.options go to it.
        if split == "val" and "val" not in DPFNetsShapeNet.parts(root):
            return _NoSamples()  # All13 has no val part: no validation
        return DPFNetsShapeNet(
            root, split, data.categories, data.num_points, sample_seed=sample_seed, **data.options
        )
    if not root.is_dir():
        raise FileNotFoundError(
            "data.source must be 'synthetic', an existing ShapeNet directory or a DPF-Nets "
            f".h5 file, got {data.source!r}"
        )
    splits = data.options.get("splits", SORTED_80_20 if data.options.get("mesh_root") else None)
    if split == "val" and splits == SORTED_80_20:
        return _NoSamples()  # the paper's split has no val part
    # data.options may name pointcloud_root (PointFlow's PC15k folder or an HDF5 file), views,
    # image_size, normalize; see pcflow.data.ShapeNetR2N2.
    return ShapeNetR2N2(
        root,
        split=split,
        categories=data.categories,
        num_points=data.num_points,
        sample_seed=sample_seed,
        **data.options,
    )


class _NoSamples(Dataset):
    """A split that the data does not have (no validation part): no samples."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int) -> Any:
        raise IndexError(f"index {index}: this split has no samples")
