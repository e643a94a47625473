"""FlowGAN's programs: ``pcflow-flowgan train | evaluate | reconstruct`` (``python -m
pcflow.recipes.flowgan ...``), also run from a checkout as ``examples/flowgan/<program>.py``."""

from __future__ import annotations

import importlib
import sys

__all__ = ["PROGRAMS", "main"]

PROGRAMS = {
    "train": "train FlowGAN (or its ablation, or the PSGN-style baseline) from a preset or config",
    "evaluate": "score checkpoints on a split: CD, EMD, F-score per category, and the diagnosis",
    "reconstruct": "a point cloud of any size from one image file (PLY and a picture)",
}
"""The programs, and one line on each."""


def main(argv: list[str] | None = None) -> int:
    """``pcflow-flowgan PROGRAM [ARGS]``: run one of `PROGRAMS` with its arguments."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in PROGRAMS:
        lines = "\n".join(f"  {name:<12} {text}" for name, text in PROGRAMS.items())
        usage = f"usage: pcflow-flowgan PROGRAM [ARGS] (PROGRAM --help for its flags)\n\n{lines}"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown program {argv[0]!r}\n\n{usage}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if argv else 2
    program = importlib.import_module(f"pcflow.recipes.flowgan.cli.{argv[0]}")
    return program.main(argv[1:])
