"""Typed run configurations: nested dataclasses with YAML in and out, presets and overrides."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from pcflow.utils import CheckpointError

__all__ = ["RunConfig", "build", "load_yaml"]

_MAX_YAML_NODES = 100_000
"""Refuse YAML whose aliases expand to more nodes than this (a real config has a few hundred)."""


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely, refusing aliases that expand past 100,000 nodes (counting stops there).

    Arguments:
        text: The YAML text.
        source: What it is, for error messages (a file name, "override 'a.b=...'").

    Raises:
        ValueError: For text that is not YAML, tags that safe loading refuses, recursive or
            exploding aliases; naming ``source``.
    """
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
                f"{source}: its YAML aliases expand to more than {_MAX_YAML_NODES:,} nodes, the "
                "most accepted; write the values out instead of nesting aliases"
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
        for item in node.value:
            size += _expanded_size(item, sizes, open_nodes, source)
            if size > _MAX_YAML_NODES:  # stop counting: the answer is already no
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, sizes, open_nodes, source)
            size += _expanded_size(value, sizes, open_nodes, source)
            if size > _MAX_YAML_NODES:
                break
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


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
    hints = _field_types(cls)
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


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError:
        # A class whose annotations name types its module cannot see (defined in a function
        # or a doctest): a section field's type is its default factory, a dataclass.
        namespace = vars(typing).copy()
        namespace.update(vars(sys.modules.get(cls.__module__, typing)))
        types_ = {}
        for item in dataclasses.fields(cls):
            factory = item.default_factory
            if dataclasses.is_dataclass(factory):
                types_[item.name] = factory
            elif isinstance(item.type, str):
                types_[item.name] = eval(item.type, namespace)
            else:
                types_[item.name] = item.type
        return types_


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


