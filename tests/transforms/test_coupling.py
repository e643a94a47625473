"""Tests of the point coupling layers against naive references and nflows' conventions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nflows.transforms import CompositeTransform, InverseTransform, Permutation
from torch.autograd.functional import jacobian

from pcflow.transforms import PointAffineCoupling, PointCoupling, PointSplineCoupling
from pcflow.transforms.coupling import affine_map
from pcflow.transforms.film import PointNetworks

MASKS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]


def make_layer(kind: str, mask, context=5, hidden=8, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cls = PointAffineCoupling if kind == "affine" else PointSplineCoupling
    layer = cls(mask, context_features=context, hidden_features=hidden)
    # Non-trivial maps: output layers far from the near-identity initialisation.
    layer.networks.reset_parameters(last_std=0.5)
    return layer.to(dtype)


def point_logabsdet(layer, point, z, inverse=False):
    """log|det| of one point's map from its autograd Jacobian (the slow reference)."""

    def single(x):
        fn = layer.inverse if inverse else layer.forward
        return fn(x.view(1, 1, -1), z.view(1, -1))[0].view(-1)

    return torch.linalg.slogdet(jacobian(single, point))[1]


def naive_affine(layer: PointAffineCoupling, points, z):
    """The documented formula, one point at a time, with explicit weights."""
    net = layer.networks
    ident, trans = layer.identity_features, layer.transformed_features
    outputs = points.clone()
    logabsdet = torch.zeros(points.shape[0], dtype=points.dtype)
    for b in range(points.shape[0]):
        film = torch.nn.functional.silu(net.film.linear(z[b]))
        film = film.view(4, -1)
        film = torch.stack([film[i] @ net.film.weight[i] + net.film.bias[i, 0] for i in range(4)])
        for p in range(points.shape[1]):
            x = points[b, p]
            out = []
            for k in range(2):  # 0: shift network, 1: log-scale network
                h = torch.relu(x[ident] @ net.first_weight[k] + net.first_bias[k, 0])
                h = h @ net.hidden_weight[k] + net.hidden_bias[k, 0]
                h = torch.relu(h * (net.film.eps + torch.exp(film[k])) + film[2 + k])
                out.append(h @ net.last_weight[k] + net.last_bias[k, 0])
            shift, raw = out
            log_scale = layer.max_log_scale * raw / (1 + raw.abs())
            outputs[b, p, trans] = x[trans] * torch.exp(log_scale) + shift
            logabsdet[b] += log_scale.sum()
    return outputs, logabsdet


