"""Layering: pcflow.losses and pcflow.metrics build on pcflow.ops and never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pcflow

PACKAGE = Path(pcflow.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("package", "other"), [("losses", "metrics"), ("metrics", "losses")])
def test_no_imports_between_losses_and_metrics(package: str, other: str) -> None:
    files = sorted((PACKAGE / package).glob("*.py"))
    assert files
    for path in files:
        offending = {name for name in imported_modules(path) if name.startswith(f"pcflow.{other}")}
        assert not offending, f"{path.name} imports {offending}"


def test_assignment_helpers_live_in_ops() -> None:
    from pcflow.losses import emd as losses_emd
    from pcflow.metrics import emd as metrics_emd
    from pcflow.ops import assign, matched_distances

    assert losses_emd.assign is assign and metrics_emd.assign is assign
    assert losses_emd.matched_distances is matched_distances
