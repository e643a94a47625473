"""Shared command-line plumbing of the FlowGAN example programs."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from PIL.Image import DecompressionBombError

from pcflow.recipes.flowgan import PRESETS, FlowGANConfig
from pcflow.recipes.flowgan.config import _load_yaml
from pcflow.utils import CheckpointError

__all__ = [
    "add_config_arguments",
    "check_output_folder",
    "command_line_program",
    "resolve_config",
    "user_errors",
]

# What bad input raises: a missing or unreadable file, a full or read-only disk, a corrupt
# checkpoint, a setting or a file the library refuses with a message that names it.
_USER_ERRORS = (
    CheckpointError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    yaml.YAMLError,
    DecompressionBombError,  # an image in a dataset too large to open safely
)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Answer bad input with one line, ``error: ...``, and exit status 1, not a traceback.

    Set ``PCFLOW_TRACEBACK=1`` to see the traceback instead.
    """
    try:
        yield
    except _USER_ERRORS as error:
        if os.environ.get("PCFLOW_TRACEBACK"):
            raise
        raise SystemExit(f"error: {_describe(error)}") from None


def _describe(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(str(error).split()) or type(error).__name__


def command_line_program(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
    """Decorate a program's ``main(argv)`` with `user_errors`."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        with user_errors():
            return main(argv)

    return run


def check_output_folder(path: Path) -> None:
    """Create ``path`` and write a file there now, so that a read-only or missing output
    folder stops the program before any data loads, not hours later at the first checkpoint."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise SystemExit(
            f"error: cannot write to the output folder {str(path)!r}: {error.strerror or error}"
        ) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--config``, ``--set`` and ``--data``."""
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="named settings (default: quick)"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML file of settings, applied over the preset"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set train.epochs=5 (repeatable; values are YAML)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="'synthetic' (the built-in dataset, generated on first use) or a ShapeNet path",
    )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_config(args: argparse.Namespace, base: FlowGANConfig | None = None) -> FlowGANConfig:
    """The configuration: ``base`` (or the preset), the YAML file over it, then ``--set``."""
    if base is None:
        values = FlowGANConfig.preset(args.preset or "quick").to_dict()
    else:
        values = base.to_dict()
    if args.config is not None:
        if not args.config.is_file():
            raise SystemExit(f"error: config file {str(args.config)!r} does not exist")
        try:
            loaded = _load_yaml(args.config.read_text(), str(args.config)) or {}
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        if not isinstance(loaded, dict):
            raise SystemExit(f"error: {args.config} must hold a YAML mapping")
        values = _merge(values, loaded)
    try:
        config = FlowGANConfig.from_dict(values).with_overrides(args.overrides)
        if args.data is not None:
            config.data.source = args.data if args.data == "synthetic" else os.fspath(args.data)
        return config
    except (KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SystemExit(f"error: {message}") from None
