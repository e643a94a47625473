"""DPF-Nets' configuration: typed sections, YAML in and out, and the presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pcflow import training
from pcflow.data import DataConfig
from pcflow.flows import SamplingOptions
from pcflow.metrics.protocol import NORMALIZATIONS

__all__ = [
    "PRESETS",
    "DPFNetsConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
]

Prior = Literal["flow", "normal"]
"""The latent prior: DPF-Nets' latent flow, or the standard normal of the ablation."""
Normalization = Literal["none", "pointflow", "lion-global", "lion-per-shape"]
"""The generation protocol's normalisations (`pcflow.metrics.protocol.NORMALIZATIONS`)."""
assert set(Normalization.__args__) == set(NORMALIZATIONS)  # one list of names


@dataclass
class ModelConfig:
    """The networks of `pcflow.models.LatentPointFlow` with a latent prior.

    Arguments:
        latent_features: Size of the shape latent ``z`` (public generation config: 128).
        num_layers: Coupling layers of the point flow (21 blocks of 3 = 63).
        hidden_features: Width of the coupling networks (64).
        base: The point flow's base: ``"normal"`` or ``"freevar"`` (a per-shape scale from
            ``z``; the public config's ``free`` base also learns a mean, which pcflow lacks).
        point_features: Width of the PointNet feature that feeds the posterior head (512).
        point_hidden_features: PointNet's per-point widths before it (64, 128, 256).
        cloud_scale: Clouds are divided by this inside the model (public config: 2.0).
        prior: ``"flow"`` (DPF-Nets' latent flow, trained in the ELBO) or ``"normal"``
            (``N(0, I)``, the ablation).
        prior_layers: Layers of the latent flow (paper: 14; public config: 7).
        prior_hidden_features: Width of each latent-flow layer (public config: 128).
        noise_scale: SoftFlow's noise-conditioned training (`pcflow.models.LatentPointFlow`):
            the largest noise added to the target clouds, in their units, its level given to
            the flow; sampling uses level 0. 0 (the public config) is the plain flow.
    """

    latent_features: int = 64
    num_layers: int = 12
    hidden_features: int = 64
    base: Literal["normal", "freevar"] = "normal"
    point_features: int = 256
    point_hidden_features: list[int] = field(default_factory=lambda: [64, 128, 256])
    cloud_scale: float = 0.5
    prior: Prior = "flow"
    prior_layers: int = 7
    prior_hidden_features: int = 128
    noise_scale: float = 0.0


@dataclass
class LossConfig:
    """The negative ELBO per shape: ``points_weight * -log p(X | z) + prior_weight *
    -log p(z) - entropy_weight * H[q(z | X)]`` (public config: all 1, the plain ELBO)."""

    points_weight: float = 1.0
    prior_weight: float = 1.0
    entropy_weight: float = 1.0


@dataclass
class TrainConfig:
    """The loop (`pcflow.training.TrainSettings`' fields) and validation.

    Arguments:
        val_batches: Validation batches per validation (``None``: the whole split).
        num_pictures: Generated shapes drawn after each validation.
    """

    seed: int = 0
    epochs: int = 60
    batch_size: int = 16
    checkpoint_every: int = 100
    validate_every: int = 1
    log_every: int = 10
    max_consecutive_nonfinite: int = 20
    threads: int | None = 1
    val_batches: int | None = 4
    num_pictures: int = 6


@dataclass
class EvalConfig:
    """Evaluation: autoencoding in FlowGAN's units, generation in PointFlow's protocol.

    The sampling defaults (``T=1``, trim 0.1, Sobol draws) were chosen on the validation split
    by the rule in ``examples/dpfnets/results/RULE.md``; they are stored in every checkpoint
    and used by ``evaluate.py`` and ``sample.py`` unless told otherwise.

    Arguments:
        num_points: Points per autoencoded and per true cloud (FlowGAN: 2,500).
        emd_method: `pcflow.metrics.earth_movers_distance` method.
        fscore_threshold: F-score threshold on squared distances (FlowGAN's code: 1e-3).
        batch_size: Shapes per evaluation batch.
        max_per_category: At most this many test shapes per category (``None``: all).
        generation_points: Points per generated and per test cloud (PointFlow: 2,048).
        normalization: The protocol's normalisation (`pcflow.metrics.protocol`).
        temperature: Scale of the flow's base noise when sampling points.
        trim: Fraction of the least dense draws dropped when sampling.
        spread: Draws kept per point, thinned by farthest point sampling.
        draws: ``"random"`` or ``"sobol"`` base draws (see `pcflow.flows.SamplingOptions`).
    """

    num_points: int = 2500
    emd_method: Literal["exact", "auction", "sinkhorn"] = "auction"
    fscore_threshold: float = 1e-3
    batch_size: int = 16
    max_per_category: int | None = None
    generation_points: int = 2048
    normalization: Normalization = "pointflow"
    temperature: float = 1.0
    trim: float = 0.1
    spread: int = 1
    draws: Literal["random", "sobol"] = "sobol"

    @property
    def sampling(self) -> SamplingOptions:
        """The `pcflow.flows.SamplingOptions` these settings give."""
        return SamplingOptions(self.temperature, self.trim, self.spread, draws=self.draws)


