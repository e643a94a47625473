"""Sphinx roles in docstrings: rendered as code by a Griffe extension, refused by an MkDocs hook.

Docstrings written for Sphinx say ``:meth:`forward_points``` or ``:mod:`pcflow.data.camera```.
mkdocstrings does not know these roles and would show them raw (``:meth:forward_points``).
`SphinxRoles` (a Griffe extension, ``plugins.mkdocstrings.handlers.python.options.extensions`` in
``mkdocs.yml``) rewrites each to the house style, the name in backticks (``~a.b.c`` becomes
``c``, as in Sphinx). `on_page_content` (an MkDocs hook, ``hooks:``) then looks for any role left
in a rendered page, in docstrings or in the Markdown pages themselves, and logs a warning for
each, so that ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from griffe import Extension, Object

__all__ = ["SphinxRoles", "find_raw_roles", "on_page_content", "rewrite_roles"]

log = logging.getLogger("mkdocs.hooks.sphinx_roles")

_ROLES = r"(?:py:)?(?:meth|mod|class|func|attr|data|obj|exc|const|ref|term|doc)"
_IN_SOURCE = re.compile(rf":{_ROLES}:`(?P<tilde>~?)(?P<target>[^`]+)`")
# Rendered: the role's text before the code span it introduced (or before a literal backtick).
_IN_HTML = re.compile(rf"(?<!<code>):{_ROLES}:(?:<code>|`)")
_PRE = re.compile(r"<pre\b.*?</pre>", re.DOTALL)


def rewrite_roles(text: str) -> str:
    """Rewrite every Sphinx role of ``text`` to the name in backticks."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if match["tilde"]:
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return _IN_SOURCE.sub(replace, text)


def find_raw_roles(html_text: str) -> list[str]:
    """The raw Sphinx roles a rendered page shows (code blocks are left out)."""
    text = _PRE.sub("", html_text)
    return [text[max(0, m.start() - 40) : m.end() + 40] for m in _IN_HTML.finditer(text)]


class SphinxRoles(Extension):
    """Rewrite the Sphinx roles of every docstring to names in backticks."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite_roles(obj.docstring.value)


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    """Warn (an error under ``--strict``) for each raw Sphinx role the page shows."""
    for context in find_raw_roles(html_text):
        log.warning("%s shows a raw Sphinx role: ...%s...", page.file.src_uri, context)
    return html_text
