"""FlowGAN's configuration: typed, nested dataclasses with YAML in and out, and named presets."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
class DataConfig:
    """Where the (image, point cloud) pairs come from and how they are shaped.

    Arguments:
        source: ``"synthetic"`` for pcflow's built-in dataset (generated under ``root`` on first
            use), or the path of a ShapeNet root holding the 3D-R2N2 renderings and the
            point clouds (`pcflow.data.ShapeNetR2N2`; name a separate point-cloud folder or
            HDF5 file with ``options: {pointcloud_root: ...}``).
        root: Cache directory of the synthetic dataset.
        categories: Category names to train and evaluate on; ``None`` for all.
        num_points: Points per training cloud (the encoder's input and, separately sampled,
            the likelihood target). The paper uses 2,500.
        num_workers: DataLoader worker processes (0: load in the training process).
        synthetic: Fields of `pcflow.data.SyntheticConfig` (categories, objects per category,
            views, image size, ...) for the built-in dataset; empty for its defaults.
        options: Extra keyword arguments for the dataset class; passed through unchanged.
    """

    source: str = "synthetic"
    root: str = ".pcflow_cache/synthetic"
    categories: list[str] | None = None
    num_points: int = 512
    num_workers: int = 0
    synthetic: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


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
        coupling: Coupling kind passed to `pcflow.flows.dpf_flow`.
        base: The flow's base distribution: ``"normal"`` (standard normal over points) or
            ``"freevar"`` (the public configuration's: zero mean, a per-shape scale from a
            linear layer of ``z``, `pcflow.flows.FreeVariancePointNormal`).
        memory_efficient: Recompute the flow's activations in backward instead of storing
            them (bounded memory, more time).
        point_features: Width of the PointNet feature that feeds the posterior head (512).
        point_hidden_features: PointNet's per-point widths before it (64, 128, 256).
        image_arch: Image encoder architecture: ``"resnet18"`` (paper, trained from scratch,
            torchvision's layout), ``"small"`` (`pcflow.encoders.SmallResNet`, the CPU
            presets': a quick-preset step spent 333 ms of about 550 ms in ResNet18's forward
            and backward, 47 ms with the small one) or ``"small_gn"`` (the same with GroupNorm).
        image_features: Width of the image feature that feeds the image head (512).
        image_channels: 4 feeds grayscale plus RGB as in the paper; 3 feeds RGB.
        image_size: Images are resized to ``image_size x image_size`` (paper: 224).
        cloud_scale: Clouds are divided by this for training and multiplied back for output
            and evaluation (paper: 2.0, with a base distribution whose variance the latent
            sets; pcflow's flows have a standard normal base, and the quick preset's 0.5 gives
            the training clouds about unit spread, which its short training needs).
        adversarial: Train with the cross-modal critic; ``False`` is the flow-only ablation.
        critic_point_features: The critic's PointNet feature width (128).
        critic_image_features: The critic's image feature width (128).
        critic_image_arch: The critic's image encoder, as ``image_arch``.
        critic_hidden_features: The critic's fusion MLP widths (128, 64, 32, 16).
        psgn_points: Points regressed by the PSGN-style baseline; ``None`` for
            ``eval.num_points``.
    """

    decoder: str = "flow"
    latent_features: int = 128
    num_layers: int = 15
    hidden_features: int = 64
    coupling: str = "affine"
    base: str = "normal"
    memory_efficient: bool = False
    point_features: int = 256
    point_hidden_features: list[int] = field(default_factory=lambda: [64, 128, 256])
    image_arch: str = "small"
    image_features: int = 256
    image_channels: int = 4
    image_size: int = 64
    cloud_scale: float = 0.5
    adversarial: bool = True
    critic_point_features: int = 128
    critic_image_features: int = 128
    critic_image_arch: str = "small"
    critic_hidden_features: list[int] = field(default_factory=lambda: [128, 64, 32, 16])
    psgn_points: int | None = None


