"""FlowGAN (Wei, Vosselman, Yang, BMVC 2022): a point cloud of any size from a single image.

The recipe holds only what is FlowGAN's own: its configuration (`FlowGANConfig`, presets
``"quick"``, ``"standard"``, ``"paper"``, ``"tiny"``), its networks (`networks`: a
`pcflow.models.LatentPointFlow` whose prior is the image-conditioned Gaussian, the cross-modal
critic, the PSGN-style baseline's regressor), its objective (`likelihood_loss`,
`generator_objective`, `critic_objective`), its training step and warm-ups (`FlowGANMethod`,
run by `pcflow.training.Trainer`; `Trainer` builds both from a config), its validation, and
the diagnosis of where its error comes from. Evaluation uses
`pcflow.metrics.evaluate_reconstruction`. The example programs in ``examples/flowgan/``
drive them.

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
from pcflow.recipes.flowgan.networks import PSGNGenerator, build_critic, build_generator
from pcflow.recipes.flowgan.objective import (
    GeneratorLoss,
    PSGNLoss,
    chamfer_term,
    critic_objective,
    generator_objective,
    likelihood_loss,
)
from pcflow.recipes.flowgan.pictures import draw_reconstructions
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
    "PSGNGenerator",
    "PSGNLoss",
    "TrainConfig",
    "Trainer",
    "build_critic",
    "build_dataset",
    "build_generator",
    "build_model",
    "chamfer_term",
    "critic_objective",
    "diagnose_reconstruction",
    "draw_reconstructions",
    "generator_objective",
    "likelihood_loss",
    "load_model",
    "upgrade_weights",
]
