"""Where a FlowGAN's reconstruction error comes from: the image encoder or the flow decoder."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pcflow.flows import SamplingOptions
from pcflow.metrics import evaluate_reconstruction
from pcflow.metrics.tables import (
    METRICS,
    EvaluationResult,
    markdown_table,
    metric_cell,
    metric_column,
    settings_note,
)
from pcflow.recipes.flowgan.config import EvalConfig
from pcflow.recipes.flowgan.model import FlowGAN

__all__ = ["Diagnosis", "diagnose_reconstruction"]


@dataclass
class Diagnosis:
    """Where a FlowGAN's reconstruction error comes from: the image encoder or the decoder.

    Arguments:
        image: Metrics of the reconstruction from the image (the image Gaussian's mean ``z``).
        bound: Metrics of the *autoencoding bound*: the flow decoding the posterior mean of
            the true cloud (what a perfect image encoder would hand it).
        latent_distance: ``{category: value, ..., "mean": value}``: the mean Euclidean distance
            between the image Gaussian's mean and the true cloud's posterior mean.
        latent_norm: As ``latent_distance``, the mean norm of the posterior means (its scale).
        temperature: The sampling temperature of both.
        trim: The fraction of low-density draws both dropped.
        spread: Draws both kept per point, thinned by farthest point sampling.
    """

    image: EvaluationResult
    bound: EvaluationResult
    latent_distance: dict[str, float]
    latent_norm: dict[str, float]
    temperature: float = 1.0
    trim: float = 0.0
    spread: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    def table(self) -> str:
        """A Markdown table: per category, CD, EMD and F-score from the image and the bound,
        and the latent distance (relative to the posterior means' norm in brackets)."""
        header = ["category"]
        for metric in METRICS:
            header += [f"{metric_column(metric)} image", "bound"]
        header.append("latent distance")
        rows = []
        for category in [*self.image.per_category, "mean"]:
            image = self.image.mean if category == "mean" else self.image.per_category[category]
            bound = self.bound.mean if category == "mean" else self.bound.per_category[category]
            row = ["**mean**" if category == "mean" else category]
            for metric in METRICS:
                row += [metric_cell(metric, image[metric]), metric_cell(metric, bound[metric])]
            distance, norm = self.latent_distance[category], self.latent_norm[category]
            row.append(f"{distance:.3f} ({distance / max(norm, 1e-12):.2f})")
            rows.append(row)
        note = (
            f"image: z is the image Gaussian's mean; bound: z is the posterior mean of the true "
            f"cloud (the autoencoding bound); latent distance: mean |z_image - z_posterior| (in "
            f"brackets, over the mean |z_posterior|); temperature {self.temperature:g}"
            + (f", the {self.trim:.0%} least dense draws dropped" if self.trim else "")
            + (
                f", {self.spread} draws per point thinned by farthest point sampling"
                if self.spread != 1
                else ""
            )
            + ". "
        )
        return markdown_table(header, rows) + "\n\n" + note + settings_note(self.image.settings)


@torch.no_grad()
def diagnose_reconstruction(
    model: FlowGAN,
    dataset: Dataset,
    config: EvalConfig | None = None,
    *,
    sampling: SamplingOptions | None = None,
    encoder_points: int | None = None,
    split: str = "test",
    progress: bool = True,
    seed: int = 0,
) -> Diagnosis:
    """Evaluate a FlowGAN's reconstruction from images next to its autoencoding bound.

    The flow decodes the image Gaussian's mean (`FlowGAN.reconstruct`) and the true cloud's
    posterior mean (`FlowGAN.autoencode`), both scored by `evaluate_reconstruction`, with the
    distance between the two latents per category. A bound as bad as the image's says the
    decoder holds the model back; a good bound far from the image latent, the image encoder.

    Arguments:
        model: A `FlowGAN`.
        dataset: The evaluation split (``"points"`` of ``config.num_points`` points).
        config: Evaluation settings; ``None`` for the defaults.
        sampling: How the flow samples both; ``None`` for ``config.sampling``.
        encoder_points: Points of the true cloud given to the point encoder (its first ones);
            ``None`` for ``model.config.data.num_points``, the size it was trained on.
        split: The split's name, recorded in the settings.
        progress: Show progress bars.
        seed: Seed of both evaluations' samples (the caller's random state is kept).

    Returns:
        A `Diagnosis`.
    """
    config = EvalConfig() if config is None else config
    if not hasattr(model, "autoencode"):
        raise TypeError(
            f"model must be a FlowGAN (with a point encoder), got {type(model).__name__}"
        )
    sampling = config.sampling if sampling is None else sampling
    count = model.config.data.num_points if encoder_points is None else encoder_points
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"encoder_points must be a positive integer, got {count!r}")

    def from_image(batch: dict[str, Any], num_points: int) -> Tensor:
        return model.reconstruct(batch["image"], num_points, sampling)

    from_posterior = _PosteriorDecoder(model, count, sampling)
    results = []
    for predict in (from_image, from_posterior):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            results.append(
                evaluate_reconstruction(
                    predict, dataset, **config.protocol(), split=split, progress=progress
                )
            )
    image, bound = results
    for result in results:
        result.settings.update(sampling.keywords())
        del result.settings["chunk_size"]
    bound.settings["latent"] = "posterior mean of the true cloud"
    image.settings["latent"] = "image Gaussian's mean"
    distances, norms = _per_category(from_posterior.distances), _per_category(from_posterior.norms)
    return Diagnosis(
        image, bound, distances, norms, sampling.temperature, sampling.trim, sampling.spread
    )


class _PosteriorDecoder:
    """A predictor for `evaluate_reconstruction`: the flow decodes each true cloud's posterior
    mean; per category, the distances between it and the image latent are recorded."""

    def __init__(self, model: FlowGAN, encoder_points: int, sampling: SamplingOptions) -> None:
        self.model, self.encoder_points, self.sampling = model, encoder_points, sampling
        self.distances: dict[str, list[float]] = defaultdict(list)
        self.norms: dict[str, list[float]] = defaultdict(list)

    def __call__(self, batch: dict[str, Any], num_points: int) -> Tensor:
        points = batch["points"][:, : self.encoder_points]
        z_posterior = self.model.posterior_mean(points)
        z_image = self.model.image_latent(batch["image"])
        distances, norms = (z_image - z_posterior).norm(dim=1), z_posterior.norm(dim=1)
        for name, distance, norm in zip(batch["category_name"], distances, norms):
            self.distances[name].append(float(distance))
            self.norms[name].append(float(norm))
        return self.model.autoencode(points, num_points, self.sampling)


def _per_category(values: dict[str, list[float]]) -> dict[str, float]:
    table = {name: float(np.mean(v)) for name, v in sorted(values.items())}
    table["mean"] = float(np.mean(list(table.values())))
    return table
