"""Train FlowGAN: ``pcflow-flowgan train``, run from a checkout.

The program is `pcflow.recipes.flowgan.cli.train`: a pip install runs it as
``pcflow-flowgan train`` or ``python -m pcflow.recipes.flowgan train``, and this
file runs the same program with the same flags (``--help`` lists them).
"""

from __future__ import annotations

import sys

from pcflow.recipes.flowgan.cli.train import *  # noqa: F403 (the program's names, for scripts and tests)
from pcflow.recipes.flowgan.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
