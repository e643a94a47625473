"""The package imports, reports its version and ships its type marker."""

from __future__ import annotations

import importlib
from importlib.metadata import version
from pathlib import Path

import pytest

import pcflow


def test_version_matches_metadata() -> None:
    assert pcflow.__version__ == version("pcflow")


def test_py_typed_is_shipped() -> None:
    assert (Path(pcflow.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize(
    "name",
    ["transforms", "flows", "encoders", "critics", "ops", "losses", "metrics", "data", "recipes"],
)
def test_subpackages_import(name: str) -> None:
    module = importlib.import_module(f"pcflow.{name}")
    assert module.__doc__, f"pcflow.{name} needs a module docstring"
    for public in getattr(module, "__all__", []):
        assert hasattr(module, public), f"pcflow.{name}.__all__ names missing {public}"
