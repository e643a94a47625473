"""Matplotlib pictures of point clouds, optionally under the images they were made from."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["plot_point_clouds"]


def _as_cloud(cloud: Any, index: int) -> np.ndarray:
    array = cloud.detach().cpu().numpy() if isinstance(cloud, torch.Tensor) else np.asarray(cloud)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"clouds[{index}] must have shape (N, 3), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"clouds[{index}] is empty (N = 0)")
    if not np.isfinite(array).all():
        raise ValueError(f"clouds[{index}] holds NaN or infinite values")
    return array.astype(np.float64)


def _as_image(image: Any, index: int) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] in (1, 3, 4):
        # Ambiguous (e.g. 3 x 3 x 3): tensors are channels-first, arrays channels-last.
        if isinstance(image, torch.Tensor):
            array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"images[{index}] must be (C, H, W) or (H, W, C) with C in (1, 3, 4), or (H, W); "
            f"got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        return array
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def plot_point_clouds(
    clouds: Sequence[Any],
    titles: Sequence[str] | None = None,
    images: Sequence[Any] | None = None,
    path: str | os.PathLike | None = None,
    *,
    columns: int | None = None,
    point_size: float = 2.0,
    elevation: float = 20.0,
    azimuth: float = -60.0,
    y_up: bool = True,
    panel_size: float = 2.6,
    zoom: float = 1.3,
    dpi: int = 100,
) -> Any:
    """Draw point clouds as 3D scatter plots coloured by depth, with equal axes.

    Every panel shares the same cube of axis limits (the clouds' largest extent), so sizes compare
    across panels. Points are coloured by their depth along the viewing direction (near is
    bright) and drawn far to near. Uses matplotlib's Agg backend: no display needed.

    Arguments:
        clouds: Point clouds, each ``(N, 3)`` (arrays or tensors; sizes may differ).
        titles: One title per cloud, or ``None``.
        images: One image per cloud drawn above it, each ``(3, H, W)``, ``(4, H, W)``,
            ``(H, W, 3)`` or ``(H, W)`` (floats in [0, 1] or uint8); an entry may be ``None``.
        path: If given, save the figure there as a PNG.
        columns: Panels per row (default: all in one row, at most 8).
        point_size: Marker size.
        elevation: Camera elevation of the 3D view, degrees.
        azimuth: Camera azimuth of the 3D view, degrees.
        y_up: Treat y as the vertical axis (ShapeNet and pcflow's synthetic data) rather than z.
        panel_size: Size of each panel in inches.
        zoom: Magnification of the 3D panels (matplotlib leaves wide margins around them).
        dpi: Resolution of the saved PNG.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> import torch
        >>> from pcflow.viz import plot_point_clouds
        >>> figure = plot_point_clouds([torch.randn(100, 3)], titles=["noise"])
    """
    from matplotlib.figure import Figure

    if len(clouds) == 0:
        raise ValueError("clouds is empty: nothing to plot")
    arrays = [_as_cloud(cloud, i) for i, cloud in enumerate(clouds)]
    count = len(arrays)
    if titles is not None and len(titles) != count:
        raise ValueError(f"titles has {len(titles)} entries but there are {count} clouds")
    if images is not None and len(images) != count:
        raise ValueError(f"images has {len(images)} entries but there are {count} clouds")
    pictures = (
        [None if image is None else _as_image(image, i) for i, image in enumerate(images)]
        if images is not None
        else None
    )
    columns = min(count, 8) if columns is None else max(1, int(columns))
    rows = -(-count // columns)
    rows_per_item = 2 if pictures is not None else 1
    figure = Figure(figsize=(panel_size * columns, panel_size * rows * rows_per_item), dpi=dpi)
    # Fix the plotting frame: matplotlib's 3D axes are z-up, so swap y and z for y-up data.
    order = [0, 2, 1] if y_up else [0, 1, 2]
    stacked = np.concatenate(arrays)[:, order]
    centre = (stacked.max(axis=0) + stacked.min(axis=0)) / 2
    half = (stacked.max(axis=0) - stacked.min(axis=0)).max() / 2 * 1.05 or 1.0
    e, a = np.radians(elevation), np.radians(azimuth)
    toward_viewer = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    for i, cloud in enumerate(arrays):
        row, column = divmod(i, columns)
        if pictures is not None:
            axis = figure.add_subplot(rows * 2, columns, 2 * row * columns + column + 1)
            if pictures[i] is not None:
                axis.imshow(pictures[i], cmap="gray" if pictures[i].ndim == 2 else None)
            axis.set_axis_off()
            position = (2 * row + 1) * columns + column + 1
        else:
            position = row * columns + column + 1
        axis = figure.add_subplot(rows * rows_per_item, columns, position, projection="3d")
        points = cloud[:, order]
        if y_up:
            points[:, 1] *= -1  # keep a right-handed frame after the swap
        depth = points @ toward_viewer
        draw = np.argsort(depth)
        axis.scatter(
            points[draw, 0],
            points[draw, 1],
            points[draw, 2],
            c=depth[draw],
            cmap="viridis",
            s=point_size,
            linewidths=0,
            depthshade=False,
        )
        c = centre * np.array([1, -1 if y_up else 1, 1])
        axis.set_xlim(c[0] - half, c[0] + half)
        axis.set_ylim(c[1] - half, c[1] + half)
        axis.set_zlim(c[2] - half, c[2] + half)
        axis.set_box_aspect((1, 1, 1), zoom=zoom)
        axis.view_init(elev=elevation, azim=azimuth)
        axis.set_axis_off()
        if titles is not None:
            axis.set_title(str(titles[i]), fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.02, hspace=0.05)
    if path is not None:
        path = os.fspath(path)
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")
    return figure
