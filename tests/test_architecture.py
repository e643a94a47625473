"""The layers of pcflow, bottom up, and the direction of their imports (docs/architecture.md).

Each subpackage may import only the packages listed for it here; nothing in the library imports
a recipe. A new import across layers must be added here on purpose, with the architecture page.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pcflow

PACKAGE = Path(pcflow.__file__).parent

ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "io": set(),
    "ops": {"_checks", "_native", "utils"},
    "transforms": {"_checks", "utils"},
    "flows": {"_checks", "_native", "ops", "transforms", "utils"},
    "encoders": {"_checks", "utils"},
    "critics": {"_checks", "encoders", "utils"},
    "losses": {"_checks", "ops", "utils"},
    "metrics": {"_checks", "ops", "data", "utils"},
    "data": {"_checks", "utils"},
    "viz": {"_checks", "flows", "transforms", "io", "utils"},
    "models": {"_checks", "encoders", "flows", "utils"},
    "training": {"utils"},
}
"""Subpackage -> the pcflow packages it may import (recipes may import any of the library;
``utils`` and the private ``_checks`` and ``_native`` serve every layer)."""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            names = (
                [f"{module}.{alias.name}" for alias in node.names]
                if module == "pcflow"
                else [module]
            )
        else:
            continue
        found.update(name.split(".")[1] for name in names if name.startswith("pcflow."))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below(package: str) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files, f"pcflow.{package} has no modules"
    for path in files:
        offending = _imports(path) - ALLOWED[package] - {package}
        assert not offending, f"{path.relative_to(PACKAGE)} imports pcflow.{sorted(offending)}"


def test_every_subpackage_has_a_place() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages - {"recipes"} == set(ALLOWED)


def test_nothing_in_the_library_imports_a_recipe() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "recipes" in path.relative_to(PACKAGE).parts:
            continue
        assert "recipes" not in _imports(path), f"{path.relative_to(PACKAGE)} imports a recipe"
