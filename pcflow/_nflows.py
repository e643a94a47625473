"""Import nflows without matplotlib: its MADE module imports ``pyplot`` and never uses it.

``nflows.nn.nde.made`` begins with ``from matplotlib import pyplot as plt`` and never reads
``plt``, yet every ``import nflows.transforms`` or ``nflows.distributions`` executes it, which
costs about a second (matplotlib, its font cache) before pcflow has drawn anything. pcflow
installs `DeferPyplotFinder` once, from ``pcflow/__init__.py``: when ``nflows.nn.nde.made`` is
first imported and matplotlib is not loaded yet, the module runs with a stand-in for
``matplotlib.pyplot`` that imports the real one on first attribute access. Nothing else
changes: the stand-in is removed from ``sys.modules`` as soon as the module has run, so any
later ``import matplotlib`` is the real one, and ``made.plt.figure`` still works.

``install`` also silences one warning that users cannot act on: nflows' ``LULinear`` and
``QRLinear`` call ``torch.triangular_solve``, which torch reports as deprecated. The filter
matches that message raised from those two nflows modules only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = ["DeferPyplotFinder", "install"]

MODULE = "nflows.nn.nde.made"


class _DeferredPyplot(types.ModuleType):
    """``matplotlib.pyplot``, imported on first attribute access."""

    def __getattr__(self, name: str) -> object:
        return getattr(importlib.import_module("matplotlib.pyplot"), name)


class _DeferPyplotLoader(importlib.abc.Loader):
    """Runs ``nflows.nn.nde.made`` with ``matplotlib.pyplot`` deferred."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        if "matplotlib" in sys.modules:  # already paid for: nothing to save
            self.loader.exec_module(module)
            return
        pyplot = _DeferredPyplot("matplotlib.pyplot")
        package = types.ModuleType("matplotlib")
        package.pyplot = pyplot  # type: ignore[attr-defined]
        stand_ins = {"matplotlib": package, "matplotlib.pyplot": pyplot}
        sys.modules.update(stand_ins)
        try:
            self.loader.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]

    def __getattr__(self, name: str) -> object:  # get_code, get_source, ... of the real loader
        return getattr(self.loader, name)


class DeferPyplotFinder(importlib.abc.MetaPathFinder):
    """Finds ``nflows.nn.nde.made`` as the path finder would, with `_DeferPyplotLoader`."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _DeferPyplotLoader(spec.loader)
        return spec


def install() -> None:
    """Put `DeferPyplotFinder` first on ``sys.meta_path`` (once) and filter nflows'
    ``torch.triangular_solve`` deprecation warning."""
    warnings.filterwarnings(
        "ignore",
        message=r"torch\.triangular_solve is deprecated",
        category=UserWarning,
        module=r"nflows\.transforms\.(lu|qr)$",
    )
    if MODULE in sys.modules:
        return
    if not any(isinstance(finder, DeferPyplotFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, DeferPyplotFinder())
