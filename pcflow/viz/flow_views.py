"""A conditional point flow seen from inside: each point's log-density, and the flow in motion."""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from nflows.transforms import Transform
from torch import Tensor

from pcflow._checks import check_points
from pcflow.flows import ConditionalPointFlow
from pcflow.transforms.base import PointTransform
from pcflow.viz.views import _VIEW_DEFAULTS, _as_values, _check_options, _page, _quantize, _write

__all__ = ["flow_trajectory", "point_log_density", "view_flow"]

_AXES = "xyz"


def _check_flow(flow: Any) -> None:
    if not isinstance(flow, ConditionalPointFlow):
        raise TypeError(
            f"flow must be a pcflow.flows.ConditionalPointFlow, got {type(flow).__name__}"
        )


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)


def point_log_density(
    flow: ConditionalPointFlow, points: Tensor, context: Tensor | None, *, scale: float = 1.0
) -> Tensor:
    """Each point's log-density under a conditional point flow, given its shape's latent.

    ``log p(x | z) = log p_base(f(x / s) | z) + log |det J_f(x / s)| - D log s`` for the flow's
    data-to-noise map ``f`` (`ConditionalPointFlow.log_prob` with ``per_point=True``), for
    points the model draws at unit scale and the caller scales by ``s`` (FlowGAN's
    ``cloud_scale``). High where the model is sure of the surface, low where it guesses;
    evaluated without gradients, in chunks within the flow's memory budget.

    Arguments:
        flow: The flow.
        points: Points ``(B, N, D)``, at the caller's scale.
        context: Each shape's latent ``(B, C)`` (``None`` for an unconditional flow).
        scale: The factor ``s`` between the flow's points and ``points``.

    Returns:
        Log-densities ``(B, N)`` in nats, in the points' dtype.

    Example:
        >>> import torch
        >>> from pcflow.flows import dpf_flow
        >>> from pcflow.viz import point_log_density
        >>> flow = dpf_flow(context_features=8, num_layers=3, hidden_features=16)
        >>> z = torch.randn(2, 8)
        >>> point_log_density(flow, flow.sample(100, z), z).shape
        torch.Size([2, 100])
    """
    _check_flow(flow)
    scale = _check_scale(scale)
    check_points("points", points, flow.features)
    with torch.no_grad():
        values = flow.log_prob(points / scale, context, per_point=True)
    return values - flow.features * math.log(scale)


def _inverse(layer: Transform, points: Tensor, context: Tensor | None) -> Tensor:
    if isinstance(layer, PointTransform):
        return layer.inverse_points(points, context)[0]
    return layer.inverse(points, context)[0]


def flow_trajectory(
    flow: ConditionalPointFlow, num_points: int, context: Tensor | None = None
) -> Tensor:
    """Points drawn from the base distribution, then after each layer on their way to the shape.

    Sampling runs the flow's data-to-noise layers backwards: step 0 holds the base draws and
    step ``k`` the points after the inverse of the ``k``-th layer from the noise end, so the
    last step is what `ConditionalPointFlow.sample` returns for the same random state (up to
    float rounding between its fused kernel and the layers' own code). Uses torch's global
    random state; evaluated without gradients.

    Arguments:
        flow: The flow.
        num_points: Points per shape.
        context: Each shape's latent ``(B, C)`` (``None`` for an unconditional flow: one shape).

    Returns:
        Points ``(L + 1, B, num_points, D)`` for a flow of ``L`` layers.

    Example:
        >>> import torch
        >>> from pcflow.flows import dpf_flow
        >>> from pcflow.viz import flow_trajectory
        >>> flow = dpf_flow(context_features=8, num_layers=6, hidden_features=16)
        >>> flow_trajectory(flow, 100, torch.randn(2, 8)).shape
        torch.Size([7, 2, 100, 3])
    """
    _check_flow(flow)
    flow._check_sample_args(num_points, context)  # the messages `sample` gives
    with torch.no_grad():
        points = flow._distribution.sample(num_points, context)
        steps = [points]
        for layer in reversed(flow.layers):
            points = _inverse(layer, points, context)
            steps.append(points)
    return torch.stack(steps)


