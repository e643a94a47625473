"""Griffe extension: read Google-style ``Example:`` sections as ``Examples:`` sections.

pcflow's house style (like zuko's) heads doctests with ``Example:``. Griffe's Google parser only
knows the plural, and would render the singular as an admonition whose ``>>>`` lines Markdown
turns into nested quotes. Renaming the header makes them rendered as Python console code.
Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

__all__ = ["ExampleSections"]

_HEADER = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(Extension):
    """Rename every ``Example:`` section header of a docstring to ``Examples:``."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADER.sub(r"\g<indent>Examples:", obj.docstring.value)
