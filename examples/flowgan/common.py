"""Shared command-line plumbing of the FlowGAN example programs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from pcflow.recipes.flowgan import PRESETS, FlowGANConfig

__all__ = ["add_config_arguments", "resolve_config"]


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
        loaded = yaml.safe_load(args.config.read_text()) or {}
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
