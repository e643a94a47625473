"""FlowGAN's configuration: typed sections with YAML in and out, and named presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from pcflow.recipes.flowgan.presets import PRESETS
from pcflow.recipes.flowgan.sections import (
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from pcflow.training import RunConfig

__all__ = [
    "PRESETS",
    "DataConfig",
    "EvalConfig",
    "FlowGANConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
]


@dataclass
class FlowGANConfig(RunConfig):
    """Everything that defines a FlowGAN run; the defaults are the ``"quick"`` preset.

    Build one from a preset, a YAML file or a dict, and override single keys with dotted names
    (`pcflow.training.RunConfig`). Unknown keys and values of the wrong type are errors that
    name the key.

    Arguments:
        data: See `DataConfig`.
        model: See `ModelConfig`.
        loss: See `LossConfig`.
        optim: See `OptimConfig`.
        train: See `TrainConfig`.
        eval: See `EvalConfig`.

    Example:
        >>> config = FlowGANConfig.preset("paper")
        >>> config.model.num_layers, config.train.batch_size
        (63, 64)
        >>> config = config.with_overrides(["train.epochs=3", "model.adversarial=false"])
        >>> FlowGANConfig.from_yaml(config.to_yaml()) == config
        True
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    PRESETS: ClassVar = PRESETS
    FREE_FORM: ClassVar = ("data.options", "data.synthetic")
    POSITIVE: ClassVar = (
        "data.num_points", "data.late_num_points", "model.latent_features", "model.num_layers",
        "model.hidden_features", "model.point_features", "model.image_features",
        "model.image_size", "model.cloud_scale", "model.critic_point_features",
        "model.critic_image_features", "model.psgn_points", "optim.lr", "optim.critic_lr",
        "optim.grad_clip_norm", "train.epochs", "train.batch_size",
        "train.max_consecutive_nonfinite", "train.checkpoint_every", "train.validate_every",
        "train.val_batches", "train.log_every", "train.threads", "eval.num_points",
        "eval.fscore_threshold", "eval.batch_size", "eval.max_per_category", "eval.temperature",
    )  # fmt: skip
    NON_NEGATIVE: ClassVar = (
        "data.num_workers", "data.late_from_epoch", "loss.points_weight", "loss.prior_weight",
        "loss.entropy_weight", "loss.adversarial_weight", "loss.gradient_penalty_weight",
        "loss.r1_weight", "loss.chamfer_weight", "optim.weight_decay", "optim.ema_from_epoch",
        "train.critic_warmup_epochs", "train.chamfer_warmup_epochs", "train.num_pictures",
        "model.noise_scale",
    )  # fmt: skip

    def check(self) -> None:
        """The ranges beyond positive and non-negative keys: widths, betas, decay, sampling."""
        for key in ("model.point_hidden_features", "model.critic_hidden_features"):
            if any(item < 1 for item in self._value(key)):
                raise ValueError(
                    f"config key {key!r} must hold positive integers, got {self._value(key)!r}"
                )
        self.optim.check()
        if not math.isfinite(self.eval.temperature):
            raise ValueError(
                f"config key 'eval.temperature' must be finite, got {self.eval.temperature!r}"
            )
        if not 0 <= self.eval.trim < 1:
            raise ValueError(f"config key 'eval.trim' must be in [0, 1), got {self.eval.trim!r}")
        if self.eval.spread < 1:
            raise ValueError(
                f"config key 'eval.spread' must be at least 1, got {self.eval.spread!r}"
            )
