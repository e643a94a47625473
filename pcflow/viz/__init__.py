"""Pictures of point clouds."""

from __future__ import annotations

from pcflow.viz.plots import plot_point_clouds, plot_reconstructions, plot_sample_reconstructions

__all__ = ["plot_point_clouds", "plot_reconstructions", "plot_sample_reconstructions"]
