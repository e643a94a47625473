"""FlowGAN's named presets: the one place their values live.

Each preset is a set of overrides of the defaults of `pcflow.recipes.flowgan.FlowGANConfig`
(which are the ``"quick"`` preset). The YAML files in ``examples/flowgan/configs/`` are written
from here by ``python examples/flowgan/write_configs.py``; a test checks that they are current.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "PRESET_DESCRIPTIONS"]

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: the built-in synthetic data, small networks, minutes on a laptop.
    "quick": {},
    # The quick preset's networks trained for 32 epochs, the Chamfer term on for the last eight:
    # about 25 minutes on one CPU core beside a second run.
    "standard": {
        "loss": {"chamfer_weight": 10.0},
        "optim": {"lr_milestones": [24]},
        "train": {"epochs": 32, "critic_warmup_epochs": 31, "chamfer_warmup_epochs": 24},
    },
    # The paper's settings (FlowGAN, BMVC 2022, and its public configuration).
    "paper": {
        "data": {"num_points": 2500, "num_workers": 4},
        "model": {
            "latent_features": 512,
            "num_layers": 63,
            "hidden_features": 64,
            "point_features": 512,
            "point_hidden_features": [64, 128, 256],
            "image_arch": "resnet18",
            "critic_image_arch": "resnet18",
            "image_features": 512,
            "image_channels": 4,
            "image_size": 224,
            "cloud_scale": 2.0,
            "base": "freevar",
            "adversarial": True,
        },
        "loss": {
            "points_weight": 1.0,
            "prior_weight": 1.0,
            "entropy_weight": 1.0,
            "adversarial_weight": 1.0,
            "adversarial_latent": "sample",
            "adversarial_to_encoder": True,
            "gan_kind": "lsgan",
        },
        "optim": {
            "lr": 2.56e-4,
            "betas": [0.9, 0.995],
            "amsgrad": True,
            "weight_decay": 1e-6,
            "lr_milestones": [20],
            "lr_gamma": 0.25,
            "grad_clip_norm": None,
        },
        "train": {
            "epochs": 30,
            "batch_size": 64,
            "critic_warmup_epochs": 5,
            "checkpoint_every": 1000,
            "val_batches": 20,
            "log_every": 50,
            "threads": None,
        },
        "eval": {"num_points": 2500, "emd_method": "exact", "fscore_threshold": 1e-3},
    },
    # Seconds per step on one core: for tests.
    "tiny": {
        "data": {
            "num_points": 64,
            "root": ".pcflow_cache/synthetic-tiny",
            "synthetic": {
                "categories": ["mug", "table"],
                "objects_per_category": 10,
                "views_per_object": 2,
                "image_size": 32,
                "points_per_object": 400,
            },
        },
        "model": {
            "latent_features": 8,
            "num_layers": 3,
            "hidden_features": 8,
            "point_features": 16,
            "point_hidden_features": [8, 16],
            "image_features": 16,
            "image_size": 32,
            "image_arch": "small",
            "critic_image_arch": "small",
            "critic_point_features": 8,
            "critic_image_features": 8,
            "critic_hidden_features": [8, 4],
        },
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "critic_warmup_epochs": 0,
            "threads": 1,
            "checkpoint_every": 2,
            "val_batches": 1,
            "num_pictures": 2,
            "log_every": 1,
        },
        "eval": {
            "num_points": 64,
            "batch_size": 4,
            "max_per_category": 2,
            "emd_method": "exact",
        },
    },
}
"""Named presets, as overrides of the quick defaults: ``"quick"``, ``"standard"``, ``"paper"``
and ``"tiny"``."""

PRESET_DESCRIPTIONS = {
    "quick": "The quick preset: the built-in synthetic data, CPU-sized networks (the defaults).",
    "standard": (
        "The quick preset's networks trained for 32 epochs (about 25 CPU minutes), with the"
        " Chamfer term on for the last eight."
    ),
    "paper": "The paper's settings (FlowGAN, BMVC 2022, and its public configuration).",
    "tiny": "Seconds per step: for tests.",
}
"""One line on each preset, written at the top of its YAML file."""
