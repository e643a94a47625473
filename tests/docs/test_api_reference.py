"""The API reference covers every public name: each subpackage has a page, each name a docstring.

The site renders ``::: pcflow.<subpackage>`` from docstrings, so a public class or function
without a docstring, or with an argument its docstring does not mention, would appear on the site
undocumented. ``mkdocs build --strict`` catches the opposite (a documented argument that does
not exist) and broken cross-references.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest
import yaml

import pcflow

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = sorted(
    info.name for info in pkgutil.iter_modules(pcflow.__path__) if not info.name.startswith("_")
)


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def _mkdocs_config() -> dict:
    # mkdocs.yml may hold !!python tags in other projects; this one is plain YAML.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _public_objects() -> list[tuple[str, object]]:
    found = []
    for name in SUBPACKAGES:
        module = importlib.import_module(f"pcflow.{name}")
        for attribute in getattr(module, "__all__", []):
            found.append((f"pcflow.{name}.{attribute}", getattr(module, attribute)))
    return found


def _documented_callables() -> list[tuple[str, object]]:
    """Public functions and classes, and the public methods pcflow's classes define."""
    found = []
    for qualified, obj in _public_objects():
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("pcflow"):
            continue
        found.append((qualified, obj))
        if inspect.isclass(obj):
            for method_name, method in vars(obj).items():
                if method_name.startswith("_") or not inspect.isfunction(method):
                    continue
                found.append((f"{qualified}.{method_name}", method))
    return found


def test_every_subpackage_has_an_api_page_in_the_navigation() -> None:
    nav = _nav_pages(_mkdocs_config()["nav"])
    problems = []
    for name in SUBPACKAGES:
        page = ROOT / "docs" / "api" / f"{name}.md"
        if not page.is_file():
            problems.append(f"docs/api/{name}.md is missing")
        elif f"::: pcflow.{name}" not in page.read_text():
            problems.append(f"docs/api/{name}.md does not render '::: pcflow.{name}'")
        else:
            # mkdocstrings does not expand submodules: each exported one needs its own block.
            module = importlib.import_module(f"pcflow.{name}")
            for attribute in getattr(module, "__all__", []):
                if inspect.ismodule(getattr(module, attribute)):
                    block = f"::: pcflow.{name}.{attribute}"
                    if block not in page.read_text():
                        problems.append(f"docs/api/{name}.md does not render '{block}'")
        if f"api/{name}.md" not in nav:
            problems.append(f"api/{name}.md is not in mkdocs.yml's nav")
    assert not problems, "\n".join(problems)


def test_every_public_name_has_a_docstring() -> None:
    missing = [
        qualified
        for qualified, obj in _documented_callables()
        if not (inspect.getdoc(obj) or "").strip()
    ]
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def _undocumented_arguments(obj: object) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        doc += "\n" + (inspect.getdoc(obj.__init__) or "")
    names = [
        name
        for name, parameter in signature.parameters.items()
        if name not in {"self", "cls"}
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    return [name for name in names if not re.search(rf"\b{re.escape(name)}\b", doc)]


def test_every_argument_of_a_public_function_or_class_is_documented() -> None:
    # Top-level names only: a method's one-line docstring may rely on its class's.
    problems = []
    for qualified, obj in _documented_callables():
        if qualified.count(".") > 2:
            continue
        if inspect.isclass(obj) and obj.__init__ is object.__init__:
            continue
        if (
            inspect.isclass(obj)
            and "__init__" not in vars(obj)
            and not hasattr(obj, "__dataclass_fields__")
        ):
            continue  # the constructor is inherited (from nflows or torch), documented there
        undocumented = _undocumented_arguments(obj)
        if undocumented:
            problems.append(f"{qualified}: {', '.join(undocumented)}")
    assert not problems, "arguments missing from the docstrings:\n" + "\n".join(problems)


_BLOCK = re.compile(r"^::: (?P<path>[\w.]+)\n(?P<options>(?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def _rendered_objects() -> set[int]:
    """Identities of the objects the API pages render: each block's module ``__all__``, or the
    block's ``members:`` list when it has one."""
    rendered = set()
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for block in _BLOCK.finditer(page.read_text() + "\n"):
            module = importlib.import_module(block["path"])
            options = yaml.safe_load(textwrap.dedent(block["options"])) or {}
            members = (options.get("options") or {}).get("members")
            names = members if isinstance(members, list) else getattr(module, "__all__", [])
            rendered |= {id(getattr(module, name)) for name in names if hasattr(module, name)}
    return rendered


def test_every_public_name_of_every_public_module_is_on_an_api_page() -> None:
    """A name in a public module's ``__all__`` is rendered by some ``:::`` block: re-exported by
    its subpackage (``::: pcflow.<subpackage>``) or listed on the page with ``members:``."""
    rendered = _rendered_objects()
    missing = []
    for package in SUBPACKAGES:
        module = importlib.import_module(f"pcflow.{package}")
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), f"pcflow.{package}."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            submodule = importlib.import_module(info.name)
            for name in getattr(submodule, "__all__", []):
                value = getattr(submodule, name)
                if not inspect.ismodule(value) and id(value) not in rendered:
                    missing.append(f"{info.name}.{name} (add it to docs/api/{package}.md)")
    assert not missing, "public names that no API page renders:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_declares_its_public_names(name: str) -> None:
    module = importlib.import_module(f"pcflow.{name}")
    assert (module.__doc__ or "").strip(), f"pcflow.{name} has no module docstring"
    exported = getattr(module, "__all__", None)
    assert exported, f"pcflow.{name} has no __all__ (its page would render nothing)"
    assert all(hasattr(module, attribute) for attribute in exported), exported
