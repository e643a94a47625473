"""Evaluate FlowGAN checkpoints: ``pcflow-flowgan evaluate``, run from a checkout.

The program is `pcflow.recipes.flowgan.cli.evaluate`: a pip install runs it as
``pcflow-flowgan evaluate`` or ``python -m pcflow.recipes.flowgan evaluate``, and this
file runs the same program with the same flags (``--help`` lists them).
"""

from __future__ import annotations

import sys

from pcflow.recipes.flowgan.cli.evaluate import *  # noqa: F403 (the program's names, for scripts and tests)
from pcflow.recipes.flowgan.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
