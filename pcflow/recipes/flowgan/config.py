"""FlowGAN's configuration: typed, nested dataclasses with YAML in and out, and named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcflow.recipes.flowgan.presets import PRESETS
from pcflow.recipes.flowgan.sections import (
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from pcflow.recipes.flowgan.typed import build, check_ranges, load_yaml

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
        return build(cls, values).validate()

    @classmethod
    def from_yaml(cls, source: str | Path) -> FlowGANConfig:
        """Load a config from a YAML file path or a YAML string (over the defaults).

        Raises:
            FileNotFoundError: If the named file does not exist.
            ValueError: For text that is not YAML, tags that safe loading refuses (such as
                ``!!python/...``), aliases that expand to more than 100,000 nodes, and the
                errors of `from_dict`.
        """
        return cls().with_yaml(source)

    def with_yaml(self, source: str | Path) -> FlowGANConfig:
        """Return a copy with the settings of a YAML file path or YAML string applied over
        this config's (nested sections are merged key by key); errors as `from_yaml`'s.

        Example:
            >>> config = FlowGANConfig.preset("tiny").with_yaml("train:\n  epochs: 5\n")
            >>> config.train.epochs, config.train.batch_size
            (5, 4)
        """
        text = source
        if isinstance(source, Path) or (
            isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
        ):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"config file {str(path)!r} does not exist")
            text = path.read_text()
        values = load_yaml(text, str(source) if text is not source else "the config") or {}
        if not isinstance(values, dict):
            raise TypeError(f"a FlowGAN config must be a YAML mapping, got {type(values).__name__}")
        return FlowGANConfig.from_dict(_merge(self.to_dict(), values))

    def validate(self) -> FlowGANConfig:
        """Check the settings' ranges and choices (done on every load); return ``self``.

        Raises:
            ValueError: Naming the first key out of range or not among its choices, with the
                values allowed.
        """
        # A config built or edited in code is checked as a loaded one: types and choices
        # (from the dataclass types), then ranges.
        build(FlowGANConfig, self.to_dict())
        check_ranges(self)
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
            node[parts[-1]] = load_yaml(raw, f"override {item!r}")
        return FlowGANConfig.from_dict(values)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
