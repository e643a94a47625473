"""Typed loading of FlowGAN's configuration: safe YAML, coercion from the dataclass types
(``Literal`` settings checked against their values), and the settings' ranges."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

import yaml

__all__ = ["build", "check_ranges", "load_yaml"]

_MAX_YAML_NODES = 100_000
"""Refuse YAML whose aliases expand to more nodes than this (a real config has a few hundred)."""


def load_yaml(text: str, source: str) -> Any:
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


_POSITIVE = (
    "data.num_points",
    "data.late_num_points",
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
    "eval.temperature",
)
_NON_NEGATIVE = (
    "data.num_workers",
    "data.late_from_epoch",
    "loss.points_weight",
    "loss.prior_weight",
    "loss.entropy_weight",
    "loss.adversarial_weight",
    "loss.gradient_penalty_weight",
    "loss.r1_weight",
    "loss.chamfer_weight",
    "optim.weight_decay",
    "optim.ema_from_epoch",
    "train.critic_warmup_epochs",
    "train.chamfer_warmup_epochs",
    "train.num_pictures",
)


def check_ranges(config: Any) -> None:
    """Check the settings that must be positive, non-negative or within bounds; checked when
    the config loads, so that a typo fails now rather than hours into training.

    Raises:
        ValueError: Naming the first key out of range, with the values allowed.
    """

    def value(key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(config, section), name)

    for key in _POSITIVE:
        if value(key) is not None and not value(key) > 0:
            raise ValueError(f"config key {key!r} must be positive, got {value(key)!r}")
    for key in _NON_NEGATIVE:
        if not value(key) >= 0:
            raise ValueError(f"config key {key!r} must be zero or positive, got {value(key)!r}")
    for key in (
        "model.point_hidden_features",
        "model.critic_hidden_features",
        "optim.lr_milestones",
    ):
        if any(item < 1 for item in value(key)):
            raise ValueError(f"config key {key!r} must hold positive integers, got {value(key)!r}")
    if len(config.optim.betas) != 2 or not all(0 <= beta < 1 for beta in config.optim.betas):
        raise ValueError(
            f"config key 'optim.betas' must be two numbers in [0, 1), got {config.optim.betas!r}"
        )
    if not config.optim.lr_gamma > 0:
        raise ValueError(
            f"config key 'optim.lr_gamma' must be positive, got {config.optim.lr_gamma!r}"
        )
    decay = config.optim.ema_decay
    if decay is not None and not 0 < decay < 1:
        raise ValueError(f"config key 'optim.ema_decay' must be in (0, 1) or null, got {decay!r}")
    if not math.isfinite(config.eval.temperature):
        raise ValueError(
            f"config key 'eval.temperature' must be finite, got {config.eval.temperature!r}"
        )
    if not 0 <= config.eval.trim < 1:
        raise ValueError(f"config key 'eval.trim' must be in [0, 1), got {config.eval.trim!r}")
    if config.eval.spread < 1:
        raise ValueError(f"config key 'eval.spread' must be at least 1, got {config.eval.spread!r}")


def build(cls: type, values: Any, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from nested dicts, each value coerced to its field's type.

    Raises:
        KeyError: For an unknown key, naming it with its dotted path.
        TypeError: For a value of the wrong type, naming the key.
        ValueError: For a ``Literal`` setting given another value, naming the key and listing
            the values allowed.
    """
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


_PLAIN = {bool: "true or false", int: "an integer", str: "a string"}
"""Plain setting types, and how an error names them."""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except (TypeError, KeyError):
                pass
        raise TypeError(f"config key {key!r}: {value!r} matches none of {hint}")
    if hint is Any:
        return value
    if origin is Literal:
        # bool is an int: true must not pass for 1.
        if isinstance(value, bool) or value not in args:
            raise ValueError(
                f"config key {key!r} must be one of {', '.join(map(repr, args))}; got {value!r}"
            )
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
    if hint in _PLAIN:
        # bool is a subclass of int: true must not pass for 1, nor 1 for true.
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise TypeError(f"config key {key!r} must be {_PLAIN[hint]}, got {value!r}")
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
    raise TypeError(f"config key {key!r} has an unsupported type {hint}")  # pragma: no cover
