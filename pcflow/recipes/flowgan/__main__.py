"""``python -m pcflow.recipes.flowgan train | evaluate | reconstruct``."""

from pcflow.recipes.flowgan.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
