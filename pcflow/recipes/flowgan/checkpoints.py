"""Loading a trained FlowGAN from a checkpoint, and what a resumed run must share with it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from pcflow.recipes.flowgan.config import FlowGANConfig
from pcflow.recipes.flowgan.model import FlowGAN, PSGNBaseline, build_model
from pcflow.training import load_weights
from pcflow.utils import CheckpointError, load_checkpoint

__all__ = ["load_model", "upgrade_weights"]

_RENAMED = {
    "flow": {
        "generator.image_encoder.": "generator.prior.encoder.",
        "generator.image_head.": "generator.prior.head.",
    },
    "psgn": {"generator.image_encoder.": "generator.encoder."},
}
"""Weights renamed when the generators became `pcflow.models.LatentPointFlow` (its image
Gaussian is the prior) and `pcflow.models.PointSetRegressor`: decoder -> old prefix -> new."""


def upgrade_weights(weights: dict[str, Tensor], decoder: str = "flow") -> dict[str, Tensor]:
    """A FlowGAN (``decoder="flow"``) or PSGN-style (``"psgn"``) state dict of any pcflow
    version, with the current names."""
    upgraded = {}
    for name, value in weights.items():
        for old, new in _RENAMED[decoder].items():
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        upgraded[name] = value
    return upgraded


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", *, average: bool = True
) -> FlowGAN | PSGNBaseline:
    """Rebuild a trained model from a checkpoint written by `Trainer` (in evaluation mode).

    Checkpoints of earlier pcflow versions load too (their weights are renamed,
    `upgrade_weights`).

    Arguments:
        path: A ``last.pt`` or ``best.pt``.
        map_location: Where the weights go.
        average: Load the run's averaged weights when the checkpoint holds them (a run with
            ``optim.ema_decay``); ``False`` for the weights training goes on from.

    Raises:
        CheckpointError: If the file is missing, corrupt, not a FlowGAN checkpoint, or its
            weights do not fit the configuration it holds.
    """
    state = load_checkpoint(path, map_location, required_keys=("config", "model"))
    try:
        config = FlowGANConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds an incompatible config: {error}"
        ) from error
    model = build_model(config)
    averaged = state.get("average") if average else None
    weights = averaged if averaged is not None else state["model"]
    load_weights(model, upgrade_weights(weights, config.model.decoder), path)
    return model.eval()