class RunConfig:
    """Base of a method's configuration: a dataclass of section dataclasses, typed loading.

    A subclass is a ``@dataclass`` whose fields are sections (dataclasses of settings, with
    ``Literal`` types for enumerated settings). It gets presets (the class attribute
    ``PRESETS``, ``{name: overrides of the defaults}``), YAML and dict loading where an
    unknown key, a value of the wrong type or out of its choices is an error naming the key,
    ``section.key=value`` overrides, and range checks: ``POSITIVE`` and ``NON_NEGATIVE`` list
    dotted keys (``None`` passes), and `check` adds the method's own.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass
        ... class Optim:
        ...     lr: float = 1e-3
        >>> @dataclass
        ... class MyConfig(RunConfig):
        ...     optim: Optim = field(default_factory=Optim)
        ...     POSITIVE = ("optim.lr",)
        >>> MyConfig().with_overrides(["optim.lr=0.01"]).optim.lr
        0.01
        >>> MyConfig.from_yaml("optim:\\n  lr: -1\\n")
        Traceback (most recent call last):
        ...
        ValueError: config key 'optim.lr' must be positive, got -1.0
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    """Named presets: overrides of the defaults."""
    POSITIVE: ClassVar[tuple[str, ...]] = ()
    """Dotted keys whose values must be positive (or ``None``)."""
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ()
    """Dotted keys whose values must be zero or positive (or ``None``)."""
    FREE_FORM: ClassVar[tuple[str, ...]] = ()
    """Dotted keys of free-form mappings, where overrides may set any key."""

    @classmethod
    def preset(cls: type[C], name: str) -> C:
        """Return a named preset (see ``PRESETS``)."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls.from_dict(cls.PRESETS[name])

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build a config from nested dicts; keys left out keep the defaults.

        Raises:
            KeyError: For an unknown key, naming it with its dotted path.
            TypeError: For a value of the wrong type, naming the key.
            ValueError: For a value out of range or not among a setting's choices, naming
                the key and the values allowed.
        """
        return build(cls, values).validate()

    @classmethod
    def from_yaml(cls: type[C], source: str | Path) -> C:
        """Load a config from a YAML file path or a YAML string (over the defaults).

        Raises:
            FileNotFoundError: If the named file does not exist.
            ValueError: For text that is not YAML, tags that safe loading refuses (such as
                ``!!python/...``), aliases that expand to more than 100,000 nodes, and the
                errors of `from_dict`.
        """
        return cls().with_yaml(source)

    def with_yaml(self: C, source: str | Path) -> C:
        """Return a copy with the settings of a YAML file path or YAML string applied over
        this config's (nested sections are merged key by key); errors as `from_yaml`'s."""
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
            raise TypeError(f"a config must be a YAML mapping, got {type(values).__name__}")
        return type(self).from_dict(_merge(self.to_dict(), values))

    def validate(self: C) -> C:
        """Check the settings' types, choices and ranges (done on every load); return ``self``.

        Raises:
            ValueError: Naming the first key out of range or not among its choices, with the
                values allowed.
        """
        # A config built or edited in code is checked as a loaded one.
        build(type(self), self.to_dict())
        for key in self.POSITIVE:
            value = self._value(key)
            if value is not None and not value > 0:
                raise ValueError(f"config key {key!r} must be positive, got {value!r}")
        for key in self.NON_NEGATIVE:
            value = self._value(key)
            if value is not None and not value >= 0:
                raise ValueError(f"config key {key!r} must be zero or positive, got {value!r}")
        self.check()
        return self

    def check(self) -> None:
        """The method's own range checks, beyond ``POSITIVE`` and ``NON_NEGATIVE``; raise
        ``ValueError`` naming the key."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as nested plain dicts (YAML- and checkpoint-safe)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Return the config as YAML, and write it to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    def with_overrides(self: C, overrides: list[str] | tuple[str, ...]) -> C:
        """Return a copy with ``"section.key=value"`` overrides applied (values parsed as YAML).

        Raises:
            KeyError: For an unknown key, or a key that names a whole section.
            ValueError: For an override without ``=``, and the errors of `from_dict`.
        """
        values = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"an override must look like section.key=value, got {item!r}")
            key, raw = item.split("=", 1)
            parts = key.strip().split(".")
            # Inside a free-form mapping any key may be set.
            free_depth = next(
                (
                    len(free.split("."))
                    for free in self.FREE_FORM
                    if parts[: len(free.split("."))] == free.split(".") and len(parts) > 2
                ),
                None,
            )
            free_form = free_depth is not None
            node = values
            for depth, part in enumerate(parts[:-1]):
                if free_form and depth >= free_depth:
                    node = node.setdefault(part, {})
                    continue
                if not isinstance(node, dict) or part not in node:
                    raise KeyError(
                        f"unknown config key {'.'.join(parts[: depth + 1])!r} in override {item!r}"
                    )
                node = node[part]
            if not isinstance(node, dict) or (parts[-1] not in node and not free_form):
                raise KeyError(f"unknown config key {key.strip()!r} in override {item!r}")
            if isinstance(node.get(parts[-1]), dict) and key.strip() not in self.FREE_FORM:
                raise KeyError(f"override {item!r} names a section; give section.key=value")
            node[parts[-1]] = load_yaml(raw, f"override {item!r}")
        return type(self).from_dict(values)

    def check_resumable(self, saved: dict[str, Any], sections: tuple[str, ...], path: Any) -> None:
        """Refuse to resume a run whose saved config (``saved``, a checkpoint's) differs from
        this one in any of ``sections``.

        Raises:
            CheckpointError: Naming ``path``, the section and the settings that
                differ.
        """
        before = type(self).from_dict(saved)
        for section in sections:
            old = dataclasses.asdict(getattr(before, section))
            new = dataclasses.asdict(getattr(self, section))
            if old != new:
                changes = ", ".join(
                    f"{k}: {old[k]!r} in the checkpoint, {new.get(k)!r} now"
                    for k in old
                    if old[k] != new.get(k)
                )
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was trained with another {section!r} section "
                    f"({changes}); resume with the same configuration"
                )

    def _value(self, key: str) -> Any:
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node


C = TypeVar("C", bound=RunConfig)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
