"""The sections of FlowGAN's configuration: typed dataclasses whose enumerated settings are
``Literal`` types (the allowed values are the types' arguments, checked when a config loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pcflow import training
from pcflow.data import DataConfig
from pcflow.flows import SamplingOptions

__all__ = [
    "AdversarialLatent",
    "BaseDistribution",
    "Coupling",
    "DataConfig",
    "Decoder",
    "EmdMethod",
    "EvalConfig",
    "GanKind",
    "ImageArch",
    "ImageChannels",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
]

Decoder = Literal["flow", "psgn"]
"""FlowGAN's flow decoder, or the PSGN-style baseline's point regression."""
Coupling = Literal["affine", "spline"]
"""Coupling layers of the point flow (`pcflow.flows.dpf_flow`)."""
BaseDistribution = Literal["normal", "freevar"]
"""The point flow's base distribution."""
ImageArch = Literal["resnet18", "small", "small_gn"]
"""Image encoder architectures (`pcflow.encoders.ResNetImageEncoder`)."""
ImageChannels = Literal[3, 4]
"""RGB, or grey + RGB as in the paper."""
AdversarialLatent = Literal["mean", "sample"]
"""The latent of the clouds shown to the critic."""
GanKind = Literal["lsgan", "nonsaturating", "hinge", "wasserstein"]
"""GAN losses (`pcflow.critics.GAN_LOSS_KINDS`)."""
EmdMethod = Literal["exact", "auction", "sinkhorn"]
"""`pcflow.metrics.earth_movers_distance` methods."""


@dataclass
class ModelConfig:
    """The networks: shape latent, flow decoder, encoders and the cross-modal critic.

    Arguments:
        decoder: ``"flow"`` for FlowGAN (a VAE whose decoder is a conditional point flow), or
            ``"psgn"`` for the PSGN-style baseline (the image encoder regresses a fixed set of
            points, trained with a Chamfer loss), trained by the same loop for comparison.
        latent_features: Size of the shape latent ``z`` (paper: 512).
        num_layers: Coupling layers of the point flow (paper: 63 = 21 blocks of 3).
        hidden_features: Width of the coupling networks (paper: 64).
        coupling: ``"affine"`` (the paper's) or ``"spline"`` (`pcflow.flows.dpf_flow`); splines
            scored a validation CD of 5.1 x1e3 against 3.6 at twice the training time
            (``examples/flowgan/experiments.md``, eighth round).
        base: The flow's base distribution: ``"normal"`` (standard normal over points) or
            ``"freevar"`` (the public configuration's: zero mean, a per-shape scale from a
            linear layer of ``z``, `pcflow.flows.FreeVariancePointNormal`).
        memory_efficient: Recompute the flow's activations in backward instead of storing
            them (bounded memory, more time).
        point_features: Width of the PointNet feature that feeds the posterior head (512).
        point_hidden_features: PointNet's per-point widths before it (64, 128, 256).
        image_arch: ``"resnet18"`` (paper, from scratch), ``"small"``
            (`pcflow.encoders.SmallResNet`: 47 ms of a quick-preset step against ResNet18's 333)
            or ``"small_gn"`` (the same with GroupNorm).
        image_features: Width of the image feature that feeds the image head (512).
        image_channels: 4 feeds grayscale plus RGB as in the paper; 3 feeds RGB.
        image_size: Images are resized to ``image_size x image_size`` (paper: 224).
        cloud_scale: Clouds are divided by this for training and multiplied back for output
            and evaluation (paper: 2.0, with a base distribution whose variance the latent
            sets; pcflow's flows have a standard normal base, and the quick preset's 0.5 gives
            the training clouds about unit spread, which its short training needs).
        noise_scale: SoftFlow's noise-conditioned training (`pcflow.models.LatentPointFlow`):
            the largest standard deviation, in the clouds' units, of the noise added to the
            target clouds, with its level as an extra feature of the flow's context; sampling
            uses level 0. 0 (the default) is the plain flow.
        adversarial: Train with the cross-modal critic; ``False`` is the flow-only ablation.
        critic_point_features: The critic's PointNet feature width (128).
        critic_image_features: The critic's image feature width (128).
        critic_image_arch: The critic's image encoder, as ``image_arch``.
        critic_hidden_features: The critic's fusion MLP widths (128, 64, 32, 16).
        psgn_points: Points regressed by the PSGN-style baseline; ``None`` for
            ``eval.num_points``.
    """

    decoder: Decoder = "flow"
    latent_features: int = 128
    num_layers: int = 15
    hidden_features: int = 64
    coupling: Coupling = "affine"
    base: BaseDistribution = "normal"
    memory_efficient: bool = False
    point_features: int = 256
    point_hidden_features: list[int] = field(default_factory=lambda: [64, 128, 256])
    image_arch: ImageArch = "small_gn"
    image_features: int = 256
    image_channels: ImageChannels = 4
    image_size: int = 64
    cloud_scale: float = 0.5
    noise_scale: float = 0.0
    adversarial: bool = True
    critic_point_features: int = 128
    critic_image_features: int = 128
    critic_image_arch: ImageArch = "small_gn"
    critic_hidden_features: list[int] = field(default_factory=lambda: [128, 64, 32, 16])
    psgn_points: int | None = None


