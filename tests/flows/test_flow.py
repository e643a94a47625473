"""Tests of ConditionalPointFlow against the change-of-variables formula and brute force."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nflows.transforms import CompositeTransform, Permutation
from torch.autograd.functional import jacobian

from pcflow.flows import ConditionalPointFlow, StandardPointNormal
from pcflow.transforms import PointActNorm, PointAffineCoupling, PointSplineCoupling

MASKS = [(1, 0, 0), (0, 1, 1), (0, 1, 0), (1, 0, 1), (0, 0, 1), (1, 1, 0)]


def make_flow(num_layers=4, dtype=torch.float64, spline=False, foreign=False, seed=0, **kwargs):
    torch.manual_seed(seed)
    layers = []
    for j in range(num_layers):
        cls = PointSplineCoupling if spline and j % 2 else PointAffineCoupling
        layer = cls(MASKS[j % len(MASKS)], context_features=5, hidden_features=8)
        layer.networks.reset_parameters(last_std=0.4)
        layers.append(layer)
    if foreign:
        layers.insert(1, Permutation(torch.tensor([2, 0, 1]), dim=2))
    return ConditionalPointFlow(CompositeTransform(layers), **kwargs).to(dtype)


def reference_log_prob(flow, point, z):
    """log N(f(x)) + log|det df/dx| for one point, f from the layers one by one, det by autograd."""

    def f(x):
        out = x.view(1, 1, 3)
        for layer in flow.layers:
            out, _ = layer(out, z.view(1, -1))
        return out.view(3)

    noise = f(point)
    base = -0.5 * noise.square().sum() - 1.5 * math.log(2 * math.pi)
    return base + torch.linalg.slogdet(jacobian(f, point))[1]


@pytest.mark.parametrize("spline", [False, True])
@pytest.mark.parametrize("foreign", [False, True])
def test_log_prob_is_change_of_variables(spline, foreign):
    flow = make_flow(spline=spline, foreign=foreign)
    points = torch.randn(2, 3, 3, dtype=torch.float64)
    z = torch.randn(2, 5, dtype=torch.float64)
    per_point = flow.log_prob(points, z, per_point=True)
    for b in range(2):
        for p in range(3):
            ref = reference_log_prob(flow, points[b, p], z[b])
            torch.testing.assert_close(per_point[b, p], ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flow.log_prob(points, z), per_point.sum(1))


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), num_points=st.integers(1, 30), seed=st.integers(0, 1000))
def test_set_log_prob_is_sum_of_points_and_equivariant(batch, num_points, seed):
    flow = make_flow(seed=seed % 3)
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, num_points, 3, generator=generator, dtype=torch.float64)
    z = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    alone = torch.stack([flow.log_prob(points[:, p : p + 1], z) for p in range(num_points)], dim=1)
    torch.testing.assert_close(flow.log_prob(points, z), alone.sum(1), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(flow.log_prob(points, z, per_point=True), alone)
    perm = torch.randperm(num_points, generator=generator)
    noise = flow.transform_to_noise(points, z)
    torch.testing.assert_close(flow.transform_to_noise(points[:, perm], z), noise[:, perm])


def test_sample_inverts_transform_to_noise_and_is_equivariant():
    flow = make_flow()
    z = torch.randn(3, 5, dtype=torch.float64)
    torch.manual_seed(7)
    noise = torch.randn(3, 40, 3, dtype=torch.float64)
    torch.manual_seed(7)
    samples = flow.sample(40, z)
    assert samples.shape == (3, 40, 3)
    torch.testing.assert_close(flow.transform_to_noise(samples, z), noise, rtol=1e-10, atol=1e-10)
    # Shuffling the noise shuffles the samples: the map is the same for every point.
    perm = torch.randperm(40)
    mapped, _ = flow._run(noise[:, perm], z, inverse=True, per_point=False)
    torch.testing.assert_close(mapped, samples[:, perm])


def test_sample_and_log_prob_agree_with_log_prob():
    flow = make_flow(spline=True)
    z = torch.randn(2, 5, dtype=torch.float64)
    samples, log_prob = flow.sample_and_log_prob(25, z)
    torch.testing.assert_close(log_prob, flow.log_prob(samples, z), rtol=1e-9, atol=1e-9)


def test_chunking_from_memory_budget_gives_same_values():
    flow = make_flow(memory_budget=4096)  # a few points per chunk
    whole = make_flow(memory_budget=2**40)
    z = torch.randn(2, 5, dtype=torch.float64)
    points = torch.randn(2, 300, 3, dtype=torch.float64)
    assert 1 <= flow.chunk_size(2, torch.float64) < 300
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(points, z), whole.log_prob(points, z))
        torch.testing.assert_close(
            flow.log_prob(points, z, per_point=True), whole.log_prob(points, z, per_point=True)
        )
        torch.testing.assert_close(
            flow.transform_to_noise(points, z), whole.transform_to_noise(points, z)
        )
        torch.manual_seed(3)
        samples, log_prob = flow.sample_and_log_prob(300, z)
        torch.testing.assert_close(log_prob, whole.log_prob(samples, z), rtol=1e-9, atol=1e-9)
    # An explicit chunk size works with autograd too.
    torch.manual_seed(4)
    chunked = whole.sample(50, z, chunk_size=7)
    torch.manual_seed(4)
    noise = [torch.randn(2, 7, 3, dtype=torch.float64) for _ in range(7)]
    noise = torch.cat([*noise, torch.randn(2, 1, 3, dtype=torch.float64)], 1)
    torch.testing.assert_close(chunked, whole._run(noise, z, True, False)[0])


def test_million_points_bounded_memory():
    flow = make_flow(num_layers=2, dtype=torch.float32, memory_budget=32 * 2**20)
    z = torch.randn(1, 5)
    with torch.no_grad():
        samples = flow.sample(1_000_000, z)
        log_prob = flow.log_prob(samples, z, per_point=True)
    assert samples.shape == (1, 1_000_000, 3) and log_prob.shape == (1, 1_000_000)
    assert flow.chunk_size(1) < 1_000_000
    assert torch.isfinite(log_prob).all()


def test_gradients_reach_context_parameters_and_inputs():
    flow = make_flow(spline=True)
    z = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    points = torch.randn(2, 10, 3, dtype=torch.float64, requires_grad=True)
    loss = -flow.log_prob(points, z).sum() + flow.sample(8, z).square().sum()
    loss.backward()
    assert z.grad.abs().sum() > 0 and points.grad.abs().sum() > 0
    for name, param in flow.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # Sampling alone is differentiable in the context.
    z.grad = None
    flow.sample(8, z).sum().backward()
    assert z.grad.abs().sum() > 0


def test_gradcheck_log_prob():
    flow = make_flow(num_layers=2)
    points = torch.randn(1, 3, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: flow.log_prob(x, c), (points, z))


def test_memory_efficient_option_matches_plain():
    pytest.importorskip("pcflow.flows.reversible")
    plain = make_flow(num_layers=3)
    efficient = make_flow(num_layers=3, memory_efficient=True)
    points = torch.randn(2, 20, 3, dtype=torch.float64)
    grads = []
    for flow in (plain, efficient):
        z = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        z.requires_grad_(True)
        value = flow.log_prob(points, z)
        value.sum().backward()
        grads.append((value.detach(), z.grad, [p.grad for p in flow.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-7, atol=1e-9)
    for a, b in zip(grads[0][2], grads[1][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_default_distribution_and_actnorm_in_stack():
    layers = [PointActNorm(3), PointAffineCoupling([1, 0, 0], context_features=4)]
    flow = ConditionalPointFlow(CompositeTransform(layers))
    assert isinstance(flow._distribution, StandardPointNormal) and flow.features == 3
    points = torch.randn(2, 50, 3) * 3 + 1
    value = flow.log_prob(points, torch.randn(2, 4))
    assert value.shape == (2,) and torch.isfinite(value).all()
    assert bool(layers[0].initialized)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend compiles C++ and no C++ compiler is installed",
)
@pytest.mark.parametrize("fused", [False, True], ids=["pytorch-path", "fused-kernel"])
def test_torch_compile_matches_eager(fused):
    # Small on purpose: compilation time grows with the graph (about 20 s for this on 2 cores).
    # The fused kernel is a registered operator: compilation traces through it.
    flow = make_flow(num_layers=2, dtype=torch.float32, fused=fused)
    points, z = torch.randn(2, 64, 3), torch.randn(2, 5)
    noise = torch.randn(2, 64, 3)

    def passes(x, c, u):
        forward = flow._run(x, c, inverse=False, per_point=False)
        backward = flow._run(u, c, inverse=True, per_point=False)
        return forward[0], forward[1], backward[0], backward[1]

    eager = passes(points, z, noise)
    compiled = torch.compile(passes, dynamic=False)(points, z, noise)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_errors_name_the_problem():
    flow = make_flow(num_layers=2, dtype=torch.float32)
    points, z = torch.randn(2, 10, 3), torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        flow.log_prob(points[0], z)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        flow.log_prob(torch.randn(2, 10, 2), z)
    with pytest.raises(ValueError, match="context has batch size 3"):
        flow.log_prob(points, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"context must have shape \(B, 5\)"):
        flow.sample(10, torch.randn(2, 4))
    with pytest.raises(ValueError, match="context is required"):
        flow.sample(10)
    with pytest.raises(ValueError, match="points must be finite"):
        flow.log_prob(torch.full((2, 10, 3), float("nan")), z)
    with pytest.raises(ValueError, match="context must be finite"):
        flow.transform_to_noise(points, torch.full((2, 5), float("inf")))
    with pytest.raises(ValueError, match="empty point sets"):
        flow.log_prob(torch.randn(2, 0, 3), z)
    with pytest.raises(ValueError, match="num_points must be a positive integer"):
        flow.sample(0, z)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        flow.sample(10, z, chunk_size=0)
    with pytest.raises(ValueError, match="memory_budget must be a positive"):
        make_flow(memory_budget=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_wrong_dtype_is_named(dtype):
    flow = make_flow(num_layers=2, dtype=torch.float32)
    points, z = torch.randn(2, 10, 3), torch.randn(2, 5)
    message = rf"has dtype {dtype} but the flow's parameters are torch.float32"
    with pytest.raises(TypeError, match="points " + message):
        flow.log_prob(points.to(dtype), z)
    with pytest.raises(TypeError, match="points " + message):
        flow.transform_to_noise(points.to(dtype), z)
    with pytest.raises(TypeError, match="context " + message):
        flow.log_prob(points, z.to(dtype))
    with pytest.raises(TypeError, match="context " + message):
        flow.sample(10, z.to(dtype))
    assert flow.to(dtype).sample(4, z.to(dtype)).dtype == dtype  # converting is the remedy