@pytest.mark.parametrize("mask", MASKS)
def test_affine_matches_naive_formula(mask):
    layer = make_layer("affine", mask)
    points, z = torch.randn(2, 7, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    outputs, logabsdet = layer(points, z)
    expected, expected_logabsdet = naive_affine(layer, points, z)
    torch.testing.assert_close(outputs, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logabsdet, expected_logabsdet, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["affine", "spline"])
@pytest.mark.parametrize("mask", [(1, 0, 0), (0, 1, 1), (1, 0, 1)])
def test_logabsdet_equals_autograd_jacobian(kind, mask):
    layer = make_layer(kind, mask)
    points = torch.randn(2, 4, 3, dtype=torch.float64) * 1.5
    z = torch.randn(2, 5, dtype=torch.float64)
    outputs, per_point = layer.forward_points(points, z)
    _, back_per_point = layer.inverse_points(outputs, z)
    for b in range(2):
        for p in range(4):
            ref = point_logabsdet(layer, points[b, p], z[b])
            torch.testing.assert_close(per_point[b, p], ref, rtol=1e-10, atol=1e-10)
            ref_inv = point_logabsdet(layer, outputs[b, p], z[b], inverse=True)
            torch.testing.assert_close(back_per_point[b, p], ref_inv, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(points, z)[1], per_point.sum(1))


@pytest.mark.parametrize("kind", ["affine", "spline"])
@pytest.mark.parametrize("mask", MASKS)
def test_round_trip_float64(kind, mask):
    layer = make_layer(kind, mask)
    points = torch.rand(3, 50, 3, dtype=torch.float64) * 2 - 1
    z = torch.randn(3, 5, dtype=torch.float64)
    outputs, logabsdet = layer(points, z)
    back, back_logabsdet = layer.inverse(outputs, z)
    assert (back - points).abs().max() < 1e-10
    assert (logabsdet + back_logabsdet).abs().max() < 1e-10
    # Conditioning coordinates pass through exactly.
    ident = layer.identity_features
    assert torch.equal(outputs[..., ident], points[..., ident])


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_nflows_conventions(kind):
    """nflows' transform tests: shapes, and forward then InverseTransform is the identity."""
    layer = make_layer(kind, (0, 1, 1))
    points = torch.randn(4, 20, 3, dtype=torch.float64)
    z = torch.randn(4, 5, dtype=torch.float64)
    outputs, logabsdet = layer(points, z)
    assert outputs.shape == points.shape and logabsdet.shape == (4,)
    assert torch.isfinite(outputs).all() and torch.isfinite(logabsdet).all()
    identity = CompositeTransform([layer, InverseTransform(layer)])
    back, total = identity(points, z)
    torch.testing.assert_close(back, points, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(total, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-10)
    inv_out, inv_logabsdet = InverseTransform(layer)(outputs, z)
    torch.testing.assert_close(inv_out, points)
    torch.testing.assert_close(inv_logabsdet, -logabsdet)


def test_composes_with_nflows_transform():
    first = make_layer("affine", (1, 0, 0), seed=1)
    second = make_layer("spline", (0, 1, 1), seed=2)
    shuffle = Permutation(torch.tensor([2, 0, 1]), dim=2)
    stack = CompositeTransform([first, shuffle, second])
    points = torch.randn(2, 30, 3, dtype=torch.float64)
    z = torch.randn(2, 5, dtype=torch.float64)
    outputs, logabsdet = stack(points, z)
    a, la = first(points, z)
    b = a[..., [2, 0, 1]]
    c, lc = second(b, z)
    torch.testing.assert_close(outputs, c)
    torch.testing.assert_close(logabsdet, la + lc)
    back, back_logabsdet = stack.inverse(outputs, z)
    torch.testing.assert_close(back, points, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back_logabsdet, -logabsdet)


@settings(max_examples=15, deadline=None)
@given(
    kind=st.sampled_from(["affine", "spline"]),
    mask=st.sampled_from(MASKS),
    batch=st.integers(1, 3),
    num_points=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_points_are_independent_and_equivariant(kind, mask, batch, num_points, seed):
    layer = make_layer(kind, mask, seed=seed % 7)
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, num_points, 3, generator=generator, dtype=torch.float64)
    z = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    outputs, per_point = layer.forward_points(points, z)
    perm = torch.randperm(num_points, generator=generator)
    shuffled, shuffled_per_point = layer.forward_points(points[:, perm], z)
    torch.testing.assert_close(shuffled, outputs[:, perm], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shuffled_per_point, per_point[:, perm], rtol=1e-12, atol=1e-12)
    # Each point alone gives the same result as inside its set.
    p = int(torch.randint(num_points, (1,), generator=generator))
    alone, alone_logabsdet = layer(points[:, p : p + 1], z)
    torch.testing.assert_close(alone[:, 0], outputs[:, p], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alone_logabsdet, per_point[:, p], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_gradcheck_inputs_context_parameters(kind):
    layer = make_layer(kind, (1, 0, 1), context=3, hidden=4)
    points = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def fn(x, c, *params):
        out, logabsdet = layer(x, c)
        return out, logabsdet

    assert torch.autograd.gradcheck(fn, (points, z))
    assert torch.autograd.gradcheck(lambda x, c: layer.inverse(x, c), (points, z))
    out, logabsdet = layer(points, z)
    (out.square().sum() + logabsdet.sum()).backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_float32_matches_float64():
    layer = make_layer("affine", (0, 1, 0))
    points = torch.rand(2, 64, 3, dtype=torch.float64) * 2 - 1
    z = torch.randn(2, 5, dtype=torch.float64)
    ref, ref_logabsdet = layer(points, z)
    out, logabsdet = layer.float()(points.float(), z.float())
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logabsdet, ref_logabsdet.float(), rtol=1e-5, atol=1e-4)


def test_unconditional_layer_ignores_context():
    layer = PointAffineCoupling([1, 0, 0], context_features=None, hidden_features=8)
    layer.networks.reset_parameters(last_std=0.5)
    points = torch.randn(2, 10, 3)
    out, _ = layer(points)
    out_ctx, _ = layer(points, torch.randn(2, 4))
    torch.testing.assert_close(out, out_ctx)
    torch.testing.assert_close(layer.inverse(out)[0], points, rtol=1e-5, atol=1e-5)


def test_log_scale_is_bounded():
    layer = PointAffineCoupling([1, 1, 0], context_features=2, hidden_features=8, max_log_scale=0.5)
    torch.nn.init.normal_(layer.networks.last_weight, std=100.0)
    points = torch.randn(1, 500, 3) * 10
    _, per_point = layer.forward_points(points, torch.randn(1, 2))
    assert per_point.abs().max() <= 2 * 0.5 + 1e-6  # two transformed coordinates
    assert math.isclose(layer.max_log_scale, 0.5)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_errors_name_the_problem(kind):
    layer = make_layer(kind, (1, 0, 0), dtype=torch.float32)
    points, z = torch.randn(2, 10, 3), torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, N, 3\)"):
        layer(points[0], z)
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, N, 3\)"):
        layer(torch.randn(2, 10, 4), z)
    with pytest.raises(ValueError, match="context has batch size 3"):
        layer(points, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"context must have shape \(B, 5\)"):
        layer.inverse(points, torch.randn(2, 6))
    with pytest.raises(ValueError, match="context is required"):
        layer(points)
    bad = points.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="inputs must be finite"):
        layer(bad, z)
    with pytest.raises(ValueError, match="context must be finite"):
        layer(points, torch.full((2, 5), float("inf")))
    with pytest.raises(ValueError, match="empty point sets"):
        layer(torch.randn(2, 0, 3), z)
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 10, 3, dtype=torch.long), z)


