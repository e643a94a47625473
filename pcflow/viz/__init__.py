"""Pictures of point clouds, interactive 3D views, and a conditional point flow seen from inside."""

from __future__ import annotations

from pcflow.viz.flow_views import flow_trajectory, point_log_density, view_flow
from pcflow.viz.plots import plot_point_clouds, plot_reconstructions, plot_sample_reconstructions
from pcflow.viz.reconstructions import (
    draw_reconstructions,
    seeded_reconstruction,
    view_reconstructions,
)
from pcflow.viz.views import view_point_clouds, view_sample_reconstructions

__all__ = [
    "draw_reconstructions",
    "flow_trajectory",
    "plot_point_clouds",
    "plot_reconstructions",
    "plot_sample_reconstructions",
    "point_log_density",
    "seeded_reconstruction",
    "view_flow",
    "view_point_clouds",
    "view_reconstructions",
    "view_sample_reconstructions",
]