@dataclass
class LossConfig:
    """Weights of the generator's loss terms and the GAN variant.

    The per-shape generator loss is ``points_weight * NLL(points | z) + prior_weight *
    NLL(z | image) - entropy_weight * H(q(z | points))`` with ``z`` drawn from the PointNet
    posterior, plus ``adversarial_weight`` times the GAN generator loss once the critic is on.

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
    """

    points_weight: float = 1.0
    prior_weight: float = 0.1
    entropy_weight: float = 0.1
    adversarial_weight: float = 30.0
    adversarial_latent: str = "mean"
    adversarial_to_encoder: bool = False
    gan_kind: str = "lsgan"
    gradient_penalty_weight: float = 0.0
    r1_weight: float = 0.0


@dataclass
class OptimConfig:
    """Adam settings, shared by the generator and the critic (as in the paper).

    Arguments:
        lr: Initial learning rate (paper: 2.56e-4).
        betas: Adam's betas (paper: 0.9, 0.995).
        amsgrad: Use AMSGrad (paper: yes).
        weight_decay: L2 weight decay (paper: 1e-6).
        lr_milestones: Epochs at which the learning rate is multiplied by ``lr_gamma``
            (paper: 2.56e-4 for 20 epochs, then 6.4e-5, i.e. milestone 20 and gamma 0.25).
        lr_gamma: Multiplier at each milestone.
        critic_lr: The critic's learning rate; ``None`` for ``lr``.
        grad_clip_norm: Clip each optimiser's gradient norm to this; ``None`` for no clipping.
    """

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.995])
    amsgrad: bool = True
    weight_decay: float = 1e-6
    lr_milestones: list[int] = field(default_factory=lambda: [8])
    lr_gamma: float = 0.25
    critic_lr: float | None = None
    grad_clip_norm: float | None = 100.0


