"""Run every ```python block of the documentation, so the docs cannot drift from the code.

Each page's blocks run in order in one namespace (a tutorial builds on its earlier blocks), in a
temporary working directory. A block preceded by the comment ``<!-- no-test -->`` (for example a
multi-hour training run) is only compiled, never run. Keep runnable blocks small: the whole file
stays under about 40 seconds on 2 cores.
"""

from __future__ import annotations

import re
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
NO_TEST = "<!-- no-test -->"
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its code, and whether the docs allow running it."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    runnable: bool

    @property
    def where(self) -> str:
        """``docs/page.md:line``, for failure messages."""
        path = self.path.relative_to(DOCS.parent) if DOCS.parent in self.path.parents else self.path
        return f"{path}:{self.line}"


def extract_python_blocks(text: str, path: Path = Path("<string>")) -> list[Block]:
    """Return the ```python (or ```py, ```python3) fenced blocks of a Markdown text, in order.

    A block is not runnable when the last non-blank line before its opening fence is
    ``<!-- no-test -->``. Blocks indented under an admonition or a list item are dedented.
    """
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        language = match["info"].strip().split(" ")[0].lstrip(".{").lower() if match["info"] else ""
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and close.match(lines[j]) is None:
            j += 1
        if language in {"python", "py", "python3"}:
            body = [
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[i + 1 : j]
            ]
            previous = next(
                (lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), ""
            )
            blocks.append(
                Block(
                    path=path,
                    line=i + 1,
                    code=textwrap.dedent("\n".join(body)) + "\n",
                    runnable=previous != NO_TEST,
                )
            )
        i = j + 1
    return blocks


_PRINTS_TRUE = re.compile(r"^(?P<indent>[ \t]*)print\((?P<expr>.*)\)[ \t]*#[ \t]*True\b.*$")


def check_printed_truths(code: str) -> str:
    """Make ``print(expr)  # True`` lines also assert that ``expr`` is true.

    The page shows the output a reader should see; the test then fails when the code stops
    printing it. Each line stays one line, so tracebacks point at the page's own lines.
    """
    lines = []
    for line in code.splitlines():
        match = _PRINTS_TRUE.match(line)
        if match:
            expr = match["expr"]
            line = (
                f"{match['indent']}_shown = ({expr}); print(_shown); "
                f"assert _shown == True, {f'the page says print({expr}) shows True'!r}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if extract_python_blocks(p.read_text(), p))


def test_extractor_finds_blocks_and_honours_the_marker() -> None:
    text = textwrap.dedent(
        """\
        # Title

        ```python
        x = 1
        ```

        <!-- no-test -->

        ```python
        train_for_hours()
        ```

        ```bash
        echo not python
        ```

        !!! note
            ````py
            y = x + 1
            ````
        """
    )
    blocks = extract_python_blocks(text)
    assert [(b.line, b.code, b.runnable) for b in blocks] == [
        (3, "x = 1\n", True),
        (9, "train_for_hours()\n", False),
        (18, "y = x + 1\n", True),
    ]


def test_printed_truths_are_checked() -> None:
    good = check_printed_truths("x = 1\nprint(x == 1)  # True\nprint(x)  # 1\n")
    assert good.count("\n") == 3
    assert good.splitlines()[2] == "print(x)  # 1"
    exec(good, {})  # x == 1 holds: runs
    bad = check_printed_truths("x = 1\nprint(x == 2)  # True: claimed\n")
    with pytest.raises(AssertionError, match="shows True"):
        exec(bad, {})


def test_docs_have_python_blocks() -> None:
    # Guards the collection below: a broken extractor would otherwise silently test nothing.
    assert len(_pages()) >= 1


@pytest.mark.slow  # a page runs models and small training loops: seconds each
@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile every block of ``page`` and run the runnable ones in order, in one namespace."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    blocks = extract_python_blocks(page.read_text(), page)
    compiled = []
    for block in blocks:
        try:
            # Blank lines up to the fence: tracebacks then give the page's own line numbers.
            code = "\n" * block.line + check_printed_truths(block.code)
            compiled.append(compile(code, str(block.path), "exec"))
        except SyntaxError as error:
            pytest.fail(f"{block.where}: the block does not compile: {error}")
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block, code in zip(blocks, compiled):
        if not block.runnable:
            continue
        try:
            exec(code, namespace)
        except Exception:
            message = f"{block.where}: the documented code fails:\n{block.code}\n"
            pytest.fail(message + traceback.format_exc(), pytrace=False)
        finally:
            import matplotlib.pyplot as plt

            plt.close("all")