@dataclass
class LossConfig:
    """Weights of the generator's loss terms and the GAN variant.

    The per-shape generator loss is ``points_weight * NLL(points | z) + prior_weight *
    NLL(z | image) - entropy_weight * H(q(z | points))`` with ``z`` drawn from the PointNet
    posterior, plus ``adversarial_weight`` times the GAN generator loss once the critic is on,
    plus, once it starts, ``chamfer_weight`` times the Chamfer term (`chamfer_term`).

    Arguments:
        points_weight: Weight of the points' negative log-likelihood (paper: 1.0).
        prior_weight: Weight of the posterior sample's NLL under the image Gaussian (paper:
            1.0; the quick preset's 0.1, with ``entropy_weight`` 0.1, is a beta-VAE with beta
            0.1, which lets the latent carry the shape sooner in a short training).
        entropy_weight: Weight of the posterior's entropy, subtracted (paper: 1.0).
        adversarial_weight: Weight of the critic's generator loss. The points' NLL is summed
            over all points and coordinates (thousands of nats, and gradients about 2,000
            times the GAN loss's at the quick preset's start), so the weight must be large for
            the critic to matter (the quick preset uses 30); the paper does not state its value
            (the paper preset uses 1.0).
        adversarial_latent: The latent of the clouds shown to the critic: ``"sample"`` draws it
            from the image-conditioned Gaussian (reparameterised), ``"mean"`` takes its mean,
            the latent used at inference, so the critic judges exactly what the model outputs.
        adversarial_to_encoder: Let the critic's gradient reach the image encoder through the
            latent, not only the flow. Off in the quick preset: there it pushed latents out of
            the region the flow was trained on, where sampling overflowed.
        gan_kind: ``"lsgan"`` (paper), ``"nonsaturating"``, ``"hinge"`` or ``"wasserstein"``.
        gradient_penalty_weight: WGAN-GP penalty weight in the critic loss (0: none).
        r1_weight: R1 penalty weight on real clouds in the critic loss (0: none).
        chamfer_weight: Weight of the Chamfer term, from epoch ``train.chamfer_warmup_epochs``
            on: the cloud the flow samples at the image Gaussian's mean (the latent of
            inference) against the target cloud, summed over the target's points like the
            points' NLL (`chamfer_term`), its gradient reaching the flow and the image encoder.
            Not in the paper (0 there and in the quick preset); the standard preset's 10 was
            chosen on validation (``examples/flowgan/experiments.md``). The PSGN-style
            baseline ignores it: its only loss is a Chamfer distance.
    """

    points_weight: float = 1.0
    prior_weight: float = 0.1
    entropy_weight: float = 0.1
    adversarial_weight: float = 30.0
    adversarial_latent: AdversarialLatent = "mean"
    adversarial_to_encoder: bool = False
    gan_kind: GanKind = "lsgan"
    gradient_penalty_weight: float = 0.0
    r1_weight: float = 0.0
    chamfer_weight: float = 0.0


@dataclass
class OptimConfig(training.OptimConfig):
    """Adam settings, shared by the generator and the critic (as in the paper); the fields of
    `pcflow.training.OptimConfig`, with the quick preset's values, and ``critic_lr``.

    The paper's: ``lr`` 2.56e-4, ``betas`` (0.9, 0.995), AMSGrad, ``weight_decay`` 1e-6, the
    learning rate times 0.25 after epoch 20, no averaging. ``ema_decay``: measured on the
    standard preset (three seeds, 0.999 from epoch 24), FlowGAN's CD 3.2% lower on validation
    and 1.3% on the test split, PSGN-style's 0.95% and 0.3%.

    Arguments:
        critic_lr: The critic's learning rate; ``None`` for ``lr``.
    """

    lr_milestones: list[int] = field(default_factory=lambda: [7])
    critic_lr: float | None = None


