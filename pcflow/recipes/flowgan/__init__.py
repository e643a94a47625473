"""FlowGAN (Wei, Vosselman, Yang, BMVC 2022): a point cloud of any size from a single image.

Only what is FlowGAN's own: its config and presets (`FlowGANConfig`), its networks (a
`pcflow.models.LatentPointFlow` whose prior is the image Gaussian, the cross-modal critic, the
PSGN-style baseline), its objective, its step and warm-ups (`FlowGANMethod`, run by
`pcflow.training.Trainer`), validation and diagnosis; programs in `cli` (``pcflow-flowgan``).

Example:
    >>> import torch
    >>> from pcflow.recipes import flowgan
    >>> model = flowgan.FlowGAN(flowgan.FlowGANConfig.preset("tiny"))
    >>> model.reconstruct(torch.rand(1, 3, 32, 32), num_points=5000).shape
    torch.Size([1, 5000, 3])
"""

from __future__ import annotations

from pcflow.recipes.flowgan.checkpoints import load_model, upgrade_weights
from pcflow.recipes.flowgan.config import (
    PRESETS,
    DataConfig,
    EvalConfig,
    FlowGANConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from pcflow.recipes.flowgan.data import build_dataset
from pcflow.recipes.flowgan.diagnosis import Diagnosis, diagnose_reconstruction
from pcflow.recipes.flowgan.model import FlowGAN, PSGNBaseline, build_model
from pcflow.recipes.flowgan.networks import build_critic, build_generator, build_psgn
from pcflow.recipes.flowgan.objective import (
    GeneratorLoss,
    PSGNLoss,
    chamfer_term,
    likelihood_loss,
)
from pcflow.recipes.flowgan.training import FlowGANMethod, Trainer

__all__ = [
    "PRESETS",
    "DataConfig",
    "Diagnosis",
    "EvalConfig",
    "FlowGAN",
    "FlowGANConfig",
    "FlowGANMethod",
    "GeneratorLoss",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PSGNBaseline",
    "PSGNLoss",
    "TrainConfig",
    "Trainer",
    "build_critic",
    "build_dataset",
    "build_generator",
    "build_model",
    "build_psgn",
    "chamfer_term",
    "diagnose_reconstruction",
    "likelihood_loss",
    "load_model",
    "upgrade_weights",
]