def _layer_label(layer: Transform) -> str:
    name = type(layer).__name__
    moved = getattr(layer, "transformed_features", None)
    given = getattr(layer, "identity_features", None)
    if moved is None or given is None:
        return name
    axes = lambda indices: ", ".join(_AXES[i] if i < 3 else str(i) for i in indices)  # noqa: E731
    return f"{name} moves {axes(moved)} given {axes(given) or 'nothing'} and the latent"


def view_flow(
    flow: ConditionalPointFlow,
    context: Tensor | None,
    path: str | os.PathLike | None = None,
    *,
    num_points: int = 2000,
    seed: int = 0,
    scale: float = 1.0,
    titles: Sequence[str] | None = None,
    every: int = 1,
    layers_per_second: float = 8.0,
    title: str = "the flow in motion",
    **options: Any,
) -> str:
    """An interactive view of a conditional point flow at work: points leave their base draws
    and travel through each coupling onto the shape, one panel per latent.

    A slider (and a play button, which moves smoothly between steps) sets how many layers the
    points have passed; the caption names the layer last applied and what it moves. Points are
    coloured by the height they end at, so each one can be followed from the noise to its
    place on the shape, or by their log-density under the flow at the end (`point_log_density`).
    All panels share one camera, as in `view_point_clouds`.

    Arguments:
        flow: The flow, e.g. `pcflow.flows.dpf_flow` or a trained model's decoder.
        context: The latents ``(B, C)`` to decode, one panel each (``None`` for an
            unconditional flow).
        path: If given, write the page there (see `view_point_clouds`).
        num_points: Points per panel.
        seed: Seed of the base draws (torch's global random state is left as it was).
        scale: Factor between the flow's points and the shown ones (FlowGAN's ``cloud_scale``).
        titles: One caption per latent, or ``None``.
        every: Keep every ``every``-th step (the first and last are always kept), for a
            smaller file from a deep flow.
        layers_per_second: Speed of the play button.
        title: The page's title and heading.
        **options: ``point_size``, ``panel_size``, ``elevation``, ``azimuth``, ``y_up`` and
            ``colour`` (``"height"`` or ``"value"``, the log-density) as in `view_point_clouds`.

    Returns:
        The HTML page as a string.

    Example:
        >>> import torch
        >>> from pcflow.flows import dpf_flow
        >>> from pcflow.viz import view_flow
        >>> flow = dpf_flow(context_features=8, num_layers=6, hidden_features=16)
        >>> page = view_flow(flow, torch.randn(2, 8), num_points=500)
    """
    _check_options(options)
    scale = _check_scale(scale)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if not (isinstance(layers_per_second, int | float) and layers_per_second > 0):
        raise ValueError(f"layers_per_second must be positive, got {layers_per_second!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trajectory = flow_trajectory(flow, num_points, context)
    shapes = trajectory.shape[1]
    if titles is not None and len(titles) != shapes:
        raise ValueError(f"titles has {len(titles)} entries but there are {shapes} latents")
    # The log-density of the shown (scaled) points.
    densities = point_log_density(flow, trajectory[-1], context) - flow.features * math.log(scale)
    layers = list(reversed(flow.layers))
    kept = sorted({*range(0, len(layers) + 1, every), len(layers)})
    labels = [
        "base draws (noise)"
        if k == 0
        else f"after layer {k} of {len(layers)}: {_layer_label(layers[k - 1])}"
        for k in kept
    ]
    frames = (trajectory[kept] * scale).double().cpu().numpy()
    if not torch.isfinite(trajectory).all():
        raise ValueError("the flow's trajectory holds NaN or infinite points (has it diverged?)")
    panels, values = [], []
    for b in range(shapes):
        value = _as_values(densities[b], b, num_points)
        values.append(value)
        caption = f"latent {b}" if titles is None else str(titles[b])
        panels.append(
            {
                "title": caption,
                "count": num_points,
                "values": base64.b64encode(value.tobytes()).decode("ascii"),
                **_quantize(frames[:, b]),
            }
        )
    settings = {**_VIEW_DEFAULTS, "value_name": "log-density at the end", "colour": "height"}
    settings.update(options)
    page = _page(
        panels, title=title, columns=min(shapes, 6), values=values,
        steps={"count": len(kept), "labels": labels, "perSecond": layers_per_second / every},
        **settings,
    )  # fmt: skip
    if path is not None:
        _write(path, page)
    return page
