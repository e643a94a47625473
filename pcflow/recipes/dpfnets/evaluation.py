"""DPF-Nets' evaluation: new shapes in batches, autoencoding in FlowGAN's units, and pictures of
generated shapes beside their nearest training shapes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcflow._checks import check_positive_int
from pcflow.flows import SamplingOptions
from pcflow.metrics import EvaluationResult, evaluate_reconstruction, pairwise_chamfer
from pcflow.models import LatentPointFlow
from pcflow.recipes.dpfnets.config import DPFNetsConfig

__all__ = ["draw_nearest_training", "evaluate_autoencoding", "generate", "nearest_training"]


def generate(
    model: LatentPointFlow,
    num_shapes: int,
    num_points: int,
    *,
    seed: int = 0,
    batch_size: int = 16,
    sampling: SamplingOptions | None = None,
) -> Tensor:
    """``num_shapes`` new shapes ``(num_shapes, num_points, 3)`` from the model's prior, drawn
    ``batch_size`` at a time with torch's RNG seeded by ``seed`` (the caller's state is kept).

    Example:
        >>> from pcflow.recipes.dpfnets import DPFNetsConfig, build_model
        >>> generate(build_model(DPFNetsConfig.preset("tiny")), 3, 50).shape
        torch.Size([3, 50, 3])
    """
    check_positive_int("num_shapes", num_shapes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = [
            model.sample(min(batch_size, num_shapes - start), num_points, sampling=sampling)
            for start in range(0, num_shapes, batch_size)
        ]
    return torch.cat(parts).cpu()


def evaluate_autoencoding(
    model: LatentPointFlow,
    config: DPFNetsConfig,
    dataset: Dataset,
    *,
    split: str = "test",
    seed: int = 0,
    progress: bool = False,
) -> EvaluationResult:
    """CD, EMD and F-score of each cloud decoded from its own posterior mean, per category, in
    FlowGAN's units and protocol (`pcflow.metrics.evaluate_reconstruction` with
    ``config.eval``: ``eval.num_points`` points against as many true ones, unit scale).

    The dataset's ``"points"`` must hold ``eval.num_points`` points; the encoder reads them.
    """
    evaluation = config.eval

    def predict(batch: dict, num_points: int) -> Tensor:
        return model.autoencode(batch["points"], num_points, evaluation.sampling)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return evaluate_reconstruction(
            predict, dataset, num_points=evaluation.num_points,
            emd_method=evaluation.emd_method, fscore_threshold=evaluation.fscore_threshold,
            batch_size=evaluation.batch_size, max_per_category=evaluation.max_per_category,
            split=split, progress=progress,
        )  # fmt: skip


def nearest_training(generated: Tensor, train: Tensor) -> tuple[Tensor, Tensor]:
    """Each generated cloud's nearest training cloud by Chamfer distance (squared, mean per
    direction, summed): ``(indices (S,), distances (S,))``. A generator that copies its
    training shapes shows distances near the training set's own spacing."""
    distances = pairwise_chamfer(generated, train)
    best = distances.min(dim=1)
    return best.indices, best.values


def draw_nearest_training(
    generated: Mapping[str, Tensor],
    train: Mapping[str, Tensor],
    path: str | Path,
    *,
    per_category: int = 4,
) -> Path:
    """A grid: per category (a row), ``per_category`` generated shapes, each beside its nearest
    training shape by Chamfer distance (`nearest_training`), titled with that distance; each
    pair is drawn at one scale, seen from the same three-quarter view."""
    from pcflow.viz import plot_point_clouds

    clouds, titles = [], []
    for category, shapes in generated.items():
        shapes = shapes[:per_category]
        indices, distances = nearest_training(shapes, train[category])
        pairs = zip(shapes, indices.tolist(), distances.tolist())
        for number, (shape, index, distance) in enumerate(pairs):
            clouds += [shape, train[category][index]]
            titles += [f"{category}: generated {number}",
                       f"nearest training shape {index}\nCD {distance * 1e3:.2f}e-3"]  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_point_clouds(clouds, titles, path=path, columns=2 * per_category, panel_size=3.2,
                      zoom=1.9, point_size=1.2, elevation=25.0, azimuth=-50.0)  # fmt: skip
    return path
