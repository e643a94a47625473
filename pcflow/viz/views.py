"""Interactive 3D views of point clouds: one self-contained HTML file that opens offline."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcflow.viz.plots import _as_cloud, _as_image

__all__ = ["view_point_clouds", "view_sample_reconstructions"]

GENERATOR = "pcflow.viz"
"""The ``<meta name="generator">`` of every page: pages carrying it may be overwritten."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 12px; color: #222; background: #fff; }
h1 { font-size: 16px; font-weight: 600; margin: 0 0 8px; }
.pcflow-toolbar { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center;
  font-size: 13px; margin-bottom: 8px; }
.pcflow-toolbar button { font: inherit; padding: 2px 8px; }
.pcflow-legend { display: inline-flex; gap: 4px; align-items: center; }
.pcflow-ramp { display: inline-block; width: 90px; height: 10px; background: linear-gradient(
  90deg, #440154, #482878, #3e4989, #31688e, #26828e, #1f9e89, #35b779, #6ece58, #fde725); }
.pcflow-legend-name { color: #555; }
.pcflow-step { font-variant-numeric: tabular-nums; min-width: 16em; }
.pcflow-grid { display: grid; gap: 6px; }
.pcflow-panel { margin: 0; display: flex; flex-direction: column; align-items: center;
  min-width: 0; }
.pcflow-panel figcaption { font-size: 12px; text-align: center; margin-top: 2px; }
.pcflow-canvas { border: 1px solid #ddd; cursor: grab; touch-action: none;
  box-sizing: border-box; }
.pcflow-image { object-fit: contain; image-rendering: auto; }
.pcflow-message { color: #a00; font-size: 13px; }
"""


_VIEW_DEFAULTS: dict[str, Any] = {
    "value_name": "value", "colour": "auto", "point_size": 2.0, "panel_size": 320,
    "elevation": 20.0, "azimuth": -60.0, "y_up": True,
}  # fmt: skip


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(_VIEW_DEFAULTS))
    if unknown:
        raise TypeError(
            f"unexpected option(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(_VIEW_DEFAULTS)}"
        )


def _asset(name: str) -> str:
    return resources.files("pcflow.viz").joinpath(name).read_text(encoding="utf-8")


def _quantize(frames: np.ndarray) -> dict[str, Any]:
    """16-bit positions over the frames' box: ``x = offset + q * scale`` per axis, error at most
    ``scale / 2`` (the box's side over 131070)."""
    flat = frames.reshape(-1, 3).astype(np.float64)
    low, high = flat.min(0), flat.max(0)
    scale = np.where(high > low, (high - low) / 65535.0, 1.0)
    codes = np.rint((flat - low) / scale).clip(0, 65535).astype("<u2")
    return {
        "positions": base64.b64encode(codes.tobytes()).decode("ascii"),
        "offset": low.tolist(),
        "scale": scale.tolist(),
    }


def _image_url(image: Any, index: int) -> str:
    array = _as_image(image, index)
    if array.dtype != np.uint8:
        array = np.rint(array * 255).astype(np.uint8)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_values(values: Any, index: int, count: int) -> np.ndarray:
    array = (
        values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    )
    if array.shape != (count,):
        raise ValueError(
            f"values[{index}] must have shape ({count},), one value per point of clouds[{index}], "
            f"got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"values[{index}] holds NaN or infinite values")
    return array.astype("<f4")


def _write(path: str | os.PathLike, page: str) -> None:
    """Write ``page`` to ``path``, creating its folder; a file there is replaced only when it is
    a page this module wrote (a user's other files are never overwritten)."""
    path = Path(path)
    if path.exists():
        head = path.open("rb").read(4096).decode("utf-8", errors="replace")
        if f'<meta name="generator" content="{GENERATOR}">' not in head:
            raise FileExistsError(
                f"path {str(path)!r} exists and is not a page written by {GENERATOR}: "
                "choose another path or move the file"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")


def _page(
    panels: list[dict[str, Any]],
    *,
    title: str,
    columns: int,
    value_name: str,
    values: list[np.ndarray],
    colour: str,
    point_size: float,
    panel_size: int,
    elevation: float,
    azimuth: float,
    y_up: bool,
    steps: dict[str, Any] | None = None,
) -> str:
    if colour not in ("auto", "height", "value"):
        raise ValueError(f"colour must be 'auto', 'height' or 'value', got {colour!r}")
    if colour == "value" and not values:
        raise ValueError("colour='value' needs per-point values (values=...), got none")
    if not (isinstance(point_size, int | float) and 0 < point_size <= 64):
        raise ValueError(f"point_size must be a number of pixels in (0, 64], got {point_size!r}")
    if isinstance(panel_size, bool) or not isinstance(panel_size, int) or panel_size < 64:
        raise ValueError(f"panel_size must be an integer of at least 64 pixels, got {panel_size!r}")
    value_range = None
    if values:
        # The 1st and 99th percentiles: a few stray points do not squash everyone's colours.
        stacked = np.concatenate(values).astype(np.float64)
        low, high = np.percentile(stacked, [1, 99]).tolist()
        value_range = [low, high] if high > low else [low - 0.5, low + 0.5]
    data = {
        "title": title,
        "columns": columns,
        "panels": panels,
        "valueName": value_name,
        "valueRange": value_range,
        "colour": colour,
        "pointSize": float(point_size),
        "panelSize": panel_size,
        "elevation": float(elevation),
        "azimuth": float(azimuth),
        "yUp": bool(y_up),
        "steps": steps,
    }
    # "</" cannot close the data's <script> element once escaped.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="generator" content="{GENERATOR}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # No favicon request either: the page fetches nothing.
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<div id="pcflow-root"></div>\n'
        f'<script type="application/json" id="pcflow-data">{payload}</script>\n'
        f"<script>{_asset('_vendor/three.min.js')}</script>\n"
        f"<script>{_asset('viewer.js')}</script>\n</body>\n</html>\n"
    )


def _cloud_panel(cloud: np.ndarray, title: str | None, values: np.ndarray | None) -> dict:
    panel = {"title": title, "count": int(cloud.shape[0]), **_quantize(cloud)}
    if values is not None:
        panel["values"] = base64.b64encode(values.tobytes()).decode("ascii")
    return panel


def view_point_clouds(
    clouds: Sequence[Any],
    path: str | os.PathLike | None = None,
    *,
    titles: Sequence[str] | None = None,
    images: Sequence[Any] | None = None,
    values: Sequence[Any | None] | None = None,
    value_name: str = "value",
    colour: str = "auto",
    columns: int | None = None,
    point_size: float = 2.0,
    panel_size: int = 320,
    elevation: float = 20.0,
    azimuth: float = -60.0,
    y_up: bool = True,
    title: str = "pcflow view",
) -> str:
    """An interactive 3D view of point clouds side by side, as one self-contained HTML page.

    The page holds everything it needs (three.js, vendored and inlined; the points as base64
    16-bit integers over each cloud's box, accurate to the box's side over 131070; the images
    as PNG): it opens offline from a file, an e-mail or a docs page, with no server. All panels
    share one camera, so turning, panning or zooming one (mouse drag, right drag, wheel) turns
    them all. The toolbar colours the points by height or by the per-point ``values`` (viridis
    between their 1st and 99th percentiles over all clouds; clouds without values are grey),
    sets the point size, resets the view and saves a PNG snapshot of all panels. In the page,
    ``window.pcflowViews[i].count`` is the number of points panel ``i`` draws.

    Arguments:
        clouds: Point clouds, each ``(N, 3)`` (arrays or tensors; sizes may differ).
        path: If given, write the page there (creating its folder). A file already there is
            replaced only if it is a page written by `pcflow.viz`; otherwise `FileExistsError`.
        titles: One caption per cloud, or ``None``.
        images: One image per cloud shown above it, each ``(3, H, W)``, ``(H, W, 3)`` or
            ``(H, W)`` (floats in [0, 1] or uint8); an entry may be ``None``.
        values: One ``(N,)`` array of per-point values per cloud (an entry may be ``None``),
            such as each point's log-density under a flow (`point_log_density`).
        value_name: What the values are, shown in the toolbar (e.g. ``"log-density"``).
        colour: Initial colouring: ``"height"``, ``"value"``, or ``"auto"`` (values if given).
        columns: Panels per row (default: all in one row, at most 6).
        point_size: Point size in CSS pixels.
        panel_size: Side of each square panel in CSS pixels.
        elevation: Initial camera elevation, degrees.
        azimuth: Initial camera azimuth, degrees (as in `plot_point_clouds`).
        y_up: Treat y as the vertical axis (ShapeNet and pcflow's synthetic data) rather than z.
        title: The page's title and heading.

    Returns:
        The HTML page as a string.

    Example:
        >>> import torch
        >>> from pcflow.viz import view_point_clouds
        >>> cloud = torch.randn(1000, 3)
        >>> page = view_point_clouds([cloud, cloud * 2], titles=["a", "b"],
        ...                          values=[cloud[:, 0], None], value_name="x")
        >>> page.startswith("<!DOCTYPE html>")
        True
    """
    if len(clouds) == 0:
        raise ValueError("clouds is empty: nothing to view")
    arrays = [_as_cloud(cloud, i) for i, cloud in enumerate(clouds)]
    count = len(arrays)
    for name, given in (("titles", titles), ("images", images), ("values", values)):
        if given is not None and len(given) != count:
            raise ValueError(f"{name} has {len(given)} entries but there are {count} clouds")
    checked = [
        None if values is None or v is None else _as_values(v, i, len(arrays[i]))
        for i, v in enumerate(values if values is not None else [None] * count)
    ]
    panels = []
    for i, cloud in enumerate(arrays):
        panel = _cloud_panel(cloud, None if titles is None else str(titles[i]), checked[i])
        if images is not None and images[i] is not None:
            panel["image"] = _image_url(images[i], i)
        panels.append(panel)
    page = _page(
        panels, title=title, columns=min(count, 6) if columns is None else max(1, int(columns)),
        value_name=value_name, values=[v for v in checked if v is not None], colour=colour,
        point_size=point_size, panel_size=panel_size, elevation=elevation, azimuth=azimuth,
        y_up=y_up,
    )  # fmt: skip
    if path is not None:
        _write(path, page)
    return page


def view_sample_reconstructions(
    samples: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Sequence[Any]] | Sequence[Any],
    path: str | os.PathLike | None = None,
    *,
    log_densities: Mapping[str, Sequence[Any]] | Sequence[Any] | None = None,
    title: str = "reconstructions",
    **options: Any,
) -> str:
    """An interactive gallery of reconstructions: per sample, its image | prediction(s) | truth.

    The view counterpart of `plot_sample_reconstructions`, for training's validation epochs and
    evaluation's gallery: one row per sample (labelled with its ``"category_name"`` when every
    sample has one), one camera for every panel. Predictions with log-densities start coloured
    by them (the model's certainty per point: high where it is sure of the surface, low where
    it guesses); the truth, which has none, is grey in that mode and coloured by height in the
    other.

    Arguments:
        samples: Dataset samples (dicts with ``"image"`` ``(3, H, W)``, ``"points"``
            ``(M, 3)`` and optionally ``"category_name"``).
        predictions: One cloud ``(N, 3)`` per sample, or ``{method name: clouds}``.
        path: If given, write the page there (see `view_point_clouds`).
        log_densities: Each predicted point's log-density, ``(N,)`` per cloud, in the shape of
            ``predictions`` (a method may be left out of the mapping); see `point_log_density`.
        title: The page's title and heading.
        **options: Further keyword arguments of `view_point_clouds` (``point_size``,
            ``panel_size``, ``y_up``, ...).

    Returns:
        The HTML page as a string.

    Example:
        >>> import torch
        >>> from pcflow.viz import view_sample_reconstructions
        >>> sample = {"image": torch.rand(3, 32, 32), "points": torch.randn(100, 3),
        ...           "category_name": "ball"}
        >>> prediction = torch.randn(200, 3)
        >>> page = view_sample_reconstructions([sample], {"FlowGAN": [prediction]},
        ...                                    log_densities={"FlowGAN": [-prediction.norm(dim=1)]})
    """
    if len(samples) == 0:
        raise ValueError("samples is empty: nothing to view")
    methods = dict(predictions) if isinstance(predictions, Mapping) else {"prediction": predictions}
    if log_densities is None:
        densities: dict[str, Sequence[Any]] = {}
    elif isinstance(log_densities, Mapping):
        densities = dict(log_densities)
    else:
        densities = {next(iter(methods)): log_densities}
    for name in densities:
        if name not in methods:
            raise ValueError(f"log_densities names {name!r}, which predictions lack")
    for name, clouds in {
        **methods,
        **{f"log_densities[{k!r}]": v for k, v in densities.items()},
    }.items():
        if len(clouds) != len(samples):
            raise ValueError(
                f"{name} has {len(clouds)} entries but there are {len(samples)} samples"
            )
    for key in ("image", "points"):
        for i, sample in enumerate(samples):
            if key not in sample:
                raise ValueError(f"samples[{i}] has no {key!r}")
    labelled = all("category_name" in sample for sample in samples)
    if "columns" in options:
        raise ValueError("columns is fixed by the gallery: image | predictions | truth")
    panels, values = [], []
    for i, sample in enumerate(samples):
        label = f"{sample['category_name']}: " if labelled else f"#{i}: "
        panels.append({"title": label + "image", "image": _image_url(sample["image"], i)})
        shown = [
            (f"predictions[{name!r}][{i}]", name, clouds[i], densities.get(name))
            for name, clouds in methods.items()
        ]
        shown.append((f"samples[{i}]['points']", "truth", sample["points"], None))
        for where, name, cloud, given in shown:
            try:
                array = _as_cloud(cloud, 0)
                value = None if given is None else _as_values(given[i], 0, len(array))
            except ValueError as error:  # name the argument as the caller wrote it
                message = str(error).replace("clouds[0]", where)
                raise ValueError(
                    message.replace("values[0]", f"log_densities[{name!r}][{i}]")
                ) from None
            panels.append(_cloud_panel(array, label + name, value))
            if value is not None:
                values.append(value)
    _check_options(options)
    options.setdefault("value_name", "log-density")
    page = _page(
        panels, title=title, columns=len(methods) + 2,
        values=values, **{**_VIEW_DEFAULTS, **options},
    )  # fmt: skip
    if path is not None:
        _write(path, page)
    return page
