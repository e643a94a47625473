"""What the FlowGAN example programs share beyond `pcflow.cli`."""

from __future__ import annotations

from torch.utils.data import Dataset

from pcflow.recipes.flowgan import FlowGANConfig, build_dataset

__all__ = ["evaluation_dataset"]


def evaluation_dataset(
    config: FlowGANConfig, split: str, num_points: int, *, progress: bool = False
) -> Dataset:
    """``split`` of ``config``'s data with ``num_points`` points per true cloud, drawn from a
    fixed seed so that evaluations repeat (`build_dataset` with ``evaluation=True``)."""
    data = config.with_overrides([f"data.num_points={num_points}"])
    return build_dataset(data, split, evaluation=True, progress=progress)
