"""FlowGAN (Wei, Vosselman, Yang, BMVC 2022): a point cloud of any size from a single image.

The recipe composes pcflow's parts and has no layers of its own: the DPF-Nets flow decoder
(`pcflow.flows.dpf_flow`), the PointNet posterior and the ResNet image-conditioned Gaussian
(`pcflow.encoders`), and the cross-modal critic (`pcflow.critics`). `FlowGANConfig` holds
every setting (presets ``"quick"``, ``"paper"``, ``"tiny"``), `FlowGAN` is the model,
`Trainer` the resumable, distributed training loop, and `evaluate_reconstruction` the
paper's metrics. The example programs in ``examples/flowgan/`` drive them.

Example:
    >>> import torch
    >>> from pcflow.recipes import flowgan
    >>> model = flowgan.FlowGAN(flowgan.FlowGANConfig.preset("tiny"))
    >>> model.reconstruct(torch.rand(1, 3, 32, 32), num_points=5000).shape
    torch.Size([1, 5000, 3])
"""

from __future__ import annotations

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
from pcflow.recipes.flowgan.evaluation import (
    METRICS,
    Diagnosis,
    EvaluationResult,
    MeanCloudBaseline,
    comparison_table,
    diagnose_reconstruction,
    evaluate_reconstruction,
    select_per_category,
)
from pcflow.recipes.flowgan.model import (
    FlowGAN,
    FlowGANGenerator,
    PSGNBaseline,
    PSGNGenerator,
    build_model,
    check_rgb_images,
    prepare_images,
)
from pcflow.recipes.flowgan.training import (
    NonFiniteLossError,
    Trainer,
    TrainState,
    capture_rng_state,
    load_model,
    restore_rng_state,
)

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
    "build_dataset",
    "build_model",
    "capture_rng_state",
    "check_rgb_images",
    "comparison_table",
    "diagnose_reconstruction",
    "evaluate_reconstruction",
    "load_model",
    "make_loader",
    "prepare_images",
    "restore_rng_state",
    "select_per_category",
]
