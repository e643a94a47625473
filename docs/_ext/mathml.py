"""MkDocs hook: turn the LaTeX that ``pymdownx.arithmatex`` marks into MathML, at build time.

Docstrings and pages write formulas as ``$...$`` and ``$$...$$``. Instead of loading MathJax or
KaTeX from a CDN (the site must render offline, and CI checks it in a browser without network),
this hook converts each formula with ``latex2mathml`` (``pip install pcflow[docs]``); browsers
render MathML natively. A formula that does not convert is a build warning, so
``mkdocs build --strict`` fails on it. Loaded by ``mkdocs.yml`` (``hooks:``).
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

__all__ = ["on_page_content"]

log = logging.getLogger("mkdocs.hooks.mathml")

# pymdownx.arithmatex (generic mode) output: inline \(...\) in a span, display \[...\] in a div.
_FORMULA = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*'
    r"\\(?P<open>[(\[])(?P<latex>.*?)\\[)\]]"
    r"\s*</(?P=tag)>",
    re.DOTALL,
)


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    """Replace every arithmatex formula of a page's HTML with its MathML."""
    if "arithmatex" not in html_text:
        return html_text
    try:
        from latex2mathml.converter import convert
    except ImportError:  # pragma: no cover - the docs extra installs it
        log.warning("latex2mathml is not installed (pip install pcflow[docs]): formulas stay LaTeX")
        return html_text

    def replace(match: re.Match[str]) -> str:
        latex = html.unescape(match["latex"]).strip()
        display = "block" if match["open"] == "[" else "inline"
        try:
            mathml = convert(latex, display=display)
        except Exception as error:  # latex2mathml raises several kinds for unsupported input
            log.warning(f"{page.file.src_uri}: cannot convert the formula {latex!r}: {error}")
            return match.group(0)
        if display == "block":
            return f'<div class="arithmatex">{mathml}</div>'
        return f'<span class="arithmatex">{mathml}</span>'

    return _FORMULA.sub(replace, html_text)
