"""``python -m pcflow.recipes.flowgan train | evaluate | reconstruct``."""

import sys

from pcflow.recipes.flowgan.cli import main

sys.exit(main())