@dataclass
class TrainConfig:
    """The training loop.

    Arguments:
        seed: Seed of every random number generator (each process adds its rank).
        epochs: Training epochs.
        batch_size: Shapes per step and process.
        critic_warmup_epochs: Epochs of likelihood-only training before the critic starts
            (paper: 5).
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
    epochs: int = 10
    batch_size: int = 16
    critic_warmup_epochs: int = 9
    mixed_precision: bool = False
    max_consecutive_nonfinite: int = 20
    checkpoint_every: int = 100
    validate_every: int = 1
    val_batches: int | None = 4
    num_pictures: int = 6
    log_every: int = 10
    threads: int | None = 1


@dataclass
class EvalConfig:
    """Evaluation conventions (see ``pcflow.recipes.flowgan.evaluate``).

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
    """

    num_points: int = 1024
    emd_method: str = "exact"
    fscore_threshold: float = 1e-3
    batch_size: int = 16
    max_per_category: int | None = None
    temperature: float = 1.0


_FREE_FORM = ("options", "synthetic")


@dataclass
class FlowGANConfig:
    """Everything that defines a FlowGAN run; the defaults are the ``"quick"`` preset.

    Build one from a preset, a YAML file or a dict, and override single keys with dotted names.
    Unknown keys and values of the wrong type are errors that name the key.

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

    # ------------------------------------------------------------------ construction
    @classmethod
    def preset(cls, name: str) -> FlowGANConfig:
        """Return a named preset: ``"quick"``, ``"paper"`` or ``"tiny"`` (see `PRESETS`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict(PRESETS[name])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FlowGANConfig:
        """Build a config from nested dicts; keys left out keep the quick preset's defaults.

        Raises:
            KeyError: For an unknown key, naming it with its dotted path.
            TypeError: For a value of the wrong type, naming the key.
            ValueError: For a value out of range or not among a setting's choices, naming
                the key and the values allowed.
        """
        return _build(cls, values, "").validate()

    @classmethod
    def from_yaml(cls, source: str | Path) -> FlowGANConfig:
        """Load a config from a YAML file path or a YAML string.

        Raises:
            FileNotFoundError: If the named file does not exist.
            ValueError: For text that is not YAML, tags that safe loading refuses (such as
                ``!!python/...``), aliases that expand to more than 100,000 nodes, and the
                errors of `from_dict`.
        """
        text = source
        if isinstance(source, Path) or (
            isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
        ):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"config file {str(path)!r} does not exist")
            text = path.read_text()
        values = _load_yaml(text, str(source) if text is not source else "the config") or {}
        if not isinstance(values, dict):
            raise TypeError(f"a FlowGAN config must be a YAML mapping, got {type(values).__name__}")
        return cls.from_dict(values)

    def validate(self) -> FlowGANConfig:
        """Check the settings' ranges and choices (done on every load); return ``self``.

        Raises:
            ValueError: Naming the first key out of range or not among its choices, with the
                values allowed.
        """
        _validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the config as nested plain dicts (YAML- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Return the config as YAML, and write it to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> FlowGANConfig:
        """Return a copy with ``"section.key=value"`` overrides applied (values parsed as YAML).

        Example:
            >>> FlowGANConfig().with_overrides(["optim.betas=[0.5, 0.9]"]).optim.betas
            [0.5, 0.9]
        """
        values = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"an override must look like section.key=value, got {item!r}")
            key, raw = item.split("=", 1)
            parts = key.strip().split(".")
            # data.options and data.synthetic are free-form mappings: any key may be set there.
            free_form = len(parts) >= 3 and parts[0] == "data" and parts[1] in _FREE_FORM
            node = values
            for depth, part in enumerate(parts[:-1]):
                if free_form and depth >= 2:
                    node = node.setdefault(part, {})
                    continue
                if not isinstance(node, dict) or part not in node:
                    raise KeyError(
                        f"unknown config key {'.'.join(parts[: depth + 1])!r} in override {item!r}"
                    )
                node = node[part]
            if not isinstance(node, dict) or (parts[-1] not in node and not free_form):
                raise KeyError(f"unknown config key {key.strip()!r} in override {item!r}")
            if isinstance(node.get(parts[-1]), dict) and parts[-1] not in _FREE_FORM:
                raise KeyError(f"override {item!r} names a section; give section.key=value")
            node[parts[-1]] = _load_yaml(raw, f"override {item!r}")
        return FlowGANConfig.from_dict(values)


_MAX_YAML_NODES = 100_000
"""Refuse YAML whose aliases expand to more nodes than this (a real config has a few hundred)."""


def _load_yaml(text: str, source: str) -> Any:
    # yaml.safe_load shares aliased nodes, but to_dict/asdict copies them: nested aliases
    # ("billion laughs") expand exponentially there. Count the expanded size first.
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as error:
            raise ValueError(f"{source} is not valid YAML: {_one_line(error)}") from None
        if node is None:
            return None
        size = _expanded_size(node, {}, set(), source)
        if size > _MAX_YAML_NODES:
            raise ValueError(
                f"{source}: its YAML aliases expand to {size:,} nodes (at most "
                f"{_MAX_YAML_NODES:,} are accepted); write the values out instead of nesting "
                "aliases"
            )
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as error:  # e.g. a !!python tag, which safe loading refuses
            raise ValueError(f"{source} is not valid for pcflow: {_one_line(error)}") from None
    finally:
        loader.dispose()


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _expanded_size(
    node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], source: str
) -> int:
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ValueError(f"{source}: a YAML alias refers to a node that contains it (recursive)")
    open_nodes.add(id(node))
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes, open_nodes, source) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, sizes, open_nodes, source)
            size += _expanded_size(value, sizes, open_nodes, source)
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


_CHOICES = {
    "model.decoder": ("flow", "psgn"),
    "model.coupling": ("affine", "spline"),
    "model.image_arch": ("resnet18", "small", "small_gn"),
    "model.critic_image_arch": ("resnet18", "small", "small_gn"),
    "model.base": ("normal", "freevar"),
    "model.image_channels": (3, 4),
    "loss.adversarial_latent": ("mean", "sample"),
    "loss.gan_kind": ("lsgan", "nonsaturating", "hinge", "wasserstein"),
    "eval.emd_method": ("exact", "auction", "sinkhorn"),
}
_POSITIVE = (
    "data.num_points",
    "model.latent_features",
    "model.num_layers",
    "model.hidden_features",
    "model.point_features",
    "model.image_features",
    "model.image_size",
    "model.cloud_scale",
    "model.critic_point_features",
    "model.critic_image_features",
    "model.psgn_points",
    "optim.lr",
    "optim.critic_lr",
    "optim.grad_clip_norm",
    "train.epochs",
    "train.batch_size",
    "train.max_consecutive_nonfinite",
    "train.checkpoint_every",
    "train.validate_every",
    "train.val_batches",
    "train.log_every",
    "train.threads",
    "eval.num_points",
    "eval.fscore_threshold",
    "eval.batch_size",
    "eval.max_per_category",
)
_NON_NEGATIVE = (
    "data.num_workers",
    "loss.points_weight",
    "loss.prior_weight",
    "loss.entropy_weight",
    "loss.adversarial_weight",
    "loss.gradient_penalty_weight",
    "loss.r1_weight",
    "optim.weight_decay",
    "train.critic_warmup_epochs",
    "train.num_pictures",
)


def _validate(config: FlowGANConfig) -> None:
    # Checked when the config loads, so a typo fails now rather than hours into training.
    def value(key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(config, section), name)

    for key, allowed in _CHOICES.items():
        if value(key) not in allowed:
            raise ValueError(
                f"config key {key!r} must be one of {', '.join(map(repr, allowed))}; "
                f"got {value(key)!r}"
            )
    for key in _POSITIVE:
        if value(key) is not None and not value(key) > 0:
            raise ValueError(f"config key {key!r} must be positive, got {value(key)!r}")
    for key in _NON_NEGATIVE:
        if not value(key) >= 0:
            raise ValueError(f"config key {key!r} must be zero or positive, got {value(key)!r}")
    widths = {
        "model.point_hidden_features": config.model.point_hidden_features,
        "model.critic_hidden_features": config.model.critic_hidden_features,
        "optim.lr_milestones": config.optim.lr_milestones,
    }
    for key, items in widths.items():
        if any(item < 1 for item in items):
            raise ValueError(f"config key {key!r} must hold positive integers, got {items!r}")
    if len(config.optim.betas) != 2 or not all(0 <= beta < 1 for beta in config.optim.betas):
        raise ValueError(
            f"config key 'optim.betas' must be two numbers in [0, 1), got {config.optim.betas!r}"
        )
    if not config.optim.lr_gamma > 0:
        raise ValueError(
            f"config key 'optim.lr_gamma' must be positive, got {config.optim.lr_gamma!r}"
        )


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        where = f"section {prefix[:-1]!r}" if prefix else "the config"
        raise TypeError(f"{where} must be a mapping, got {type(values).__name__}: {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise KeyError(
                f"unknown config key {prefix + str(key)!r}; "
                f"known keys{' in ' + repr(prefix[:-1]) if prefix else ''}: {sorted(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except (TypeError, KeyError) as error:
                errors.append(str(error))
        raise TypeError(f"config key {key!r}: {value!r} matches none of {hint}")
    if hint is Any:
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise TypeError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"config key {key!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"config key {key!r} has an unsupported type {hint}")  # pragma: no cover


PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: the built-in synthetic data, small networks, minutes on a laptop.
    "quick": {},
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
            "checkpoint_every": 2,
            "val_batches": 1,
            "num_pictures": 2,
            "log_every": 1,
        },
        "eval": {"num_points": 64, "batch_size": 4, "max_per_category": 2},
    },
}
"""Named presets, as overrides of the quick defaults: ``"quick"``, ``"paper"`` and ``"tiny"``."""
