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

__all__ = ["draw_reconstructions", "seeded_reconstruction"]


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
    predictions = {}
    for name, model in models.items():
        device = next(model.parameters()).device
        images = torch.stack([s["image"] for s in samples]).to(device)
        clouds = seeded_reconstruction(model, images, num_points, seed=seed, sampling=sampling)
        predictions[name] = clouds.cpu()
    finite = torch.stack([torch.isfinite(c).flatten(1).all(1) for c in predictions.values()])
    kept = finite.all(0)
    if not bool(kept.all()):
        warnings.warn(
            f"{int((~kept).sum())} of {len(kept)} predicted clouds for {Path(path).name} hold "
            f"NaN or infinite points{' ' + when if when else ''} (has the model diverged?); "
            "they are left out of the picture",
            stacklevel=2,
        )
    if not bool(kept.any()):
        return None
    plot_sample_reconstructions(
        [s for s, ok in zip(samples, kept.tolist()) if ok],
        {name: list(clouds[kept]) for name, clouds in predictions.items()},
        path,
        **options,
    )
    return Path(path)
