"""Validation during training: Chamfer distance and F-score, samples spread over the categories."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pcflow.data import spread_subset
from pcflow.losses import chamfer_distance
from pcflow.metrics import f_score
from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.training import make_loader
from pcflow.viz import draw_reconstructions, view_reconstructions

__all__ = ["describe", "draw_validation", "validate", "validation_subset"]


def validation_subset(dataset: Dataset, config: FlowGANConfig) -> Dataset:
    """``train.val_batches`` batches' worth of ``dataset`` spread over its categories
    (`pcflow.data.spread_subset`); all of it when ``val_batches`` is ``None``."""
    batches = config.train.val_batches
    return spread_subset(dataset, None if batches is None else batches * config.train.batch_size)


def _scores(predicted: Tensor, truth: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    chamfer, _ = chamfer_distance(predicted, truth, batch_reduction=None)
    return chamfer.cpu(), f_score(predicted, truth, threshold=threshold).f_score.cpu()


@torch.no_grad()
def validate(
    model: nn.Module, dataset: Dataset, config: FlowGANConfig, device: torch.device
) -> dict[str, float]:
    """Chamfer distance (squared, unit scale) and F-score of ``model``'s predictions on
    `validation_subset`, seeded by ``train.seed`` (the caller's random state is kept).

    A FlowGAN also reports its autoencoding bound (``val_bound_chamfer``, ``val_bound_fscore``:
    `FlowGAN.autoencode`) and ``val_latent_distance`` (image latent to posterior mean). Samples
    use ``eval.sampling``; clouds with NaN or infinite points are counted in ``val_nonfinite``
    and left out, with a warning.
    """
    loader, _ = make_loader(
        validation_subset(dataset, config), config.train.batch_size,
        seed=config.train.seed, shuffle=False, drop_last=False,
    )  # fmt: skip
    diagnose = hasattr(model, "autoencode")
    sampling, threshold = config.eval.sampling, config.eval.fscore_threshold
    scores: dict[str, list[Tensor]] = defaultdict(list)
    nonfinite = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        for batch in loader:
            truth = batch["points"].to(device)
            images = batch["image"].to(device)
            pred = model.reconstruct(images, truth.shape[1], sampling)
            if diagnose:
                bound = model.autoencode(truth, truth.shape[1], sampling)
                z_posterior = model.posterior_mean(truth)
                scores["distance"].append((model.image_latent(images) - z_posterior).norm(dim=1))
                kept = torch.isfinite(bound).flatten(1).all(1)
                if bool(kept.any()):
                    chamfer, fscore = _scores(bound[kept], truth[kept], threshold)
                    scores["bound_chamfer"].append(chamfer)
                    scores["bound_fscore"].append(fscore)
            finite = torch.isfinite(pred).flatten(1).all(1)
            nonfinite += int((~finite).sum())
            if bool(finite.any()):
                chamfer, fscore = _scores(pred[finite], truth[finite], threshold)
                scores["chamfer"].append(chamfer)
                scores["fscore"].append(fscore)
    if nonfinite:
        warnings.warn(
            f"{nonfinite} validation clouds held NaN or infinite points; they are left out "
            "of the validation metrics (counted in val_nonfinite)",
            stacklevel=3,
        )

    def mean(key: str, empty: float) -> float:
        return float(torch.cat(scores[key]).mean()) if scores[key] else empty

    metrics = {"val_chamfer": mean("chamfer", math.inf), "val_fscore": mean("fscore", 0.0)}
    metrics["val_nonfinite"] = float(nonfinite)
    if diagnose:
        metrics["val_bound_chamfer"] = mean("bound_chamfer", math.inf)
        metrics["val_bound_fscore"] = mean("bound_fscore", 0.0)
        metrics["val_latent_distance"] = float(torch.cat(scores["distance"]).mean().cpu())
    return metrics


def describe(metrics: dict[str, float], epoch: int, step: int) -> str:
    """One line for the console: the `validate` metrics of ``epoch`` (at ``step``)."""
    bound = ""
    if "val_bound_chamfer" in metrics:
        bound = (
            f"; autoencoding bound {metrics['val_bound_chamfer']:.5f}, "
            f"{100 * metrics['val_bound_fscore']:.2f}%; latent distance "
            f"{metrics['val_latent_distance']:.3f}"
        )
    return (
        f"epoch {epoch}: val Chamfer {metrics['val_chamfer']:.5f}, "
        f"F-score {100 * metrics['val_fscore']:.2f}%{bound} (step {step})"
    )


def draw_validation(
    model: nn.Module, dataset: Dataset, config: FlowGANConfig, path: Path, step: int
) -> None:
    """``train.num_pictures`` validation samples spread over the set, image | predicted cloud |
    true cloud: ``path`` (a PNG from the images' viewpoints, `draw_reconstructions`) and its
    interactive twin, ``path`` with ``.html`` (`view_reconstructions`)."""
    count = min(config.train.num_pictures, len(dataset))
    samples = [dataset[i * max(1, len(dataset) // max(count, 1))] for i in range(count)]
    settings = {"num_points": config.data.num_points, "seed": config.train.seed}
    settings.update(sampling=config.eval.sampling, when=f"at step {step}")
    view_reconstructions({"prediction": model}, samples, path.with_suffix(".html"), **settings)
    draw_reconstructions({"prediction": model}, samples, path, **settings)
