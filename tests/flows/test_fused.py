"""The fused CPU coupling kernel, held to the PyTorch path in float64 (the obvious reference)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys

import pytest
import torch
from nflows.transforms import ActNorm, CompositeTransform

from pcflow.flows import ConditionalPointFlow, dpf_flow, fused
from pcflow.transforms import PointAffineCoupling, PointSplineCoupling

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="the fused kernel is compiled on first use and no C++ compiler is installed",
)


@pytest.fixture(scope="module", autouse=True)
def kernel_built():
    assert fused.fused_available(), f"the fused kernel did not build: {fused._failure}"


def _roughen(flow: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace the near-identity initialisation so that every term of every layer matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in flow.named_parameters():
            scale = 0.3 if "last" in name or "film" in name or "bias" in name else 1.0
            std = scale / max(1, param.shape[-2] if param.dim() > 1 else 1) ** 0.5
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return flow


def _reference(layers, points, context, inverse):
    """Layer by layer in float64 through the PyTorch path, on float64 copies of the layers."""
    layers = [copy.deepcopy(layer).double() for layer in layers]
    total = torch.zeros(points.shape[:2], dtype=torch.float64)
    x = points.double()
    context = None if context is None else context.double()
    for layer in reversed(layers) if inverse else layers:
        x, logabsdet = (layer.inverse_points if inverse else layer.forward_points)(x, context)
        total = total + logabsdet
    return x, total


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(
    ("num_points", "hidden", "context_features"),
    [(150, 64, 16), (64, 32, 8), (1, 20, 4), (333, 64, None)],
)
def test_fused_stack_matches_float64_reference(num_points, hidden, context_features, inverse):
    torch.manual_seed(0)
    flow = _roughen(dpf_flow(context_features or 1, 12, hidden))
    if context_features is None:
        masks = [[int(i in layer.transformed_features) for i in range(3)] for layer in flow.layers]
        unconditional = [PointAffineCoupling(mask, None, hidden) for mask in masks]
        layers = list(_roughen(torch.nn.ModuleList(unconditional)))
        context = None
    else:
        layers, context = flow.layers, torch.randn(3, context_features)
    points = torch.randn(3, num_points, 3)
    with torch.no_grad():
        outputs, logabsdet = fused.run_fused(layers, points, context, inverse)
        expected, expected_logabsdet = _reference(layers, points, context, inverse)
    assert outputs.dtype == torch.float32 and outputs.shape == points.shape
    assert logabsdet.shape == (3, num_points)
    assert expected_logabsdet.abs().max() > 1.0  # the layers do more than the identity
    torch.testing.assert_close(outputs.double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logabsdet.double(), expected_logabsdet, rtol=1e-4, atol=1e-4)


def test_fused_round_trip_and_any_mask_layout():
    torch.manual_seed(1)
    masks = ([1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1])
    layers = list(
        _roughen(torch.nn.ModuleList(PointAffineCoupling(m, 6, 16) for m in masks), seed=3)
    )
    points, context = torch.randn(2, 100, 4), torch.randn(2, 6)
    with torch.no_grad():
        noise, logabsdet = fused.run_fused(layers, points, context, False)
        back, inverse_logabsdet = fused.run_fused(layers, noise, context, True)
        expected, expected_logabsdet = _reference(layers, points, context, False)
    torch.testing.assert_close(noise.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logabsdet.double(), expected_logabsdet, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back, points, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, rtol=1e-5, atol=1e-5)
    # A layer's conditioning coordinates pass through bit for bit.
    with torch.no_grad():
        one, _ = fused.run_fused(layers[:1], points, context, False)
    assert torch.equal(one[..., [1, 3]], points[..., [1, 3]])
    assert not torch.allclose(one[..., [0, 2]], points[..., [0, 2]])


def test_flow_hands_the_couplings_to_the_kernel(monkeypatch):
    torch.manual_seed(2)
    flow = _roughen(dpf_flow(8, 6, 16))
    points, z = torch.randn(2, 70, 3), torch.randn(2, 8)
    calls = []
    original = fused.run_fused

    def spy(*args):
        result = original(*args)
        calls.append(result is not None)
        return result

    monkeypatch.setattr("pcflow.flows.base.run_fused", spy)
    with torch.no_grad():
        fast = flow.log_prob(points, z, per_point=True)
    assert calls == [True]
    flow.fused = False
    with torch.no_grad():
        slow = flow.log_prob(points, z, per_point=True)
    assert calls == [True]
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)


def test_sampling_is_the_same_with_and_without_the_kernel():
    torch.manual_seed(3)
    flow = _roughen(dpf_flow(8, 9, 32))
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.manual_seed(4)
        fast, fast_log_prob = flow.sample_and_log_prob(500, z)
        flow.fused = False
        torch.manual_seed(4)
        slow, slow_log_prob = flow.sample_and_log_prob(500, z)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast_log_prob, slow_log_prob, rtol=1e-5, atol=1e-2)


def test_mixed_stacks_are_split_into_fusable_runs():
    torch.manual_seed(5)

    class Custom(PointAffineCoupling):
        def forward_points(self, inputs, context):
            return super().forward_points(inputs, context)

    layers = [
        PointAffineCoupling([1, 0, 0], 4, 16),
        PointAffineCoupling([0, 1, 1], 4, 16),
        PointSplineCoupling([0, 0, 1], 4, 16),
        PointAffineCoupling([1, 0, 0], 4, 16),
        PointAffineCoupling([0, 1, 0], 4, 6),  # width not a multiple of 4
        Custom([0, 0, 1], 4, 16),
        PointAffineCoupling([1, 1, 0], 4, 16),
    ]
    groups = fused.fused_groups(layers)
    assert [(ok, len(group)) for ok, group in groups] == [
        (True, 2), (False, 1), (True, 1), (False, 1), (False, 1), (True, 1),
    ]  # fmt: skip
    flow = _roughen(ConditionalPointFlow(CompositeTransform(layers)), seed=6)
    points, z = torch.rand(2, 90, 3) * 2 - 1, torch.randn(2, 4)
    with torch.no_grad():
        fast = flow.log_prob(points, z)
        flow.fused = False
        slow = flow.log_prob(points, z)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-3)


def test_other_dtypes_and_foreign_layers_take_the_torch_path():
    layers = [PointAffineCoupling([1, 0, 0], 4, 16).double()]
    assert fused.run_fused(layers, torch.randn(1, 5, 3, dtype=torch.float64), None, False) is None
    flow = ConditionalPointFlow(CompositeTransform([ActNorm(3)]))
    assert fused.fused_groups(flow.layers) == [(False, flow.layers)]


def test_run_fused_names_bad_arguments():
    layers = [PointAffineCoupling([1, 0, 0], 4, 16), PointAffineCoupling([0, 1, 1], 4, 8)]
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="one run of PointAffineCoupling layers"):
        fused.run_fused(layers, torch.randn(2, 5, 3), z, False)
    with pytest.raises(ValueError, match="one run of PointAffineCoupling layers"):
        fused.run_fused([], torch.randn(2, 5, 3), z, False)
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, N, 3\), got \(2, 5, 4\)"):
        fused.run_fused(layers[:1], torch.randn(2, 5, 4), z, False)


def test_non_contiguous_points():
    torch.manual_seed(7)
    layers = [PointAffineCoupling([1, 0, 0], 4, 16), PointAffineCoupling([0, 1, 1], 4, 16)]
    layers = list(_roughen(torch.nn.ModuleList(layers)))
    points = torch.randn(40, 3, 2).permute(2, 0, 1)  # (2, 40, 3), a view with odd strides
    assert not points.is_contiguous()
    z = torch.randn(2, 4)
    with torch.no_grad():
        outputs, _ = fused.run_fused(layers, points, z, False)
        expected, _ = _reference(layers, points, z, False)
    torch.testing.assert_close(outputs.double(), expected, rtol=1e-5, atol=1e-5)


def test_turned_off_by_environment():
    code = (
        "import torch; from pcflow.flows import dpf_flow, fused;"
        "flow = dpf_flow(4, 3, 8);"
        "print(fused.fused_available(), flow.sample(10, torch.randn(1, 4)).shape)"
    )
    env = {**os.environ, "PCFLOW_FUSED": "0"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False torch.Size([1, 10, 3])"


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_fused_gradients_match_float64_autograd(inverse, memory_efficient):
    torch.manual_seed(8)
    flow = _roughen(dpf_flow(16, 9, 32, memory_efficient=memory_efficient), seed=9)
    reference = copy.deepcopy(flow).double()
    reference.fused = False
    points, z = torch.randn(3, 150, 3), torch.randn(3, 16)
    weight_points, weight_logdet = torch.randn(3, 150, 3), torch.randn(3, 150)
    calls = []

    def loss(model, dtype):
        p = points.to(dtype, copy=True).requires_grad_(True)
        c = z.to(dtype, copy=True).requires_grad_(True)
        outputs, logabsdet = model._run(p, c, inverse, per_point=True)
        value = (outputs * weight_points.to(dtype)).sum()
        value = value + (logabsdet * weight_logdet.to(dtype)).sum()
        value.backward()
        return p.grad, c.grad

    original = fused._FusedCouplings.apply

    def spy(*args):
        calls.append(True)
        return original(*args)

    fused._FusedCouplings.apply = spy
    try:
        grads = loss(flow, torch.float32)
    finally:
        fused._FusedCouplings.apply = original
    assert calls, "the fused backward pass was not used"
    expected = loss(reference, torch.float64)

    def relative(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    assert relative(grads[0], expected[0]) < 1e-5  # points
    assert relative(grads[1], expected[1]) < 1e-5  # context
    for (name, ours), theirs in zip(flow.named_parameters(), reference.parameters(), strict=True):
        assert theirs.grad.norm() > 0, name
        assert relative(ours.grad, theirs.grad) < 1e-4, name


def test_fused_training_matches_per_set_log_prob():
    torch.manual_seed(10)
    flow = _roughen(dpf_flow(8, 6, 16), seed=11)
    points, z = torch.randn(2, 90, 3), torch.randn(2, 8, requires_grad=True)
    (-flow.log_prob(points, z).mean()).backward()
    fast = [p.grad.clone() for p in flow.parameters()] + [z.grad.clone()]
    flow.zero_grad()
    z.grad = None
    flow.fused = False
    (-flow.log_prob(points, z).mean()).backward()
    slow = [p.grad for p in flow.parameters()] + [z.grad]
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(("num_points", "context_features"), [(1, 3), (70, None)])
def test_fused_gradients_with_odd_sizes(num_points, context_features, inverse):
    # Width 20 (not a whole number of vectors), 4 coordinates, 1 and 70 points (partial tiles),
    # unconditional layers, and gradients that arrive non-contiguous.
    torch.manual_seed(12)
    masks = ([1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1])
    layers = torch.nn.ModuleList(PointAffineCoupling(m, context_features, 20) for m in masks)
    layers = list(_roughen(layers, seed=13))
    reference = [copy.deepcopy(layer).double() for layer in layers]
    points = torch.randn(2, num_points, 4)
    z = None if context_features is None else torch.randn(2, context_features)
    weight = torch.randn(4, num_points, 2).permute(2, 1, 0)  # (2, N, 4), non-contiguous

    def grads(stack, dtype, kernel):
        p = points.to(dtype, copy=True).requires_grad_(True)
        c = None if z is None else z.to(dtype, copy=True).requires_grad_(True)
        run = fused.run_fused if kernel else _reference_with_grad
        outputs, logabsdet = run(stack, p, c, inverse)
        ((outputs * weight.to(dtype)).sum() + logabsdet.sum()).backward()
        found = [p.grad] + ([] if c is None else [c.grad])
        return found + [param.grad for layer in stack for param in layer.parameters()]

    ours = grads(layers, torch.float32, True)
    expected = grads(reference, torch.float64, False)
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected, strict=True):
        assert ((a.double() - b).norm() / b.norm()).item() < 1e-4


def _reference_with_grad(layers, points, context, inverse):
    total = torch.zeros(points.shape[:2], dtype=points.dtype)
    for layer in reversed(layers) if inverse else layers:
        step = layer.inverse_points if inverse else layer.forward_points
        points, logabsdet = step(points, context)
        total = total + logabsdet
    return points, total
