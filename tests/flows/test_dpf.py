"""Tests of the DPF-Nets decoder factory: arrangement, size, round trips at the paper's depth."""

from __future__ import annotations

import pytest
import torch

from pcflow.flows import DPF_MASKS, ConditionalPointFlow, dpf_flow
from pcflow.transforms import PointAffineCoupling, PointSplineCoupling


def test_arrangement_follows_dpf_nets():
    flow = dpf_flow()
    assert isinstance(flow, ConditionalPointFlow)
    assert len(flow.layers) == 63 and flow.context_features == 512
    expected = {
        0: [[0], [1], [2]],  # pattern 0: x, then y, then z, each given the other two
        1: [[0, 1], [0, 2], [1, 2]],  # pattern 1: (x, y) given z, (x, z) given y, (y, z) given x
    }
    for j, layer in enumerate(flow.layers):
        assert isinstance(layer, PointAffineCoupling)
        assert layer.hidden_features == 64
        assert layer.transformed_features == expected[(j // 3) % 2][j % 3]
        assert sorted(layer.transformed_features + layer.identity_features) == [0, 1, 2]
    assert DPF_MASKS[0] == ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def test_parameter_count_matches_the_described_networks():
    flow = dpf_flow(context_features=16, num_layers=2, hidden_features=8)
    first = flow.layers[0]  # transforms x given (y, z)
    h, c = 8, 16
    per_net = (2 * h + h) + (h * h + h) + (h * 1 + 1)  # 2 -> H -> H -> 1
    film = (c * 4 * h + 4 * h) + 4 * (h * h + h)  # w(z), b(z) of both networks
    assert sum(p.numel() for p in first.parameters()) == 2 * per_net + film


def randomise(flow, std=0.1):
    for layer in flow.layers:
        layer.networks.reset_parameters(last_std=std)
    return flow


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_round_trip_63_layers(dtype, tolerance):
    torch.manual_seed(0)
    flow = randomise(dpf_flow()).to(dtype)
    points = torch.rand(4, 500, 3, dtype=dtype) * 2 - 1  # unit scale
    z = torch.randn(4, 512, dtype=dtype)
    with torch.no_grad():
        noise, logabsdet = flow._run(points, z, inverse=False, per_point=False)
        back, back_logabsdet = flow._run(noise, z, inverse=True, per_point=False)
    assert noise.abs().max() > 2  # the map is far from the identity
    assert (back - points).abs().max() < tolerance
    assert ((logabsdet + back_logabsdet).abs() / logabsdet.abs().clamp_min(1)).max() < tolerance


def test_spline_option():
    torch.manual_seed(0)
    flow = dpf_flow(context_features=8, num_layers=4, hidden_features=16, coupling="spline")
    assert all(isinstance(layer, PointSplineCoupling) for layer in flow.layers)
    randomise(flow, 0.5).double()
    points = torch.randn(2, 50, 3, dtype=torch.float64)
    z = torch.randn(2, 8, dtype=torch.float64)
    noise = flow.transform_to_noise(points, z)
    back, _ = flow._run(noise, z, inverse=True, per_point=False)
    assert (back - points).abs().max() < 1e-10


def test_training_step_reaches_all_parameters_and_latent():
    flow = dpf_flow(context_features=16, num_layers=6, hidden_features=16)
    z = torch.randn(3, 16, requires_grad=True)
    loss = -flow.log_prob(torch.rand(3, 100, 3) - 0.5, z).mean()
    loss.backward()
    assert z.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_coupling_kwargs_and_memory_efficient_flag():
    flow = dpf_flow(context_features=4, num_layers=3, max_log_scale=0.5, memory_efficient=True)
    assert flow.memory_efficient
    assert all(layer.max_log_scale == 0.5 for layer in flow.layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"coupling": "glow"}, "coupling must be 'affine' or 'spline'"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
        ({"context_features": 0}, "context_features must be a positive integer or None, got 0"),
        ({"hidden_features": 0}, "hidden_features must be a positive integer, got 0"),
        ({"hidden_features": -3}, "hidden_features must be a positive integer, got -3"),
        ({"hidden_features": 8.5}, "hidden_features must be a positive integer, got 8.5"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpf_flow(**kwargs)


def test_freevar_base_option():
    from pcflow.flows import FreeVariancePointNormal, StandardPointNormal

    plain = dpf_flow(context_features=16, num_layers=2, hidden_features=8)
    freevar = dpf_flow(context_features=16, num_layers=2, hidden_features=8, base="freevar")
    assert isinstance(plain._distribution, StandardPointNormal)
    assert isinstance(freevar._distribution, FreeVariancePointNormal)
    # One linear layer of z on top of the couplings: 16 x 3 weights and 3 biases.
    extra = sum(p.numel() for p in freevar.parameters()) - sum(
        p.numel() for p in plain.parameters()
    )
    assert extra == 16 * 3 + 3
    z = torch.randn(2, 16)
    assert freevar.sample(10, z).shape == (2, 10, 3)
    with pytest.raises(ValueError, match="base must be 'normal' or 'freevar', got 'laplace'"):
        dpf_flow(base="laplace")
