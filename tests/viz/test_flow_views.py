"""Per-point log-densities against a float64 autograd reference, and the flow's trajectory."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from torch.autograd.functional import jacobian

from pcflow.flows import dpf_flow
from pcflow.viz import flow_trajectory, point_log_density, view_flow

EPS32 = torch.finfo(torch.float32).eps


def page_data(page: str) -> dict:
    found = re.search(
        r'<script type="application/json" id="pcflow-data">(.*?)</script>', page, re.S
    )
    return json.loads(found.group(1))


def small_flow(base: str = "normal") -> torch.nn.Module:
    torch.manual_seed(0)
    flow = dpf_flow(context_features=4, num_layers=6, hidden_features=16, base=base)
    with torch.no_grad():  # away from the identity the layers start at
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return flow


def reference_log_density(flow, point: torch.Tensor, latent: torch.Tensor) -> float:
    """log p_base(f(x)) + log |det df/dx| for one point, the Jacobian by autograd, in float64."""

    def data_to_noise(x: torch.Tensor) -> torch.Tensor:
        y = x[None, None]
        for layer in flow.layers:
            y = layer.forward_points(y, latent[None])[0]
        return y[0, 0]

    noise = data_to_noise(point)
    log_det = torch.linalg.slogdet(jacobian(data_to_noise, point))[1]
    base = flow._distribution.log_prob_points(noise[None, None], latent[None])[0, 0]
    return float((base + log_det).detach())


@pytest.mark.parametrize("base", ["normal", "freevar"])
def test_point_log_density_matches_autograd_jacobian_in_float64(base: str) -> None:
    flow = small_flow(base)
    latents = torch.randn(2, 4)
    points = torch.randn(2, 5, 3)
    scale = 0.7
    got = point_log_density(flow, points * scale, latents, scale=scale)
    assert got.shape == (2, 5) and got.dtype == torch.float32
    flow64 = flow.double()
    for b in range(2):
        for n in range(5):
            expected = reference_log_density(flow64, points[b, n].double(), latents[b].double())
            expected -= 3 * math.log(scale)  # the density of points scaled by s
            # float32 rounding: a few ulps of the running sum per layer (6 layers and the base).
            tolerance = 8 * len(flow.layers) * EPS32 * (1 + abs(expected))
            assert got[b, n].item() == pytest.approx(expected, abs=tolerance)


def test_trajectory_ends_where_sampling_does_and_steps_undo_layer_by_layer() -> None:
    flow = small_flow()
    latents = torch.randn(2, 4)
    torch.manual_seed(5)
    steps = flow_trajectory(flow, 300, latents)
    torch.manual_seed(5)
    sampled = flow.sample(300, latents)  # the fused kernel: same draws, other rounding
    assert steps.shape == (7, 2, 300, 3)
    torch.testing.assert_close(steps[-1], sampled, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for k, layer in enumerate(reversed(flow.layers)):
            back = layer.forward_points(steps[k + 1], latents)[0]
            torch.testing.assert_close(back, steps[k], rtol=1e-4, atol=1e-4)
    assert not torch.equal(steps[0], steps[-1])


def test_view_flow_keeps_every_nth_step_and_the_last() -> None:
    flow = small_flow()
    page = view_flow(flow, torch.randn(3, 4), num_points=50, every=4, titles=["a", "b", "c"])
    data = page_data(page)
    assert data["steps"]["count"] == 3  # steps 0, 4 and 6 of 6
    labels = data["steps"]["labels"]
    assert labels[0] == "base draws (noise)" and labels[2].startswith("after layer 6 of 6")
    assert [panel["title"] for panel in data["panels"]] == ["a", "b", "c"]
    assert all(panel["count"] == 50 for panel in data["panels"])


def test_bad_input() -> None:
    flow = small_flow()
    with pytest.raises(TypeError, match="ConditionalPointFlow"):
        point_log_density(torch.nn.Linear(3, 3), torch.randn(1, 5, 3), None)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        point_log_density(flow, torch.randn(1, 5, 3), torch.randn(1, 4), scale=0)
    with pytest.raises(ValueError, match="points"):
        point_log_density(flow, torch.randn(5, 3), torch.randn(1, 4))
    with pytest.raises(ValueError, match="context is required"):
        flow_trajectory(flow, 10, None)
    with pytest.raises(ValueError, match="num_points must be a positive integer"):
        flow_trajectory(flow, 0, torch.randn(1, 4))
    with pytest.raises(ValueError, match="every must be a positive integer"):
        view_flow(flow, torch.randn(1, 4), every=0)
    with pytest.raises(ValueError, match="titles has 2 entries but there are 1 latents"):
        view_flow(flow, torch.randn(1, 4), num_points=10, titles=["a", "b"])