# fmt: off
PRESETS: dict[str, dict[str, Any]] = {
    # CPU minutes: the built-in points-only data, one category (the paper trains one model per
    # category; choose it with --set data.categories=[car]), small networks, 1,500 steps (about
    # 8.5 minutes on one core; results/RULE.md says why this budget).
    "quick": {},
    # The public generation configuration (configs/generation/<category>.yaml).
    "paper": {
        "data": {"num_points": 2048, "num_workers": 4},
        "model": {"latent_features": 128, "num_layers": 63, "hidden_features": 64,
                  "base": "freevar", "point_features": 512, "point_hidden_features": [64, 128, 256],
                  "cloud_scale": 2.0, "prior_layers": 7, "prior_hidden_features": 128},
        "optim": {"lr": 2.56e-4, "betas": [0.9, 0.99], "amsgrad": False, "grad_clip_norm": None,
                  "lr_milestones": []},
        "train": {"epochs": 800, "batch_size": 64, "checkpoint_every": 1000, "log_every": 50,
                  "threads": None, "val_batches": 20},
        "eval": {"emd_method": "exact", "trim": 0.0, "draws": "random"},  # the model's own
    },
    # Seconds: for tests.
    "tiny": {
        "data": {"source": "synthetic-points", "num_points": 64, "categories": ["mug"],
                 "synthetic": {"categories": ["mug"], "objects_per_category": 12,
                               "points_per_object": 400, "split_fractions": [0.5, 0.25, 0.25]},
                 "options": {"num_workers": 0}},
        "model": {"latent_features": 8, "num_layers": 3, "hidden_features": 8, "point_features": 16,
                  "point_hidden_features": [8, 16], "prior_layers": 2, "prior_hidden_features": 8},
        "train": {"epochs": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1,
                  "val_batches": 1, "num_pictures": 2},
        "eval": {"num_points": 64, "generation_points": 64, "batch_size": 4, "emd_method": "exact"},
    },
}
# fmt: on
"""Named presets, as overrides of the quick defaults. The paper preset's departures from the
public configuration: a masked autoregressive latent flow (`pcflow.models.FlowPrior`) instead of
RealNVP; the point flow's ``freevar`` base (no learned mean) and no BatchNorm in its couplings
(points stay independent); AMSGrad off and beta2 fixed at 0.99 (the public config cycles none:
``min_beta2 = max_beta2``); learning rate constant (``min_lr = max_lr``); pcflow's synthetic or
ShapeNet data unless ``--data`` names DPF-Nets' ``ShapeNetCore55v2`` file."""


@dataclass
class DPFNetsConfig(training.RunConfig):
    """Everything that defines a DPF-Nets run; the defaults are the ``"quick"`` preset.

    Example:
        >>> config = DPFNetsConfig.preset("paper")
        >>> config.model.num_layers, config.model.prior_layers
        (63, 7)
        >>> config.with_overrides(["model.prior=normal"]).model.prior
        'normal'
    """

    data: DataConfig = field(
        default_factory=lambda: DataConfig(
            source="synthetic-points",
            num_points=512,
            categories=["airplane"],
            options={"num_workers": 1},
        )
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: training.OptimConfig = field(
        default_factory=lambda: training.OptimConfig(lr=1e-3, lr_milestones=[50])
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    PRESETS: ClassVar = PRESETS
    FREE_FORM: ClassVar = ("data.options", "data.synthetic")
    POSITIVE: ClassVar = (
        "data.num_points", "model.latent_features", "model.num_layers", "model.hidden_features",
        "model.point_features", "model.cloud_scale", "model.prior_layers",
        "model.prior_hidden_features", "train.epochs", "train.batch_size",
        "train.checkpoint_every", "train.validate_every", "train.log_every",
        "train.max_consecutive_nonfinite", "train.threads", "train.val_batches",
        "eval.num_points", "eval.fscore_threshold", "eval.batch_size", "eval.max_per_category",
        "eval.generation_points", "eval.temperature", "eval.spread",
    )  # fmt: skip
    NON_NEGATIVE: ClassVar = (
        "loss.points_weight", "loss.prior_weight", "loss.entropy_weight", "train.num_pictures",
        "data.num_workers", "model.noise_scale",
    )  # fmt: skip

    def check(self) -> None:
        """Ranges beyond the positive keys: widths, the optimiser, sampling."""
        if any(item < 1 for item in self.model.point_hidden_features):
            raise ValueError(
                "config key 'model.point_hidden_features' must hold positive integers, "
                f"got {self.model.point_hidden_features!r}"
            )
        self.optim.check()
        if not math.isfinite(self.eval.temperature):
            raise ValueError(
                f"config key 'eval.temperature' must be finite, got {self.eval.temperature!r}"
            )
        if not 0 <= self.eval.trim < 1:
            raise ValueError(f"config key 'eval.trim' must be in [0, 1), got {self.eval.trim!r}")
