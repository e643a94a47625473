"""Pictures of point clouds."""

from __future__ import annotations

from pcflow.viz.plots import plot_point_clouds, plot_reconstructions, plot_sample_reconstructions
from pcflow.viz.reconstructions import draw_reconstructions, seeded_reconstruction

__all__ = [
    "draw_reconstructions",
    "plot_point_clouds",
    "plot_reconstructions",
    "plot_sample_reconstructions",
    "seeded_reconstruction",
]