@dataclass
class TrainConfig:
    """The training loop.

    Arguments:
        seed: Seed of every random number generator (each process adds its rank).
        epochs: Training epochs.
        batch_size: Shapes per step and process.
        critic_warmup_epochs: Epochs of likelihood-only training before the critic starts
            (paper: 5).
        chamfer_warmup_epochs: Epochs before the Chamfer term (``loss.chamfer_weight``) starts.
        mixed_precision: Autocast the forward passes (bfloat16 on CPU, float16 with a gradient
            scaler on CUDA).
        max_consecutive_nonfinite: Steps with a non-finite loss or gradient are skipped and
            counted; this many in a row raise an error.
        checkpoint_every: Write ``last.pt`` every this many steps (and at every epoch's end).
        validate_every: Validate (metrics, ``best.pt`` and pictures) every this many epochs.
        val_batches: Validation batches per validation, their samples spread evenly over the
            categories (``None``: the whole split).
        num_pictures: Validation samples drawn in each picture.
        log_every: Write the CSV and TensorBoard logs every this many steps.
        threads: torch's intra-op threads per process; ``None`` leaves torch's default (all
            cores). The quick preset uses 1: on a shared 2-core machine, two threads next to
            one busy process ran 20 times slower than one thread.
    """

    seed: int = 0
    epochs: int = 9
    batch_size: int = 8
    critic_warmup_epochs: int = 8
    chamfer_warmup_epochs: int = 0
    mixed_precision: bool = False
    max_consecutive_nonfinite: int = 20
    checkpoint_every: int = 100
    validate_every: int = 1
    val_batches: int | None = 8
    num_pictures: int = 6
    log_every: int = 10
    threads: int | None = None


@dataclass
class EvalConfig:
    """Evaluation conventions (see ``pcflow.recipes.flowgan.evaluate``).

    The sampling defaults (``T=1, trim 0.15, spread 2``) are the setting chosen on the
    validation split for the quick preset by the rule in
    ``examples/flowgan/results/sampling/RULE.md`` (the standard preset's is trim 0.1); they
    are stored in every checkpoint's
    configuration and used by `FlowGAN.reconstruct`, validation, evaluation and the pictures
    unless told otherwise (``--trim 0 --spread 1`` samples the model itself).

    Arguments:
        num_points: Points predicted per shape and compared with as many ground-truth points
            (paper: 2,500; the quick preset uses 1,024 to keep the exact EMD fast).
        emd_method: `pcflow.metrics.earth_movers_distance` method (``"exact"`` by default).
        fscore_threshold: F-score threshold on **squared** distances (the public FlowGAN
            evaluation code: 1e-3).
        batch_size: Shapes per evaluation batch.
        max_per_category: Evaluate at most this many test samples per category (``None``:
            all).
        temperature: Scale of the flow's base noise when sampling predictions (1: the
            model's own samples); chosen on the validation split.
        trim: Fraction of low-density draws the flow drops when sampling predictions (see
            `pcflow.flows.ConditionalPointFlow.sample`; 0: the model's own samples); chosen
            on the validation split.
        spread: Draws kept per predicted point, thinned by farthest point sampling (see
            `pcflow.flows.ConditionalPointFlow.sample`; 1: the model's own samples); chosen on
            the validation split.
        draws: ``"random"`` or ``"sobol"`` base draws (see `pcflow.flows.SamplingOptions`).
    """

    num_points: int = 2500
    emd_method: EmdMethod = "auction"
    fscore_threshold: float = 1e-3
    batch_size: int = 16
    max_per_category: int | None = None
    temperature: float = 1.0
    trim: float = 0.15
    spread: int = 2
    draws: Literal["random", "sobol"] = "random"

    @property
    def sampling(self) -> SamplingOptions:
        """The `pcflow.flows.SamplingOptions` these settings give."""
        return SamplingOptions(self.temperature, self.trim, self.spread, draws=self.draws)

    def protocol(self) -> dict[str, Any]:
        """The keywords of `pcflow.metrics.evaluate_reconstruction` these settings give."""
        return {
            "num_points": self.num_points,
            "emd_method": self.emd_method,
            "fscore_threshold": self.fscore_threshold,
            "batch_size": self.batch_size,
            "max_per_category": self.max_per_category,
        }
