"""The README (also the PyPI page) opens as zuko's and nflows' do: install, code, documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_docs_snippets import extract_python_blocks

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_install_example_and_docs_link() -> None:
    first_section = README.index("\n## ")
    install = README.index("pip install pcflow")
    code = README.index("```python")
    docs = README.index("https://pcflow.readthedocs.io")
    checkout = README.index("./scripts/demo.sh")
    assert first_section < install < code < docs < checkout, "install, example, docs, checkout"
    blocks = extract_python_blocks(README, ROOT / "README.md")
    assert len(blocks) >= 1 and len(blocks[0].code.strip().splitlines()) <= 12


@pytest.mark.slow  # a 63-layer flow, backward and 10,000 samples: seconds
def test_readme_example_runs() -> None:
    for block in extract_python_blocks(README, ROOT / "README.md"):
        namespace: dict[str, object] = {"__name__": "__readme__"}
        exec(compile(block.code, "README.md", "exec"), namespace)
    samples = namespace["samples"]
    assert samples.shape == (2, 10_000, 3)


def test_license_file_and_spdx_expression() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, re.MULTILINE)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.MULTILINE)
