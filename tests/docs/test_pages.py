"""Facts the pages state agree with the project and with each other: extras, versions, timings."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from setuptools.config.pyprojecttoml import load_file  # tomllib is Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_file(ROOT / "pyproject.toml")["project"]
INDEX = (ROOT / "docs" / "index.md").read_text()
EXAMPLES_README = (ROOT / "examples" / "flowgan" / "README.md").read_text()


def test_extras_table_lists_what_each_extra_installs() -> None:
    rows = re.findall(r"^\| `pcflow\[(\w+)\]` \| ([^|]+) \|", INDEX, re.MULTILINE)
    assert rows, "docs/index.md has no extras table"
    core = {Requirement(r).name.lower() for r in PROJECT["dependencies"]}
    for extra, listed in rows:
        if extra in ("docs", "dev"):  # the table names their main tools only
            continue
        shown = {name.strip().lower() for name in listed.split(",")}
        declared = {Requirement(r).name.lower() for r in PROJECT["optional-dependencies"][extra]}
        assert shown == declared, f"pcflow[{extra}]: the table says {shown}, pyproject {declared}"
        assert not shown & core, f"pcflow[{extra}] lists core dependencies {shown & core}"


def test_quick_preset_timings_agree() -> None:
    # The README's timing table ends with today's code; every page states that wall time.
    section = EXAMPLES_README.split("## How long the demo takes", 1)
    assert len(section) == 2, "examples/flowgan/README.md no longer states the demo's wall time"
    row = r"^\| .*today's code\) \| \*\*(\d+) s\*\* \| \*\*(\d+) s\*\*"
    rows = re.findall(row, section[1], re.M)
    assert len(rows) == 1, "the timing table has no row for today's code"
    training, whole = (int(value) for value in rows[0])
    assert training < whole
    expected = f"{whole / 60:.1f} minutes"
    pages = {
        "docs/index.md": INDEX,
        "docs/tutorials/flowgan.md": (ROOT / "docs" / "tutorials" / "flowgan.md").read_text(),
        "examples/flowgan/README.md": EXAMPLES_README,
    }
    for name, text in pages.items():
        flat = " ".join(text.split())
        assert "half an hour" not in flat, f"{name} still says 'half an hour'"
        assert expected in flat, f"{name} should state the measured {expected}"


def test_pages_speak_of_the_project_not_of_issues() -> None:
    pages = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    pages.append(ROOT / "examples" / "flowgan" / "README.md")
    for page in pages:
        flat = " ".join(page.read_text().split())
        assert not re.search(r"\bthe issue\b|\bissue \d+", flat, re.IGNORECASE), page


def test_version_is_shown_and_cited_as_the_package_declares() -> None:
    path = ROOT / "docs" / "_ext" / "project_facts.py"
    spec = importlib.util.spec_from_file_location("project_facts", path)
    facts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(facts)
    assert facts.project_version() == PROJECT["version"]
    assert facts.on_config({})["copyright"] == f"pcflow {PROJECT['version']} · MIT license"
    citing = (ROOT / "docs" / "citing.md").read_text()
    assert f"version = {{{PROJECT['version']}}}" in citing
    assert f"## {PROJECT['version']}" in (ROOT / "docs" / "changelog.md").read_text()


def test_navigation_keeps_contributor_pages_out_of_the_top_level() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = config["nav"]
    top = [next(iter(item)) if isinstance(item, dict) else item for item in nav]
    assert "Writing these docs" not in top
    about = next(item["About"] for item in nav if isinstance(item, dict) and "About" in item)
    pages = [next(iter(entry.values())) for entry in about]
    assert pages == ["changelog.md", "citing.md"]
    contributing = next(
        item["Contributing"] for item in nav if isinstance(item, dict) and "Contributing" in item
    )
    assert [next(iter(entry.values())) for entry in contributing] == ["writing-docs.md"]
    assert top[-1] == "Contributing"  # after everything a user reads
    assert "docs/_ext/project_facts.py" in config["hooks"]
