"""Optional dependencies, imported where a function first needs them, with the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["has_module", "import_optional"]


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (a dotted name imports its
    parent package to look: pass a top-level name, e.g. ``"scipy"``, to import nothing).

    Example:
        >>> has_module("importlib"), has_module("no_such_package_here")
        (True, False)
    """
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def import_optional(name: str, extra: str | None, feature: str) -> ModuleType:
    """Import ``name``, or raise ``ImportError`` saying how to install it.

    Arguments:
        name: The module to import, e.g. ``"scipy.spatial"``.
        extra: The extra of pcflow that installs it, e.g. ``"fast"``; ``None`` for a package
            pcflow requires (missing only from an install without dependencies).
        feature: What needs it, for the message, e.g. ``"the exact EMD"``.

    Example:
        >>> import_optional("json", None, "a test").__name__
        'json'
        >>> import_optional("no_such_package_here", None, "the exact EMD")
        Traceback (most recent call last):
        ...
        ImportError: the exact EMD needs no_such_package_here, which is not installed: pip install no_such_package_here
    """  # noqa: E501
    try:
        return importlib.import_module(name)
    except ImportError as error:
        package = name.split(".")[0]
        how = package if extra is None else f"'pcflow[{extra}]'"
        raise ImportError(
            f"{feature} needs {package}, which is not installed: pip install {how}"
        ) from error
