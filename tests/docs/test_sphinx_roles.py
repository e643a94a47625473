"""Sphinx roles never show raw on the site: docstrings' roles are rewritten, leftovers fail."""

from __future__ import annotations

import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import yaml

import pcflow

ROOT = Path(__file__).resolve().parents[2]


def _extension():
    path = ROOT / "docs" / "_ext" / "sphinx_roles.py"
    spec = importlib.util.spec_from_file_location("sphinx_roles", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roles_are_rewritten_to_names_in_backticks() -> None:
    rewrite = _extension().rewrite_roles
    assert rewrite("Override :meth:`forward_points` and :py:func:`~a.b.c`.") == (
        "Override `forward_points` and `c`."
    )
    assert rewrite("see :mod:`pcflow.data.camera`") == "see `pcflow.data.camera`"
    assert rewrite("no role: a `name`, a time 10:30") == "no role: a `name`, a time 10:30"


def test_raw_roles_in_a_rendered_page_are_found() -> None:
    find = _extension().find_raw_roles
    assert len(find("<p>Override :meth:<code>forward_points</code> and :class:`X`.</p>")) == 2
    assert find("<p>Override <code>forward_points</code>, at 10:30.</p>") == []
    assert find("<pre><code>:meth:`x` in a code block</code></pre>") == []
    assert find("<p>write <code>:meth:`x`</code> as <code>`x`</code></p>") == []


def test_mkdocs_registers_the_rewrite_and_the_check() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert "docs/_ext/sphinx_roles.py" in config["hooks"]
    python = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict))
    extensions = python["handlers"]["python"]["options"]["extensions"]
    assert "docs/_ext/sphinx_roles.py:SphinxRoles" in extensions


def test_every_role_in_pcflow_docstrings_is_one_the_rewrite_handles() -> None:
    rewrite = _extension().rewrite_roles
    leftover = re.compile(r":(?:py:)?[a-z]+:`")
    problems = []
    for info in pkgutil.walk_packages(pcflow.__path__, "pcflow."):
        module = importlib.import_module(info.name)
        objects = [module]
        for _, value in inspect.getmembers(module, callable):
            if getattr(value, "__module__", "") == info.name:  # pcflow's own, not imports
                objects.append(value)
                if inspect.isclass(value):
                    objects += [v for v in vars(value).values() if inspect.isfunction(v)]
        for obj in objects:
            if leftover.search(rewrite(inspect.getdoc(obj) or "")):
                problems.append(f"{info.name}: {getattr(obj, '__qualname__', obj)}")
    assert not problems, problems


def test_api_pages_follow_the_source_order_and_flows_is_split() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    python = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict))
    options = python["handlers"]["python"]["options"]
    # Grouping by category puts constants (DPF_MASKS) before the classes they serve.
    assert options["members_order"] == "source" and options["group_by_category"] is False
    flows = (ROOT / "docs" / "api" / "flows.md").read_text()
    assert "::: pcflow.flows.fused" not in flows and "::: pcflow.flows.reversible" not in flows
    for page in ("flows-fused.md", "flows-reversible.md"):
        assert f"api/{page}" in str(config["nav"])
