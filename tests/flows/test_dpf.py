"""Tests of the DPF-Nets decoder factory: arrangement, size, round trips at the paper's depth."""

from __future__ import annotations

import copy

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
        (
            {"coupling": "glow"},
            r"coupling must be one of \['affine', 'spline'\] or a coupling class",
        ),
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


class TanhBound(PointAffineCoupling):
    def bound(self, raw):
        return torch.tanh(raw) * self.max_log_scale


def test_any_coupling_class_or_factory():
    flow = dpf_flow(context_features=8, num_layers=4, hidden_features=16, coupling=TanhBound)
    assert [type(layer) for layer in flow.layers] == [TanhBound] * 4
    made = []

    def factory(mask, context_features, hidden_features, **kwargs):
        made.append((tuple(mask), context_features, hidden_features, kwargs))
        return PointSplineCoupling(mask, context_features, hidden_features, **kwargs)

    flow = dpf_flow(
        context_features=8, num_layers=4, hidden_features=16, coupling=factory, num_bins=4
    )
    assert made == [
        ((1, 0, 0), 8, 16, {"num_bins": 4}),
        ((0, 1, 0), 8, 16, {"num_bins": 4}),
        ((0, 0, 1), 8, 16, {"num_bins": 4}),
        ((1, 1, 0), 8, 16, {"num_bins": 4}),
    ]
    assert all(layer.num_bins == 4 for layer in flow.layers)
    # The names stay: "affine" and "spline" are the built-in classes.
    assert type(dpf_flow(8, 1, 16, coupling="affine").layers[0]) is PointAffineCoupling
    assert type(dpf_flow(8, 1, 16, coupling="spline").layers[0]) is PointSplineCoupling


def test_bad_couplings_are_named():
    with pytest.raises(TypeError, match="coupling must be 'affine', 'spline', or a coupling class"):
        dpf_flow(8, 3, 16, coupling=3)
    with pytest.raises(TypeError, match="layer 0 is PointAffineCoupling with features=2"):
        dpf_flow(8, 3, 16, coupling=lambda mask, **kwargs: PointAffineCoupling([1, 0], **kwargs))
    with pytest.raises(TypeError, match="layer 0 is Linear"):
        dpf_flow(8, 3, 16, coupling=lambda mask, **kwargs: torch.nn.Linear(3, 3))


# --------------------------------------------------------------- compatibility with 0.1
def _layer_fingerprints(flow) -> list[tuple[float, float]]:
    """Per layer: a position-weighted sum of its state_dict's values, and the sum of |values|."""
    found = []
    for layer in flow.layers:
        total, scale = 0.0, 0.0
        for entry, (_, tensor) in enumerate(sorted(layer.state_dict().items())):
            values = tensor.double().flatten()
            positions = torch.arange(values.numel(), dtype=torch.float64)
            total += (values * torch.cos(0.7 * positions + 1.3 * entry)).sum().item()
            scale += values.abs().sum().item()
        found.append((total, scale))
    return found


# Recorded from pcflow before the coupling base existed (commit da45d35), on an AMD EPYC
# (AVX2), torch 2.13: sha256 of the state_dict's "key:shape" lines, each layer's fingerprint,
# log_prob of 2 x 100 points at the seed-0 weights and after reset_parameters(last_std=0.5)
# (seed 2), in float32 on the fused path, float32 on the PyTorch path and float64.
RECORDED = {
    "affine": {
        "keys": "f2a75a5051c7d5ba17bb0c41edaa3d0dae22e071d77f8429911630c6c9a90d02",
        "fingerprints": [-2.0889974048, 0.1986493838, -2.7889603669, -4.6591290911,
                         -7.5363334049, -5.9512167246],
        "seed": ([-324.5832824707031, -322.29852294921875],
                 [-324.5832824707031, -322.29852294921875],
                 [-324.58325913345107, -322.29848254473853]),
        "rough": ([-22497.6015625, -1586.572265625],
                  [-22497.595703125, -1586.572265625],
                  [-22497.597772990048, -1586.5722800570634]),
    },
    "spline": {
        "keys": "a88d1145d9a77ae1fe62cff03b0a12579f77cfa6d9a3bd027964555b7bf53f68",
        "fingerprints": [2.3744866473, -8.994014944, 3.6596689422, -2.8190859891,
                         3.2592212884, 1.2957833537],
        "seed": ([-380.79364013671875, -358.14044189453125],
                 [-380.79364013671875, -358.14044189453125],
                 [-380.793700494635, -358.14046224750916]),
        "rough": ([-502.14727783203125, -482.8030700683594],
                  [-502.14727783203125, -482.8030700683594],
                  [-502.14722455368405, -482.80306988675784]),
    },
}  # fmt: skip


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_the_same_seed_builds_the_same_flow_as_before(coupling):
    """Old checkpoints load (same keys and shapes), the same seed draws the same weights, and
    the flow computes the same log-likelihoods on both paths as before the coupling base.

    Weights are compared through fingerprints, not bytes: torch's uniform_ and normal_ round
    differently on AVX2 and AVX-512 builds (a few float32 ulps, measured with
    ATEN_CPU_CAPABILITY), so a byte hash would hold on one kind of CPU only."""
    import hashlib

    recorded = RECORDED[coupling]
    torch.manual_seed(0)
    flow = dpf_flow(context_features=8, num_layers=6, hidden_features=16, coupling=coupling)
    keys = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in flow.state_dict().items())
    assert hashlib.sha256(keys.encode()).hexdigest() == recorded["keys"]
    for (total, scale), expected in zip(
        _layer_fingerprints(flow), recorded["fingerprints"], strict=True
    ):
        # Every weight within 4 float32 ulps of its recorded value moves the sum by less than
        # 2^-20 of the sum of |weights|; any other draw or order moves it by ~1e-2 or more.
        assert abs(total - expected) <= 2.0**-20 * scale
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(2, 100, 3, generator=generator) * 2 - 1
    z = torch.randn(2, 8, generator=generator)

    def log_probs(model):
        with torch.no_grad():
            model.fused = True
            fused_path = model.log_prob(points, z)
            model.fused = False
            torch_path = model.log_prob(points, z)
            double = copy.deepcopy(model).double().log_prob(points.double(), z.double())
        return fused_path, torch_path, double

    # The recorded values came from float32 weights and (two of them) float32 arithmetic on
    # other rounding: hold them to 64 float32 ulps of their size.
    tolerance = 64 * 2.0**-24
    for found, expected in zip(log_probs(flow), recorded["seed"], strict=True):
        torch.testing.assert_close(
            found.double(), torch.tensor(expected, dtype=torch.float64), rtol=tolerance, atol=0
        )
    torch.manual_seed(2)
    for layer in flow.layers:
        layer.networks.reset_parameters(last_std=0.5)
    for found, expected in zip(log_probs(flow), recorded["rough"], strict=True):
        torch.testing.assert_close(
            found.double(), torch.tensor(expected, dtype=torch.float64), rtol=tolerance, atol=0
        )
