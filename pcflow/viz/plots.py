"""Matplotlib pictures of point clouds, optionally under the images they were made from."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["plot_point_clouds", "plot_reconstructions", "plot_sample_reconstructions"]


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


def _save(figure: Any, path: Any, dpi: int) -> Any:
    # Both plotting functions write a PNG where asked, creating its folder, and return the figure.
    if path is not None:
        path = os.fspath(path)
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(path, dpi=dpi, format="png")
    return figure


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
    # Room for the titles (up to two lines) in inches, whatever the panel size and row count.
    space = 0.45 if titles is not None else 0.1
    height = panel_size * rows * rows_per_item
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - space / height,
                           wspace=0.02, hspace=space / panel_size)  # fmt: skip
    return _save(figure, path, dpi)


def _as_camera(camera: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(camera, Mapping) or not {"intrinsics", "extrinsics"} <= set(camera):
        raise ValueError(
            f"cameras[{index}] must be a mapping with 'intrinsics' (3, 3) and 'extrinsics' "
            f"(3, 4), got {type(camera).__name__}"
        )
    intrinsics = np.asarray(torch.as_tensor(camera["intrinsics"]).cpu(), dtype=np.float64)
    extrinsics = np.asarray(torch.as_tensor(camera["extrinsics"]).cpu(), dtype=np.float64)
    if intrinsics.shape != (3, 3) or extrinsics.shape != (3, 4):
        raise ValueError(
            f"cameras[{index}] must hold intrinsics (3, 3) and extrinsics (3, 4), got "
            f"{intrinsics.shape} and {extrinsics.shape}"
        )
    return intrinsics, extrinsics


def plot_reconstructions(
    images: Sequence[Any],
    predictions: Mapping[str, Sequence[Any]] | Sequence[Any],
    truths: Sequence[Any],
    path: str | os.PathLike | None = None,
    *,
    cameras: Sequence[Any] | None = None,
    labels: Sequence[str] | None = None,
    examples_per_row: int = 2,
    panel_size: float = 1.6,
    point_size: float = 1.5,
    dpi: int = 100,
    elevation: float = 20.0,
    azimuth: float = -60.0,
) -> Any:
    """Draw single-view reconstructions: input image | prediction(s) | truth, one example each.

    With ``cameras``, every cloud is projected through its example's camera: the picture shows
    it from the input image's viewpoint, at the image's scale and position, so the prediction,
    the truth and the image line up (points coloured by depth, near is bright). Without, the
    clouds are drawn in 3D from one fixed view in a cube shared by all panels. Either way all
    clouds of the figure share one scale. Examples fill ``examples_per_row`` groups of
    columns per row, so a dozen examples make a figure the width of a docs page; column
    titles are written once, above the first row, and each example's label in its image's
    corner.

    Arguments:
        images: One RGB image per example, ``(3, H, W)`` or ``(H, W, 3)``.
        predictions: One cloud ``(N, 3)`` per example, or ``{method name: clouds}`` for one
            column per method.
        truths: One true cloud ``(M, 3)`` per example.
        path: If given, save the figure there as a PNG.
        cameras: One ``{"intrinsics": (3, 3), "extrinsics": (3, 4)}`` per example (OpenCV
            convention, world to camera; `pcflow.data.camera`), or ``None``.
        labels: One label per example (e.g. its category), or ``None``.
        examples_per_row: Examples side by side in one row of the figure.
        panel_size: Size of each panel in inches.
        point_size: Marker size.
        dpi: Resolution of the saved PNG.
        elevation: Camera elevation of the 3D view without ``cameras``, degrees.
        azimuth: Camera azimuth of the 3D view without ``cameras``, degrees.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> import torch
        >>> from pcflow.viz import plot_reconstructions
        >>> figure = plot_reconstructions(
        ...     [torch.rand(3, 32, 32)], [torch.randn(100, 3)], [torch.randn(100, 3)]
        ... )
    """
    from matplotlib.figure import Figure

    count = len(images)
    if count == 0:
        raise ValueError("images is empty: nothing to plot")
    methods = dict(predictions) if isinstance(predictions, Mapping) else {"prediction": predictions}
    for name, clouds in methods.items():
        if len(clouds) != count:
            raise ValueError(
                f"predictions {name!r} has {len(clouds)} clouds but there are {count} images"
            )
    for name, values in (("truths", truths), ("cameras", cameras), ("labels", labels)):
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries but there are {count} images")
    if (
        isinstance(examples_per_row, bool)
        or not isinstance(examples_per_row, int)
        or examples_per_row < 1
    ):
        raise ValueError(f"examples_per_row must be a positive integer, got {examples_per_row!r}")
    pictures = [_as_image(image, i) for i, image in enumerate(images)]
    columns = [*methods, "truth"]
    clouds = [
        [_as_cloud(c, i) for i, c in enumerate(methods[name])] if name in methods else None
        for name in methods
    ]
    clouds.append([_as_cloud(c, i) for i, c in enumerate(truths)])
    views = None if cameras is None else [_as_camera(c, i) for i, c in enumerate(cameras)]

    per_row = min(examples_per_row, count)
    rows = -(-count // per_row)
    width = len(columns) + 1
    figure = Figure(figsize=(panel_size * width * per_row, panel_size * rows + 0.3), dpi=dpi)
    top = 1 - 0.3 / (panel_size * rows + 0.3)
    grid = figure.add_gridspec(
        rows, width * per_row, left=0.005, right=0.995, bottom=0.005, top=top,
        wspace=0.03, hspace=0.03,
    )  # fmt: skip
    # One scale for every 3D panel: the cube around all clouds.
    stacked = np.concatenate([c for method in clouds for c in method])[:, [0, 2, 1]]
    centre = (stacked.max(axis=0) + stacked.min(axis=0)) / 2
    half = (stacked.max(axis=0) - stacked.min(axis=0)).max() / 2 * 1.02 or 1.0
    e, a = np.radians(elevation), np.radians(azimuth)
    toward_viewer = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    for example in range(count):
        row, group = divmod(example, per_row)
        first = group * width
        axis = figure.add_subplot(grid[row, first])
        axis.imshow(pictures[example], cmap="gray" if pictures[example].ndim == 2 else None)
        axis.set_xticks([])
        axis.set_yticks([])
        if labels is not None:  # inside the image: no margin to reserve, nothing clipped
            axis.text(
                0.03, 0.97, str(labels[example]), transform=axis.transAxes, fontsize=7,
                va="top", ha="left", bbox={"facecolor": "white", "alpha": 0.7, "pad": 1,
                                           "linewidth": 0},
            )  # fmt: skip
        if row == 0:
            axis.set_title("input image", fontsize=8, pad=3)
        height, width_px = pictures[example].shape[:2]
        for offset, (name, method) in enumerate(zip(columns, clouds), start=1):
            cloud = method[example]
            if views is not None:
                intrinsics, extrinsics = views[example]
                camera = cloud @ extrinsics[:, :3].T + extrinsics[:, 3]
                depth = camera[:, 2]
                projected = camera @ intrinsics.T
                uv = projected[:, :2] / np.where(
                    np.abs(projected[:, 2:]) < 1e-9, 1e-9, projected[:, 2:]
                )
                axis = figure.add_subplot(grid[row, first + offset])
                draw = np.argsort(-depth)  # far first, near on top
                axis.scatter(
                    uv[draw, 0], uv[draw, 1], c=-depth[draw], cmap="viridis", s=point_size,
                    linewidths=0,
                )  # fmt: skip
                axis.set_xlim(0, width_px)
                axis.set_ylim(height, 0)
                axis.set_aspect("equal")
                axis.set_xticks([])
                axis.set_yticks([])
            else:
                axis = figure.add_subplot(grid[row, first + offset], projection="3d")
                points = cloud[:, [0, 2, 1]].copy()
                points[:, 1] *= -1  # y-up data in matplotlib's z-up frame, right-handed
                depth = points @ toward_viewer
                draw = np.argsort(depth)
                axis.scatter(
                    points[draw, 0], points[draw, 1], points[draw, 2], c=depth[draw],
                    cmap="viridis", s=point_size, linewidths=0, depthshade=False,
                )  # fmt: skip
                c = centre * np.array([1, -1, 1])
                axis.set_xlim(c[0] - half, c[0] + half)
                axis.set_ylim(c[1] - half, c[1] + half)
                axis.set_zlim(c[2] - half, c[2] + half)
                axis.set_box_aspect((1, 1, 1), zoom=1.25)
                axis.view_init(elev=elevation, azim=azimuth)
                axis.set_axis_off()
            if row == 0:
                axis.set_title(name, fontsize=8, pad=3)
    return _save(figure, path, dpi)


def plot_sample_reconstructions(
    samples: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Sequence[Any]] | Sequence[Any],
    path: str | os.PathLike | None = None,
    **options: Any,
) -> Any:
    """Draw reconstructions of dataset samples: each sample's image | prediction(s) | points.

    The one picture of training, evaluation and the docs: `plot_reconstructions` of the
    samples' ``"image"`` and ``"points"``, seen from their ``"camera"`` when every sample has
    one (pcflow's datasets, `pcflow.data`), each labelled with its ``"category_name"``.

    Arguments:
        samples: Dataset samples (dicts with ``"image"`` ``(3, H, W)``, ``"points"``
            ``(M, 3)``, and optionally ``"camera"`` and ``"category_name"``).
        predictions: One cloud ``(N, 3)`` per sample, or ``{method name: clouds}``.
        path: If given, save the figure there as a PNG.
        **options: Further keyword arguments of `plot_reconstructions` (``examples_per_row``,
            ``point_size``, ``dpi``, ...).

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
        >>> import torch
        >>> from pcflow.viz import plot_sample_reconstructions
        >>> sample = {"image": torch.rand(3, 32, 32), "points": torch.randn(100, 3),
        ...           "category_name": "ball"}
        >>> figure = plot_sample_reconstructions([sample], [torch.randn(100, 3)])
    """

    def shared(key: str) -> list[Any] | None:
        return [s[key] for s in samples] if all(key in s for s in samples) else None

    return plot_reconstructions(
        [s["image"] for s in samples],
        predictions,
        [s["points"] for s in samples],
        path,
        cameras=shared("camera"),
        labels=shared("category_name"),
        **options,
    )