@pytest.mark.parametrize("cls", [PointAffineCoupling, PointSplineCoupling])
@pytest.mark.parametrize("mask", [(1, 1, 1), (0, 0, 0)])
def test_bad_masks(cls, mask):
    with pytest.raises(ValueError, match="mask must mark at least one coordinate"):
        cls(mask, context_features=2)


@pytest.mark.parametrize("cache_bytes", [1, 2 * 8 * 8 * 5, 2 * 8 * 8 * 26])
def test_cache_blocks_give_same_values(monkeypatch, cache_bytes):
    """Blocks of point slices (small budget) or of several shapes give the unblocked values."""
    import pcflow.transforms.film as film

    layer = make_layer("affine", (0, 1, 1))
    points = torch.randn(5, 13, 3, dtype=torch.float64)
    z = torch.randn(5, 5, dtype=torch.float64)
    expected, expected_logabsdet = naive_affine(layer, points, z)
    # The budget is per thread: divide so the blocks are the same with any thread count.
    monkeypatch.setattr(film, "_CACHE_BYTES", max(1, cache_bytes // torch.get_num_threads()))
    assert len(layer.networks.chunks(points)) > 1
    outputs, per_point = layer.forward_points(points, z)
    torch.testing.assert_close(outputs, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(per_point.sum(1), expected_logabsdet, rtol=1e-12, atol=1e-12)
    back, back_per_point = layer.inverse_points(outputs, z)
    torch.testing.assert_close(back, points, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back_per_point, -per_point, rtol=1e-12, atol=1e-12)


def test_checkpoints_from_before_the_film_module_still_load():
    # pcflow 0.1 kept the FiLM weights on the networks (film_in, film_weight, film_bias).
    layer = make_layer("affine", (1, 0, 0), dtype=torch.float32)
    old = {}
    for key, value in layer.state_dict().items():
        key = key.replace("film.linear.", "film_in.").replace("film.weight", "film_weight")
        old[key.replace("film.bias", "film_bias")] = value.clone() + 1
    assert "networks.film_in.weight" in old and "networks.film_weight" in old
    fresh = PointAffineCoupling((1, 0, 0), context_features=5, hidden_features=8)
    fresh.load_state_dict(old)  # strict: every old key is mapped, none is left over
    torch.testing.assert_close(fresh.networks.film.weight, layer.networks.film.weight + 1)
    torch.testing.assert_close(fresh.networks.film.linear.bias, layer.networks.film.linear.bias + 1)


def test_the_layer_exports_its_weights_for_the_engines():
    layer = make_layer("affine", (0, 1, 1), dtype=torch.float32)
    weights = layer.weights
    assert weights.transformed == (1, 2) and weights.identity == (0,)
    assert weights.first_weight.shape == (2, 1, 8) and weights.last_weight.shape == (2, 8, 2)
    assert weights.first_weight is layer.networks.first_weight  # views, not copies
    assert weights.film is layer.networks.film and weights.max_log_scale == layer.max_log_scale
    assert PointAffineCoupling((1, 0, 0)).weights.film is None


# ------------------------------------------------------------------ couplings of one's own
class SigmoidScaleCoupling(PointCoupling):
    """Glow's affine coupling, y = x * sigmoid(u + 2) + t: a new coupling in a few lines."""

    def __init__(self, mask, context_features=None, hidden_features=64):
        super().__init__(mask, context_features, hidden_features, params_per_coordinate=2)

    def elementwise_forward(self, inputs, params):
        log_scale = torch.nn.functional.logsigmoid(params[..., 1] + 2)
        return inputs * log_scale.exp() + params[..., 0], log_scale

    def elementwise_inverse(self, inputs, params):
        log_scale = torch.nn.functional.logsigmoid(params[..., 1] + 2)
        return (inputs - params[..., 0]) * (-log_scale).exp(), -log_scale


class TanhBound(PointAffineCoupling):
    def bound(self, raw):
        return torch.tanh(raw) * self.max_log_scale


class OffsetBound(PointAffineCoupling):
    """A bound that is not zero at zero: the conditioning coordinates must still pass."""

    def bound(self, raw):
        return 0.5 * torch.tanh(raw) + 0.25


def rough(layer, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layer.networks.reset_parameters(last_std=0.5)
    return layer.to(dtype)


def naive_coupling(layer, points, z, scale_of_raw):
    """One point at a time: networks written out, then y_t = x_t * scale(raw) + shift."""
    net = layer.networks
    k, h = net.num_nets, net.hidden_features
    ident, trans = layer.identity_features, layer.transformed_features
    outputs, logabsdet = points.clone(), torch.zeros(points.shape[:2], dtype=points.dtype)
    for b in range(points.shape[0]):
        film = torch.nn.functional.silu(net.film.linear(z[b])).view(2 * k, h)
        film = torch.stack(
            [film[i] @ net.film.weight[i] + net.film.bias[i, 0] for i in range(2 * k)]
        )
        for p in range(points.shape[1]):
            x, out = points[b, p], []
            for j in range(k):
                hidden = torch.relu(x[ident] @ net.first_weight[j] + net.first_bias[j, 0])
                hidden = hidden @ net.hidden_weight[j] + net.hidden_bias[j, 0]
                hidden = torch.relu(hidden * (net.film.eps + torch.exp(film[j])) + film[k + j])
                out.append(hidden @ net.last_weight[j] + net.last_bias[j, 0])
            params = torch.stack(out, -1).reshape(len(trans), -1)  # network j: params[:, j]
            log_scale = scale_of_raw(params[:, 1])
            outputs[b, p, trans] = x[trans] * torch.exp(log_scale) + params[:, 0]
            logabsdet[b, p] = log_scale.sum()
    return outputs, logabsdet


@pytest.mark.parametrize(
    "cls, scale_of_raw",
    [
        (SigmoidScaleCoupling, lambda raw: torch.nn.functional.logsigmoid(raw + 2)),
        (TanhBound, torch.tanh),
        (OffsetBound, lambda raw: 0.5 * torch.tanh(raw) + 0.25),
        (PointAffineCoupling, lambda raw: raw / (1 + raw.abs())),
    ],
)
@pytest.mark.parametrize("mask", [(1, 0, 0), (0, 1, 1)])
def test_couplings_of_ones_own_compute_their_own_map(cls, scale_of_raw, mask):
    layer = rough(cls(mask, context_features=5, hidden_features=8))
    points, z = torch.randn(2, 6, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    expected, expected_per_point = naive_coupling(layer, points, z, scale_of_raw)
    outputs, per_point = layer.forward_points(points, z)
    torch.testing.assert_close(outputs, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(per_point, expected_per_point, rtol=1e-12, atol=1e-12)
    back, back_per_point = layer.inverse_points(outputs, z)
    torch.testing.assert_close(back, points, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back_per_point, -per_point, rtol=1e-10, atol=1e-10)
    # The log-determinant is that of each point's map, from autograd.
    reference = point_logabsdet(layer, points[1, 2], z[1])
    torch.testing.assert_close(per_point[1, 2], reference, rtol=1e-10, atol=1e-10)
    if isinstance(layer, PointAffineCoupling):
        # shift_and_log_scale, which the memory-efficient engine reads, agrees with the map.
        shift, log_scale = layer.shift_and_log_scale(points, z)
        torch.testing.assert_close(affine_map(points, shift, log_scale, False)[0], outputs)


def test_the_affine_map_through_the_generic_base_is_the_engines():
    """PointAffineCoupling's elementwise map, run by PointCoupling's composition, gives what its
    blocked engine gives: the two definitions of the layer agree."""
    layer = rough(PointAffineCoupling((1, 0, 1), context_features=5, hidden_features=8))
    points, z = torch.randn(3, 40, 3, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for inverse in (False, True):
        generic = PointCoupling._couple(layer, points, z, inverse)
        engine = (layer.inverse_points if inverse else layer.forward_points)(points, z)
        for a, b in zip(generic, engine, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_subclass_that_redefines_the_elementwise_map_is_not_bypassed():
    class Cubic(PointAffineCoupling):
        def elementwise_forward(self, inputs, params):
            return inputs + inputs.pow(3) + params[..., 0], torch.log1p(3 * inputs.square())

    layer = rough(Cubic((1, 0, 0), context_features=5, hidden_features=8))
    points, z = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    outputs, per_point = layer.forward_points(points, z)
    shift = layer.conditioner(points, z)[..., 0, 0]
    x = points[..., 0]
    torch.testing.assert_close(outputs[..., 0], x + x**3 + shift, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(per_point, torch.log1p(3 * x.square()), rtol=1e-12, atol=1e-12)


def test_the_conditioner_gives_each_network_its_share_of_the_parameters():
    layer = rough(PointAffineCoupling((0, 1, 1), context_features=5, hidden_features=8))
    points, z = torch.randn(2, 7, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    params = layer.conditioner(points, z)
    assert params.shape == (2, 7, 2, 2)
    raw = layer.networks(points, z).view(2, 2, 7, 2)  # (network, B, N, nt)
    torch.testing.assert_close(params[..., 0], raw[0], rtol=0, atol=0)
    torch.testing.assert_close(params[..., 1], raw[1], rtol=0, atol=0)


def test_the_fused_kernel_opt_in_is_not_inherited():
    class Again(TanhBound):
        pass

    class Declared(PointAffineCoupling):
        fused_kernel = True  # e.g. only a new default; the map is unchanged

    class Child(Declared):
        pass

    assert PointAffineCoupling.fused_kernel and Declared.fused_kernel
    assert not PointCoupling.fused_kernel and not PointSplineCoupling.fused_kernel
    assert not TanhBound.fused_kernel and not Again.fused_kernel and not Child.fused_kernel
    assert not SigmoidScaleCoupling.fused_kernel


def test_bad_coupling_definitions_are_named():
    with pytest.raises(ValueError, match="params_per_coordinate must be a positive integer, got 0"):
        PointCoupling((1, 0, 0), params_per_coordinate=0)
    with pytest.raises(ValueError, match=r"params_per_coordinate \(3\) must be a multiple of"):
        PointCoupling((1, 0, 0), params_per_coordinate=3, num_networks=2)
    with pytest.raises(ValueError, match="hidden_features must be a positive integer, got -1"):
        PointAffineCoupling((1, 0, 0), hidden_features=-1)

    class Summed(SigmoidScaleCoupling):  # returns the log-determinant per point, not per coordinate
        def elementwise_forward(self, inputs, params):
            outputs, log_scale = super().elementwise_forward(inputs, params)
            return outputs, log_scale.sum(-1)

    with pytest.raises(ValueError, match=r"Summed.elementwise_forward must return .* \(2, 4, 2\)"):
        Summed((1, 0, 1), context_features=2, hidden_features=4)(
            torch.randn(2, 4, 3), torch.randn(2, 2)
        )
    with pytest.raises(NotImplementedError, match="PointCoupling must define elementwise_forward"):
        PointCoupling((1, 0, 0), params_per_coordinate=1)(torch.randn(1, 2, 3))


def test_point_networks_take_keywords_beyond_the_first_arguments():
    with pytest.raises(TypeError):
        PointNetworks(2, 3, [1, 2], 1, None, 16, 8, 1e-3)  # the 0.1 positional call
    networks = PointNetworks(2, [1, 2], 1, hidden_features=16, context_features=8)
    assert sorted(networks.state_dict()) == sorted(
        ["first_weight", "first_bias", "hidden_weight", "hidden_bias", "last_weight",
         "last_bias", "film.linear.weight", "film.linear.bias", "film.weight", "film.bias"]
    )  # fmt: skip
