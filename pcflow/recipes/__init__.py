"""Recipes: published methods composed from pcflow's parts.

- `pcflow.recipes.flowgan`: FlowGAN (Wei, Vosselman, Yang, BMVC 2022), a point cloud of any
  size from a single image (``from pcflow.recipes import flowgan``).
"""

from __future__ import annotations

from pcflow.recipes import flowgan

__all__ = ["flowgan"]
