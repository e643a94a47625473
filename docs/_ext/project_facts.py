"""MkDocs hook: show pcflow's version and license in the footer of every page.

The version is read from ``pyproject.toml`` (the one source of truth) when the site is built, so
the site cannot show another version than the package it documents. Loaded by ``mkdocs.yml``
(``hooks:``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["on_config", "project_version"]

_ROOT = Path(__file__).resolve().parents[2]


def project_version(pyproject: Path = _ROOT / "pyproject.toml") -> str:
    """The ``version`` of ``[project]`` in ``pyproject.toml``."""
    match = re.search(r'^version = "([^"]+)"$', pyproject.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f'{pyproject} has no version = "..." line')
    return match[1]


def on_config(config: Any, **kwargs: Any) -> Any:
    """Put ``pcflow <version> · MIT license`` in the footer."""
    config["copyright"] = f"pcflow {project_version()} · MIT license"
    return config
