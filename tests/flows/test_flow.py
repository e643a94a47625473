"""Tests of ConditionalPointFlow against the change-of-variables formula and brute force."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nflows.transforms import CompositeTransform, Permutation
from torch.autograd.functional import jacobian

from pcflow.flows import (
    ConditionalPointFlow,
    FreeVariancePointNormal,
    StandardPointNormal,
    num_draws,
    select_draws,
)
from pcflow.transforms import PointActNorm, PointAffineCoupling, PointSplineCoupling

MASKS = [(1, 0, 0), (0, 1, 1), (0, 1, 0), (1, 0, 1), (0, 0, 1), (1, 1, 0)]


def make_flow(
    num_layers=4, dtype=torch.float64, spline=False, foreign=False, seed=0, freevar=False, **kwargs
):
    torch.manual_seed(seed)
    layers = []
    for j in range(num_layers):
        cls = PointSplineCoupling if spline and j % 2 else PointAffineCoupling
        layer = cls(MASKS[j % len(MASKS)], context_features=5, hidden_features=8)
        layer.networks.reset_parameters(last_std=0.4)
        layers.append(layer)
    if foreign:
        layers.insert(1, Permutation(torch.tensor([2, 0, 1]), dim=2))
    distribution = None
    if freevar:
        distribution = FreeVariancePointNormal(3, context_features=5)
        with torch.no_grad():  # away from its zero start, so that z really sets the scale
            distribution.log_scale.weight.normal_(0, 0.3)
            distribution.log_scale.bias.normal_(0, 0.3)
    return ConditionalPointFlow(CompositeTransform(layers), distribution, **kwargs).to(dtype)


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
    # The chunk is the budget over the bytes a point costs per shape, rounded down: twice the
    # budget or half the shapes fit twice the points (or one more, from the rounding); half the
    # bytes per float at least twice (float32 may also go to the fused kernel, which keeps its
    # activations in cache and counts fewer floats a point).
    chunk = flow.chunk_size(2, torch.float64)
    doubled = (2 * chunk, 2 * chunk + 1)
    assert make_flow(memory_budget=8192).chunk_size(2, torch.float64) in doubled
    assert flow.chunk_size(1, torch.float64) in doubled
    assert flow.chunk_size(2, torch.float32) >= 2 * chunk
    passes, run = [], flow._run

    def counted(inputs, *args, **kwargs):
        passes.append(inputs.shape[1])  # points per shape in this pass
        return run(inputs, *args, **kwargs)

    flow._run = counted
    with torch.no_grad():
        flow.log_prob(points, z)
    del flow._run
    # A few points per chunk, so the 300 points take several passes of at most a chunk each.
    assert len(passes) == math.ceil(300 / chunk) > 1 and sum(passes) == 300
    assert max(passes) == chunk > 1
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


# ------------------------------------------------------------------------------ temperature
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fused", "pytorch"])
def test_temperature_one_is_the_sampling_without_the_option(dtype):
    # The sampling every existing result was made with: noise from the seed, the inverse pass.
    flow = make_flow(dtype=dtype)
    z = torch.randn(3, 5, dtype=dtype)
    torch.manual_seed(11)
    noise = torch.randn(3, 64, 3, dtype=dtype)
    with torch.no_grad():
        reference = flow._run(noise, z, inverse=True, per_point=False)[0]
        torch.manual_seed(11)
        default = flow.sample(64, z)
        torch.manual_seed(11)
        explicit = flow.sample(64, z, temperature=1.0)
    assert torch.equal(default, reference) and torch.equal(explicit, reference)


@pytest.mark.parametrize("freevar", [False, True])
def test_temperature_scales_the_base_noise(freevar):
    flow = make_flow(freevar=freevar)
    z = torch.randn(2, 5, dtype=torch.float64)
    torch.manual_seed(5)
    cold = flow.sample(50, z, temperature=0.5)
    torch.manual_seed(5)
    warm = flow.sample(50, z)
    noise_cold, noise_warm = flow.transform_to_noise(cold, z), flow.transform_to_noise(warm, z)
    torch.testing.assert_close(noise_cold, 0.5 * noise_warm, rtol=1e-9, atol=1e-10)
    # The log-likelihood returned with tempered samples is the model's own.
    torch.manual_seed(6)
    samples, log_prob = flow.sample_and_log_prob(30, z, temperature=0.7)
    torch.testing.assert_close(log_prob, flow.log_prob(samples, z), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------- trim
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fused", "pytorch"])
@pytest.mark.parametrize(
    ("others", "neutral"),
    [({"temperature": 0.8}, {"trim": 0.0}), ({"trim": 0.1}, {"spread": 1})],
    ids=["trim 0", "spread 1"],
)
def test_a_neutral_option_is_the_sampling_without_it(dtype, others, neutral):
    flow = make_flow(dtype=dtype)
    z = torch.randn(3, 5, dtype=dtype)
    with torch.no_grad():
        torch.manual_seed(4)
        default = flow.sample(64, z, **others)
        torch.manual_seed(4)
        explicit = flow.sample(64, z, **others, **neutral)
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("freevar", [False, True])
@pytest.mark.parametrize("trim", [0.1, 0.37])
def test_trim_keeps_the_densest_draws_in_order(freevar, trim):
    # Reference: draw ceil(n / (1 - q)) points from the same seed untrimmed, score each with
    # the float64 change-of-variables log-density, and keep the n best in the order drawn.
    flow = make_flow(freevar=freevar)
    z = torch.randn(2, 5, dtype=torch.float64)
    n = 40
    drawn = math.ceil(n / (1 - trim))
    torch.manual_seed(9)
    everything = flow.sample(drawn, z, chunk_size=7)  # chunks must not change the draws
    torch.manual_seed(9)
    kept, log_prob = flow.sample_and_log_prob(n, z, chunk_size=7, trim=trim)
    torch.manual_seed(9)
    assert torch.equal(flow.sample(n, z, chunk_size=7, trim=trim), kept)
    assert kept.shape == (2, n, 3)
    density = torch.stack(
        [torch.stack([_any_base_log_prob(flow, p, z[b : b + 1]) for p in everything[b]])
         for b in range(2)]
    ).detach()  # fmt: skip
    for b in range(2):
        best = sorted(np.argsort(-density[b].numpy(), kind="stable")[:n])
        torch.testing.assert_close(kept[b], everything[b, best], rtol=0, atol=0)
        torch.testing.assert_close(log_prob[b], density[b, best].sum(), rtol=1e-9, atol=1e-8)
        # Every dropped draw is at most as dense as every kept one.
        dropped = np.setdiff1d(np.arange(drawn), best)
        assert density[b, dropped].max() <= density[b, best].min()


def _any_base_log_prob(flow, point, z):
    # reference_log_prob with the flow's own base: a per-shape variance for freevar.
    standard = -0.5 * 3 * math.log(2 * math.pi)
    if not isinstance(flow._distribution, FreeVariancePointNormal):
        return reference_log_prob(flow, point, z)
    log_scale = flow._distribution.log_scale(z).view(3)

    def f(x):
        out = x.view(1, 1, 3)
        for layer in flow.layers:
            out, _ = layer(out, z.view(1, -1))
        return out.view(3)

    noise = f(point) / log_scale.exp()
    base = -0.5 * noise.square().sum() + standard - log_scale.sum()
    return base + torch.linalg.slogdet(jacobian(f, point))[1]


def test_trim_on_the_fused_kernel_keeps_draws_of_high_density():
    # float32 (the fused kernel's per-point log-determinants): the kept points are draws of
    # the same seed, in order, and their float64 densities are near the top of all draws.
    flow = make_flow(dtype=torch.float32)
    z = torch.randn(2, 5)
    with torch.no_grad():
        torch.manual_seed(3)
        everything = flow.sample(250, z)
        torch.manual_seed(3)
        kept = flow.sample(200, z, trim=0.2)
    reference = flow.to(torch.float64)
    density = reference.log_prob(everything.double(), z.double(), per_point=True)
    for b in range(2):
        match = (kept[b, :, None] == everything[b, None]).all(-1)
        assert bool((match.sum(1) == 1).all())
        index = match.float().argmax(1)
        assert bool((index.diff() > 0).all())
        # Float32 rounding may swap draws of nearly equal density at the boundary only.
        threshold = density[b].topk(200).values[-1]
        assert density[b, index].min() >= threshold - 1e-3


def test_trim_is_differentiable_in_the_context():
    flow = make_flow()
    z = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    flow.sample(20, z, trim=0.2).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.1", True])
def test_trim_must_be_in_zero_one(bad):
    flow = make_flow(num_layers=1)
    with pytest.raises(ValueError, match=r"trim must be a number in \[0, 1\)"):
        flow.sample(5, torch.randn(1, 5, dtype=torch.float64), trim=bad)


# ----------------------------------------------------------------------------------- spread
@pytest.mark.parametrize("trim", [0.0, 0.2])
def test_spread_thins_the_kept_draws_by_farthest_point_sampling(trim):
    # Reference: the same seed's draws, trimmed as in the trim test (float64 densities), then
    # the textbook farthest-point loop from the first kept draw; kept in the order drawn.
    flow = make_flow(freevar=True)
    z = torch.randn(2, 5, dtype=torch.float64)
    n, spread = 15, 3
    drawn = math.ceil(n * spread / (1 - trim))
    torch.manual_seed(8)
    everything = flow.sample(drawn, z, chunk_size=11)
    torch.manual_seed(8)
    kept, log_prob = flow.sample_and_log_prob(n, z, chunk_size=11, trim=trim, spread=spread)
    everything, kept, log_prob = everything.detach(), kept.detach(), log_prob.detach()
    torch.manual_seed(8)
    assert torch.equal(flow.sample(n, z, chunk_size=11, trim=trim, spread=spread), kept)
    for b in range(2):
        density = torch.stack(
            [_any_base_log_prob(flow, p, z[b : b + 1]) for p in everything[b]]
        ).detach()
        order = np.argsort(-density.detach().numpy(), kind="stable")
        candidates = sorted(order[: n * spread])  # the densest n * spread draws, in order
        thinned = reference_fps(everything[b, candidates].numpy(), n)
        chosen = sorted(candidates[i] for i in thinned)
        torch.testing.assert_close(kept[b], everything[b, chosen], rtol=0, atol=0)
        torch.testing.assert_close(log_prob[b], density[chosen].sum(), rtol=1e-9, atol=1e-8)


def reference_fps(points: np.ndarray, num_samples: int) -> list[int]:
    """Farthest point sampling from index 0, one point at a time, in float64."""
    chosen = [0]
    nearest = np.sum((points - points[0]) ** 2, axis=1)
    while len(chosen) < num_samples:
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.sum((points - points[chosen[-1]]) ** 2, axis=1))
    return chosen


def test_spread_covers_the_draws_more_evenly():
    # The farthest any of the 400 draws is from the 100 kept (the covering radius) is smaller
    # for the thinned points than for 100 of the draws taken as they come.
    flow = make_flow(dtype=torch.float32)
    z = torch.randn(4, 5)
    with torch.no_grad():
        torch.manual_seed(3)
        draws = flow.sample(400, z)
        torch.manual_seed(3)
        spread = flow.sample(100, z, spread=4)
    radius_plain = torch.cdist(draws, draws[:, :100]).min(2).values.max(1).values
    radius_spread = torch.cdist(draws, spread).min(2).values.max(1).values
    assert bool((radius_spread < radius_plain).all())


@pytest.mark.parametrize(("trim", "spread"), [(0.0, 1), (0.15, 1), (0.0, 3), (0.2, 2)])
def test_select_draws_of_more_draws_keeps_what_sample_keeps(trim, spread, monkeypatch):
    # select_draws takes the first num_draws of the draws given; the flow, given that prefix
    # of the same base noise, must keep the same points (float64, so both rank draws alike).
    # The flow maps a prefix of a batch to the last bit only on some CPUs (a batch's size can
    # choose the BLAS kernel), so the points are compared to float64 rounding: keeping another
    # draw would move a point by O(1).
    flow = make_flow()
    z = torch.randn(2, 5, dtype=torch.float64)
    noise = torch.randn(2, 400, 3, dtype=torch.float64)
    monkeypatch.setattr(flow._distribution, "sample", lambda count, context: noise[:, :count])
    with torch.no_grad():
        draws = flow.sample(400, z)
        log_prob = flow.log_prob(draws, z, per_point=True)
        expected = flow.sample(50, z, trim=trim, spread=spread)
    assert num_draws(50, trim, spread) <= 400
    selected, kept = select_draws(draws, 50, log_prob=log_prob, trim=trim, spread=spread)
    torch.testing.assert_close(selected, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kept, flow.log_prob(selected, z, per_point=True))
    if trim or spread > 1:
        assert not torch.equal(selected, draws[:, :50])


def test_select_draws_names_what_is_missing():
    draws = torch.randn(2, 40, 3)
    with pytest.raises(ValueError, match="draws must hold at least 50 points per shape"):
        select_draws(draws, 10, log_prob=torch.zeros(2, 40), trim=0.2, spread=4)
    with pytest.raises(ValueError, match=r"log_prob \(each draw.s log-density\) is needed to trim"):
        select_draws(draws, 10, trim=0.2)
    with pytest.raises(ValueError, match=r"log_prob must have shape \(2, 40\)"):
        select_draws(draws, 10, log_prob=torch.zeros(2, 39), trim=0.2)


def test_spread_is_differentiable_in_the_context():
    flow = make_flow()
    z = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    flow.sample(20, z, trim=0.1, spread=2).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0, -2, 1.5, 2.0, "2", True, None])
def test_spread_must_be_a_positive_int(bad):
    flow = make_flow(num_layers=1)
    with pytest.raises(ValueError, match="spread must be a positive int"):
        flow.sample(5, torch.randn(1, 5, dtype=torch.float64), spread=bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_temperature_must_be_positive_and_finite(bad):
    flow = make_flow(num_layers=1)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        flow.sample(5, torch.randn(1, 5, dtype=torch.float64), temperature=bad)


# ------------------------------------------------------------------------------ freevar base
def reference_freevar_log_prob(flow, point, z):
    """float64 reference: N(f(x); 0, diag(exp(2 (W z + b)))) by scipy, |det df/dx| by autograd."""
    from scipy.stats import multivariate_normal

    def f(x):
        out = x.view(1, 1, 3)
        for layer in flow.layers:
            out, _ = layer(out, z.view(1, -1))
        return out.view(3)

    base = flow._distribution
    weight = base.log_scale.weight.detach().double().numpy()
    bias = base.log_scale.bias.detach().double().numpy()
    variance = np.exp(2 * (weight @ z.detach().double().numpy() + bias))
    noise = f(point.double()).detach().numpy()
    log_density = multivariate_normal(np.zeros(3), np.diag(variance)).logpdf(noise)
    return float(log_density) + float(torch.linalg.slogdet(jacobian(f, point.double()))[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_freevar_log_prob_matches_float64_reference(dtype):
    flow64 = make_flow(freevar=True)
    flow = make_flow(freevar=True, dtype=dtype)  # the same weights in ``dtype``
    generator = torch.Generator().manual_seed(2)
    points = torch.randn(2, 4, 3, dtype=torch.float64, generator=generator)
    z = torch.randn(2, 5, dtype=torch.float64, generator=generator)
    per_point = flow.log_prob(points.to(dtype), z.to(dtype), per_point=True).double()
    reference = torch.tensor(
        [
            [reference_freevar_log_prob(flow64, points[b, p], z[b]) for p in range(4)]
            for b in (0, 1)
        ],
        dtype=torch.float64,
    )
    if dtype == torch.float64:
        torch.testing.assert_close(per_point, reference, rtol=1e-10, atol=1e-10)
    else:
        # float32 rounding: each of the 4 layers and the base sums O(10) terms of size up to
        # the magnitude of the result, each with relative error eps; 1,000 eps per unit of
        # magnitude leaves a wide margin and does not depend on the CPU's vector width.
        eps = torch.finfo(torch.float32).eps
        bound = 1000 * eps * (1 + reference.abs())
        assert ((per_point - reference).abs() <= bound).all(), (per_point - reference).abs().max()
    torch.testing.assert_close(flow.log_prob(points.to(dtype), z.to(dtype)).double(),
                               per_point.sum(1), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_freevar_base_starts_standard_and_samples_with_the_shapes_scale():
    base = FreeVariancePointNormal(3, context_features=5)
    z = torch.randn(4, 5)
    points = torch.randn(4, 7, 3)
    torch.testing.assert_close(
        base.log_prob(points, z), StandardPointNormal(3).log_prob(points), rtol=0, atol=0
    )
    flow = make_flow(freevar=True)
    z = torch.randn(2, 5, dtype=torch.float64)
    torch.manual_seed(3)
    samples = flow.sample(40, z)
    torch.manual_seed(3)
    expected = torch.randn(2, 40, 3, dtype=torch.float64) * flow._distribution.scale(z)[:, None]
    torch.testing.assert_close(flow.transform_to_noise(samples, z), expected, rtol=1e-9, atol=1e-10)
    # Gradients reach the scale's layer through log_prob and through sampling.
    loss = -flow.log_prob(samples, z).sum() + flow.sample(5, z).square().sum()
    loss.backward()
    assert flow._distribution.log_scale.weight.grad.abs().sum() > 0


def test_freevar_errors_name_the_problem():
    with pytest.raises(ValueError, match="context_features must be a positive integer"):
        FreeVariancePointNormal(3, context_features=0)
    with pytest.raises(ValueError, match="features must be a positive integer"):
        FreeVariancePointNormal(0, context_features=4)
    base = FreeVariancePointNormal(3, context_features=4)
    with pytest.raises(ValueError, match="context is required"):
        base.log_prob(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"context must have shape \(B, 4\)"):
        base.log_prob(torch.randn(2, 5, 3), torch.randn(2, 3))


# ----------------------------------------------------------------------------------------------
# nflows' Flow API: keyword names and shapes


def test_nflows_keyword_names_match_nflows_own_flow():
    # nflows' Flow run on the same transform and base distribution is the reference: its
    # log_prob(inputs=, context=) is log p(noise) + logabsdet, one value per batch element.
    from nflows.flows import Flow

    flow = make_flow()
    reference = Flow(flow._transform, flow._distribution)
    z = torch.randn(2, 5, dtype=torch.float64)
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    expected = reference.log_prob(inputs=x, context=z)
    assert expected.shape == (2,)
    torch.testing.assert_close(flow.log_prob(inputs=x, context=z), expected)
    torch.testing.assert_close(flow.log_prob(x, z), expected)
    torch.testing.assert_close(
        flow.transform_to_noise(inputs=x, context=z), reference.transform_to_noise(x, context=z)
    )


def test_nflows_sample_keywords_and_shapes():
    flow = make_flow()
    z = torch.randn(3, 5, dtype=torch.float64)
    torch.manual_seed(1)
    named = flow.sample(num_samples=7, context=z)
    torch.manual_seed(1)
    positional = flow.sample(7, z)
    assert named.shape == (3, 7, 3)  # nflows: (context size, num_samples, features)
    torch.testing.assert_close(named, positional)
    torch.manual_seed(1)
    in_batches = flow.sample(num_samples=7, context=z, batch_size=2)
    torch.testing.assert_close(in_batches.shape, named.shape)
    with pytest.raises(TypeError, match="not both"):
        flow.sample(7, z, 2, batch_size=2)


def test_sample_and_log_prob_per_point_is_nflows_shape():
    flow = make_flow()
    z = torch.randn(2, 5, dtype=torch.float64)
    torch.manual_seed(2)
    points, per_point = flow.sample_and_log_prob(num_samples=6, context=z, per_point=True)
    assert points.shape == (2, 6, 3) and per_point.shape == (2, 6)  # nflows' shapes
    torch.testing.assert_close(per_point, flow.log_prob(points, z, per_point=True))
    torch.manual_seed(2)
    same, per_set = flow.sample_and_log_prob(6, z)
    torch.testing.assert_close(same, points)
    assert per_set.shape == (2,)
    torch.testing.assert_close(per_set, per_point.sum(1))
    torch.testing.assert_close(per_set, flow.log_prob(points, z))


def test_old_argument_names_are_deprecated():
    flow = make_flow()
    z = torch.randn(2, 5, dtype=torch.float64)
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    with pytest.warns(
        DeprecationWarning, match=r"log_prob\(points=...\) is deprecated; use inputs"
    ):
        torch.testing.assert_close(flow.log_prob(points=x, context=z), flow.log_prob(x, z))
    with pytest.warns(DeprecationWarning, match="use num_samples"):
        assert flow.sample(num_points=4, context=z).shape == (2, 4, 3)
    with pytest.raises(TypeError, match="missing required argument: 'inputs'"):
        flow.log_prob(context=z)
