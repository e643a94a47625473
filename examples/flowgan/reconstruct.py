"""Reconstruct a point cloud from one image: ``pcflow-flowgan reconstruct``, run from a checkout.

The program is `pcflow.recipes.flowgan.cli.reconstruct`: a pip install runs it as
``pcflow-flowgan reconstruct`` or ``python -m pcflow.recipes.flowgan reconstruct``, and this
file runs the same program with the same flags (``--help`` lists them).
"""

from __future__ import annotations

import sys

from pcflow.recipes.flowgan.cli.reconstruct import *  # noqa: F403 (the program's names, for scripts and tests)
from pcflow.recipes.flowgan.cli.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
