"""DPF-Nets (Klokov, Boyer, Verbeek, ECCV 2020): autoencoding and generation of point clouds.

One `pcflow.models.LatentPointFlow` (PointNet posterior, the DPF point flow) whose prior over
the shape latent is a latent flow (`pcflow.models.FlowPrior`) trained jointly in the ELBO, as
the paper and its public code train it (``model.prior="normal"`` is the ablation). The recipe
holds its configuration (`DPFNetsConfig`, presets ``"quick"``, ``"paper"``, ``"tiny"``), its
training method (`DPFNetsMethod`, run by `pcflow.training.Trainer`; `Trainer` builds both) and
its evaluation (`evaluate_autoencoding`; generation uses `pcflow.metrics.protocol`). The
programs in ``examples/dpfnets/`` drive them.

Example:
    >>> from pcflow.recipes.dpfnets import DPFNetsConfig, build_model
    >>> model = build_model(DPFNetsConfig.preset("tiny"))
    >>> model.sample(2, num_points=300).shape
    torch.Size([2, 300, 3])
"""

from __future__ import annotations

from pcflow.recipes.dpfnets.config import (
    PRESETS,
    DPFNetsConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from pcflow.recipes.dpfnets.evaluation import (
    draw_nearest_training,
    evaluate_autoencoding,
    generate,
    nearest_training,
)
from pcflow.recipes.dpfnets.training import (
    DPFNetsMethod,
    ELBOLoss,
    Trainer,
    build_model,
    load_model,
)

__all__ = [
    "PRESETS",
    "DPFNetsConfig",
    "DPFNetsMethod",
    "ELBOLoss",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "build_model",
    "draw_nearest_training",
    "evaluate_autoencoding",
    "generate",
    "load_model",
    "nearest_training",
]
