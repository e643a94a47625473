"""FlowGAN (Wei, Vosselman, Yang, BMVC 2022): a point cloud of any size from a single image.

The recipe composes pcflow's parts and has no layers of its own: the DPF-Nets flow decoder
(`pcflow.flows.dpf_flow`), the PointNet posterior and the ResNet image-conditioned Gaussian
(`pcflow.encoders`), and the cross-modal critic (`pcflow.critics`). `FlowGANConfig` holds
every setting (presets ``"quick"``, ``"paper"``, ``"tiny"``), `FlowGAN` is the model,
the paper's objective is `likelihood_loss`, `generator_objective` and `critic_objective`,
`Trainer` the resumable, distributed training loop (its collaborators: checkpoints, logs,
the process group, validation and pictures, each in a module of its own), and
`evaluate_reconstruction` the paper's metrics. The example programs in ``examples/flowgan/``
drive them.

Example:
    >>> import torch
    >>> from pcflow.recipes import flowgan
    >>> model = flowgan.FlowGAN(flowgan.FlowGANConfig.preset("tiny"))
    >>> model.reconstruct(torch.rand(1, 3, 32, 32), num_points=5000).shape
    torch.Size([1, 5000, 3])
"""

from __future__ import annotations

from pcflow.recipes.flowgan.checkpoints import load_model
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
from pcflow.recipes.flowgan.data import ResumableSampler, SeededSamples, build_dataset, make_loader
from pcflow.recipes.flowgan.diagnosis import Diagnosis, diagnose_reconstruction
from pcflow.recipes.flowgan.evaluation import (
    MeanCloudBaseline,
    check_prediction,
    evaluate_reconstruction,
    sample_categories,
    select_per_category,
)
from pcflow.recipes.flowgan.images import check_rgb_images, prepare_images
from pcflow.recipes.flowgan.model import FlowGAN, PSGNBaseline, build_model
from pcflow.recipes.flowgan.networks import FlowGANGenerator, PSGNGenerator
from pcflow.recipes.flowgan.objective import (
    adversarial_gradient_share,
    chamfer_term,
    critic_objective,
    generator_objective,
    likelihood_loss,
)
from pcflow.recipes.flowgan.pictures import draw_reconstructions
from pcflow.recipes.flowgan.rng import capture_rng_state, restore_rng_state
from pcflow.recipes.flowgan.state import NonFiniteLossError, TrainState
from pcflow.recipes.flowgan.tables import METRICS, EvaluationResult, comparison_table
from pcflow.recipes.flowgan.training import Trainer

__all__ = [
    "METRICS",
    "PRESETS",
    "DataConfig",
    "Diagnosis",
    "EvalConfig",
    "EvaluationResult",
    "FlowGAN",
    "FlowGANConfig",
    "FlowGANGenerator",
    "LossConfig",
    "MeanCloudBaseline",
    "ModelConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "PSGNBaseline",
    "PSGNGenerator",
    "ResumableSampler",
    "SeededSamples",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "adversarial_gradient_share",
    "build_dataset",
    "build_model",
    "capture_rng_state",
    "chamfer_term",
    "check_prediction",
    "check_rgb_images",
    "comparison_table",
    "critic_objective",
    "diagnose_reconstruction",
    "draw_reconstructions",
    "evaluate_reconstruction",
    "generator_objective",
    "likelihood_loss",
    "load_model",
    "make_loader",
    "prepare_images",
    "restore_rng_state",
    "sample_categories",
    "select_per_category",
]
