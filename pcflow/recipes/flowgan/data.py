"""FlowGAN's datasets, from its configuration."""

from __future__ import annotations

from torch.utils.data import Dataset

import pcflow.data
from pcflow.recipes.flowgan.config import FlowGANConfig

__all__ = ["build_dataset"]


def build_dataset(
    config: FlowGANConfig, split: str, *, evaluation: bool = False, progress: bool = True
) -> Dataset:
    """The dataset ``config.data`` describes, for one split (`pcflow.data.build_dataset`).

    Arguments:
        config: The run's configuration.
        split: ``"train"``, ``"val"`` or ``"test"``.
        evaluation: Draw each sample's points from a fixed seed, so that evaluations repeat.
        progress: Show the synthetic dataset's generation progress bar (first use only).

    Returns:
        A dataset of FlowGAN samples (see `pcflow.data`).
    """
    sample_seed = config.train.seed if evaluation else None
    return pcflow.data.build_dataset(config.data, split, sample_seed=sample_seed, progress=progress)
