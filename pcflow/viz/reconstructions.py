"""Pictures of any model's reconstructions, the same for training's validation and evaluation."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pcflow.flows import SamplingOptions
from pcflow.viz.plots import plot_sample_reconstructions
from pcflow.viz.views import view_sample_reconstructions

__all__ = ["draw_reconstructions", "seeded_reconstruction", "view_reconstructions"]


def seeded_reconstruction(
    model: nn.Module,
    images: Tensor,
    num_points: int,
    *,
    seed: int,
    sampling: SamplingOptions | None = None,
) -> Tensor:
    """``model.reconstruct(images, num_points, sampling)`` with torch's RNG seeded by
    ``seed``, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.reconstruct(images, num_points, sampling)


def draw_reconstructions(
    models: Mapping[str, nn.Module],
    samples: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    num_points: int,
    seed: int = 0,
    sampling: SamplingOptions | None = None,
    when: str = "",
    **options: Any,
) -> Path | None:
    """Draw each sample's image | every model's reconstruction | the truth, seen from the
    image's viewpoint (`pcflow.viz.plot_sample_reconstructions`), to ``path``.

    Samples for which a model predicted NaN or infinite points (a diverged model) are left
    out with a warning, so that a picture never stops a training run.

    Arguments:
        models: ``{column name: model}``; each has ``reconstruct(images, num_points, ...)``.
        samples: Dataset samples.
        path: The PNG to write.
        num_points: Points per reconstructed cloud.
        seed: Seed of the sampled clouds (the caller's random state is kept).
        sampling: How the flows sample (`pcflow.flows.SamplingOptions`).
        when: Words placed in the warning, such as ``"at step 40"``.
        **options: Keyword arguments of `pcflow.viz.plot_reconstructions`.

    Returns:
        ``path``, or ``None`` (and nothing drawn) when no sample's clouds are all finite.
    """
    kept, predictions, _ = _predict(models, samples, path, num_points, seed, sampling, when)
    if not kept:
        return None
    plot_sample_reconstructions(kept, predictions, path, **options)
    return Path(path)


def view_reconstructions(
    models: Mapping[str, nn.Module],
    samples: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    num_points: int,
    seed: int = 0,
    sampling: SamplingOptions | None = None,
    when: str = "",
    **options: Any,
) -> Path | None:
    """The interactive twin of `draw_reconstructions`: an HTML page
    (`pcflow.viz.view_sample_reconstructions`) of each sample's image | every model's
    reconstruction | the truth, turned with one camera. A model with a
    ``log_density(images, clouds) -> (B, N)`` method (a FlowGAN's) has its points coloured by
    their log-density under the model. Arguments and diverged clouds as in
    `draw_reconstructions` (``models``, ``samples``, ``path``, ``num_points``, ``seed``,
    ``sampling``, ``when``); ``options`` go to `pcflow.viz.view_point_clouds`.

    Returns:
        ``path``, or ``None`` (and nothing written) when no sample's clouds are all finite.
    """
    kept, predictions, densities = _predict(
        models, samples, path, num_points, seed, sampling, when, densities=True
    )
    if not kept:
        return None
    view_sample_reconstructions(kept, predictions, path, log_densities=densities, **options)
    return Path(path)


def _predict(
    models: Mapping[str, nn.Module],
    samples: Sequence[dict[str, Any]],
    path: str | Path,
    num_points: int,
    seed: int,
    sampling: SamplingOptions | None,
    when: str,
    *,
    densities: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, list[Tensor]], dict[str, list[Tensor]]]:
    """The samples whose predictions are all finite, the predictions and the log-densities."""
    predictions, log_densities = {}, {}
    for name, model in models.items():
        device = next(model.parameters()).device
        images = torch.stack([s["image"] for s in samples]).to(device)
        clouds = seeded_reconstruction(model, images, num_points, seed=seed, sampling=sampling)
        predictions[name] = clouds.cpu()
        if densities and hasattr(model, "log_density") and bool(torch.isfinite(clouds).all()):
            log_densities[name] = model.log_density(images, clouds).cpu()
    finite = torch.stack([torch.isfinite(c).flatten(1).all(1) for c in predictions.values()])
    kept = finite.all(0)
    if not bool(kept.all()):
        warnings.warn(
            f"{int((~kept).sum())} of {len(kept)} predicted clouds for {Path(path).name} hold "
            f"NaN or infinite points{' ' + when if when else ''} (has the model diverged?); "
            "they are left out of the picture",
            stacklevel=3,
        )
    samples = [s for s, ok in zip(samples, kept.tolist()) if ok]
    clouds = {name: list(values[kept]) for name, values in predictions.items()}
    return samples, clouds, {name: list(values[kept]) for name, values in log_densities.items()}
