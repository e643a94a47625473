"""Tests of pcflow.flows.reversible against plain autograd through the same transforms."""

from __future__ import annotations

import copy

import pytest
import torch
from nflows.transforms import CompositeTransform, Transform
from torch import Tensor, nn

from pcflow.flows.reversible import memory_efficient_forward, memory_efficient_inverse
from pcflow.transforms import (
    PointActNorm,
    PointAffineCoupling,
    PointCoupling,
    PointPermutation,
    PointSplineCoupling,
)
from pcflow.transforms.coupling import computes_affine_map

CONTEXT = 6


class FiLMCoupling(Transform):
    """A small pointwise affine coupling with a FiLM-conditioned net, written to the contract.

    Test-local so that these tests depend on nothing but the contract: ``(B, N, D)`` points,
    a ``(B, C)`` context projected once per shape, log-determinant summed per shape.
    """

    def __init__(self, mask: list[bool], context_features: int | None, hidden: int = 8) -> None:
        super().__init__()
        self.register_buffer("identity", torch.tensor([not m for m in mask]))
        num_identity, num_transform = int(self.identity.sum()), int(sum(mask))
        self.hidden = nn.Linear(num_identity, hidden)
        self.film = nn.Linear(context_features, 2 * hidden) if context_features else None
        self.out = nn.Linear(hidden, 2 * num_transform)
        nn.init.normal_(self.out.weight, std=0.3)

    def _shift_log_scale(self, identity: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        hidden = self.hidden(identity)
        if self.film is not None:
            scale, shift = self.film(context).unsqueeze(1).chunk(2, dim=-1)
            hidden = hidden * torch.exp(scale) + shift
        shift, log_scale = self.out(torch.tanh(hidden)).chunk(2, dim=-1)
        return shift, torch.tanh(log_scale)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(inputs[..., self.identity], context)
        outputs = inputs.clone()
        outputs[..., ~self.identity] = inputs[..., ~self.identity] * torch.exp(log_scale) + shift
        return outputs, log_scale.sum(dim=(1, 2))

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(inputs[..., self.identity], context)
        outputs = inputs.clone()
        outputs[..., ~self.identity] = (inputs[..., ~self.identity] - shift) * torch.exp(-log_scale)
        return outputs, -log_scale.sum(dim=(1, 2))


class PointActNormLike(Transform):
    """Per-coordinate scale and shift with a data-dependent first-batch initialisation."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            with torch.no_grad():
                flat = inputs.reshape(-1, inputs.shape[-1])
                self.log_scale.copy_(-torch.log(flat.std(0) + 1e-6))
                self.shift.copy_(-flat.mean(0) * torch.exp(self.log_scale))
                self.initialized.fill_(True)
        outputs = inputs * torch.exp(self.log_scale) + self.shift
        return outputs, inputs.shape[1] * self.log_scale.sum() * inputs.new_ones(inputs.shape[0])

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outputs = (inputs - self.shift) * torch.exp(-self.log_scale)
        return outputs, -inputs.shape[1] * self.log_scale.sum() * inputs.new_ones(inputs.shape[0])


PATTERNS = ([True, False, False], [False, True, False], [False, False, True], [True, True, False])


def make_stack(num_layers: int = 6, context_features: int | None = CONTEXT) -> list[Transform]:
    layers: list[Transform] = []
    for index in range(num_layers):
        layers.append(FiLMCoupling(PATTERNS[index % len(PATTERNS)], context_features))
        if index % 3 == 2:
            layers.append(PointActNormLike(3))
    return layers


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-300))


def loss_of(outputs: Tensor, logabsdet: Tensor) -> Tensor:
    # A point NLL-like loss, with weights so that every output entry gets a distinct gradient.
    weights = torch.linspace(0.5, 1.5, outputs.shape[1], dtype=outputs.dtype)[None, :, None]
    return (
        0.5 * (weights * outputs.square()).sum()
        - (logabsdet * torch.arange(1.0, 1 + len(logabsdet), dtype=outputs.dtype)).sum()
    )


def run_both(layers, inputs, context, inverse, chunk_size=None):
    """Gradients of the same loss through plain autograd and the memory-efficient path."""
    plain_layers = copy.deepcopy(layers)
    results = []
    for stack, efficient in ((plain_layers, False), (layers, True)):
        x = inputs.detach().clone().requires_grad_(inputs.requires_grad)
        c = (
            None
            if context is None
            else context.detach().clone().requires_grad_(context.requires_grad)
        )
        if efficient:
            function = memory_efficient_inverse if inverse else memory_efficient_forward
            outputs, logabsdet = function(stack, x, c, chunk_size=chunk_size)
        else:
            composite = CompositeTransform(stack)
            outputs, logabsdet = (composite.inverse if inverse else composite)(x, c)
        loss_of(outputs, logabsdet).backward()
        params = [p.grad for layer in stack for p in layer.parameters()]
        results.append((outputs, logabsdet, x.grad, None if c is None else c.grad, params))
    return results


def points_and_context(batch=3, num_points=11, dtype=torch.float64):
    inputs = torch.randn(batch, num_points, 3, dtype=dtype, requires_grad=True)
    context = torch.randn(batch, CONTEXT, dtype=dtype, requires_grad=True)
    return inputs, context


def make_pcflow_stack(num_layers: int = 6, context_features: int | None = CONTEXT):
    """pcflow's own point transforms, with parameters moved away from their near-identity init."""
    layers: list[Transform] = [PointActNorm(3)]
    for index in range(num_layers):
        mask = [int(m) for m in PATTERNS[index % len(PATTERNS)]]
        if index % 3 == 1:
            layers.append(PointSplineCoupling(mask, context_features, hidden_features=8))
        else:
            layers.append(PointAffineCoupling(mask, context_features, hidden_features=8))
        if index % 3 == 2:
            layers.append(PointPermutation([2, 0, 1]))
    with torch.no_grad():
        for layer in layers[1:]:
            for param in layer.parameters():
                param.add_(0.3 * torch.randn_like(param))
    return layers


def initialised_stack(
    num_layers=6, context_features=CONTEXT, dtype=torch.float64, kind="test-local"
):
    make = make_stack if kind == "test-local" else make_pcflow_stack
    layers = [layer.to(dtype) for layer in make(num_layers, context_features)]
    with torch.no_grad():  # ActNorm-like layers initialise on their first forward pass
        inputs, context = points_and_context(dtype=dtype)
        CompositeTransform(layers)(inputs, context if context_features else None)
    return layers


@pytest.mark.parametrize("kind", ["test-local", "pcflow"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("chunk_size", [None, 4], ids=["whole", "chunked"])
def test_gradients_match_plain_autograd(inverse, chunk_size, kind):
    layers = initialised_stack(kind=kind)
    inputs, context = points_and_context()
    plain, efficient = run_both(layers, inputs, context, inverse, chunk_size)
    assert torch.equal(efficient[0], plain[0])  # the forward pass runs the very same operations
    assert torch.equal(efficient[1], plain[1])
    assert relative_error(efficient[2], plain[2]) < 1e-5  # inputs
    assert relative_error(efficient[3], plain[3]) < 1e-5  # context
    assert len(efficient[4]) == len(plain[4]) > 0
    for actual, expected in zip(efficient[4], plain[4]):
        assert expected is not None and actual is not None
        assert relative_error(actual, expected) < 1e-5


def test_gradients_of_a_deep_stack_in_float64_agree_to_round_off():
    layers = initialised_stack(num_layers=30)
    inputs, context = points_and_context(num_points=20)
    plain, efficient = run_both(layers, inputs, context, inverse=False)
    errors = [relative_error(a, e) for a, e in zip(efficient[4], plain[4])]
    errors += [relative_error(efficient[2], plain[2]), relative_error(efficient[3], plain[3])]
    assert max(errors) < 1e-10


def test_gradients_without_context_and_with_inputs_not_requiring_grad():
    layers = initialised_stack(context_features=None)
    inputs = torch.randn(2, 9, 3, dtype=torch.float64)  # a data batch: no gradient wanted
    plain, efficient = run_both(layers, inputs, None, inverse=False)
    assert efficient[2] is None and plain[2] is None
    for actual, expected in zip(efficient[4], plain[4]):
        assert relative_error(actual, expected) < 1e-5


def test_context_that_does_not_require_grad_gets_none():
    layers = initialised_stack()
    inputs, context = points_and_context()
    context.requires_grad_(False)
    plain, efficient = run_both(layers, inputs, context, inverse=True)
    assert efficient[3] is None
    assert relative_error(efficient[2], plain[2]) < 1e-5


def test_only_some_parameters_require_grad():
    layers = initialised_stack(num_layers=6)
    # Freeze all but the last layer's parameters and ask for no input or context gradient:
    # only the part of the stack that matters is walked, and frozen parameters get nothing.
    for layer in layers[:-1]:
        layer.requires_grad_(False)
    inputs = torch.randn(2, 7, 3, dtype=torch.float64)
    context = torch.randn(2, CONTEXT, dtype=torch.float64)
    plain, efficient = run_both(layers, inputs, context, inverse=False)
    frozen = sum(len(list(layer.parameters())) for layer in layers[:-1])
    assert all(grad is None for grad in efficient[4][:frozen])
    for actual, expected in zip(efficient[4][frozen:], plain[4][frozen:]):
        assert relative_error(actual, expected) < 1e-5


def test_only_the_first_layer_requires_grad():
    layers = initialised_stack(num_layers=5)
    for layer in layers[1:]:
        layer.requires_grad_(False)
    inputs, context = points_and_context()
    inputs.requires_grad_(False)
    context.requires_grad_(False)
    plain, efficient = run_both(layers, inputs, context, inverse=False)
    count = len(list(layers[0].parameters()))
    for actual, expected in zip(efficient[4][:count], plain[4][:count]):
        assert relative_error(actual, expected) < 1e-5


def test_shared_layers_accumulate_gradients():
    layer = initialised_stack(num_layers=1)[0]
    other = initialised_stack(num_layers=2)[1]
    layers = [layer, other, layer]  # the same parameters used twice
    inputs, context = points_and_context()
    plain_layer, plain_other = copy.deepcopy(layer), copy.deepcopy(other)
    x = inputs.detach().clone().requires_grad_(True)
    outputs, logabsdet = CompositeTransform([plain_layer, plain_other, plain_layer])(x, context)
    loss_of(outputs, logabsdet).backward()
    expected = [p.grad.clone() for p in plain_layer.parameters()]
    context.grad = None
    outputs, logabsdet = memory_efficient_forward(layers, inputs, context)
    loss_of(outputs, logabsdet).backward()
    for actual, reference in zip((p.grad for p in layer.parameters()), expected):
        assert relative_error(actual, reference) < 1e-5


def test_uninitialised_actnorm_is_initialised_like_plain_autograd():
    layers = [layer.to(torch.float64) for layer in make_stack(6)]
    assert not any(bool(m.initialized) for m in layers if isinstance(m, PointActNormLike))
    inputs, context = points_and_context()
    plain, efficient = run_both(layers, inputs, context, inverse=False)
    assert all(bool(m.initialized) for m in layers if isinstance(m, PointActNormLike))
    assert torch.equal(efficient[0], plain[0])
    for actual, expected in zip(efficient[4], plain[4]):
        assert relative_error(actual, expected) < 1e-5


def test_uninitialised_actnorm_in_the_inverse_direction_is_an_error():
    layers = [layer.to(torch.float64) for layer in make_stack(3)]
    inputs, context = points_and_context()
    with pytest.raises(ValueError, match=r"transforms\[3\].*initiali"):
        memory_efficient_inverse(layers, inputs, context)


def test_training_loop_matches_plain_autograd():
    reference = initialised_stack(num_layers=4)
    layers = copy.deepcopy(reference)
    initial = [p.detach().clone() for layer in reference for p in layer.parameters()]
    runs = []
    for stack, efficient in ((reference, False), (layers, True)):
        parameters = [p for layer in stack for p in layer.parameters()]
        runs.append((stack, efficient, torch.optim.Adam(parameters, lr=1e-2)))
    for _ in range(5):
        inputs, context = points_and_context()
        for stack, efficient, optimiser in runs:
            optimiser.zero_grad()
            if efficient:
                outputs, logabsdet = memory_efficient_forward(stack, inputs, context)
            else:
                outputs, logabsdet = CompositeTransform(stack)(inputs, context)
            loss_of(outputs, logabsdet).backward()
            optimiser.step()
    trained = [p.detach() for layer in layers for p in layer.parameters()]
    expected = [p.detach() for layer in reference for p in layer.parameters()]
    for new, old, start in zip(trained, expected, initial):
        assert relative_error(new - start, old - start) < 1e-8  # the updates agree
        assert not torch.equal(new, start)


def test_values_under_no_grad_match_and_store_nothing():
    layers = initialised_stack()
    inputs, context = points_and_context()
    with torch.no_grad():
        outputs, logabsdet = memory_efficient_inverse(layers, inputs, context)
        expected = CompositeTransform(layers).inverse(inputs, context)
    assert not outputs.requires_grad
    assert torch.equal(outputs, expected[0]) and torch.equal(logabsdet, expected[1])


def saved_bytes(function) -> int:
    """Bytes of the tensors autograd saves for backward while ``function`` runs."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return total


def test_saved_memory_does_not_grow_with_depth():
    inputs, context = points_and_context(num_points=500)
    efficient, plain = {}, {}
    for depth in (3, 12):
        layers = initialised_stack(num_layers=depth)
        efficient[depth] = saved_bytes(
            lambda s=layers: memory_efficient_forward(s, inputs, context)
        )
        plain[depth] = saved_bytes(lambda s=layers: CompositeTransform(s)(inputs, context))
    # Only the final output and the context are kept.
    assert efficient[3] == efficient[12] == inputs.numel() * 8 + context.numel() * 8
    assert plain[12] > 3 * plain[3] > 10 * efficient[3]


def test_double_backward_is_refused():
    layers = initialised_stack(num_layers=2)
    inputs, context = points_and_context()
    outputs, logabsdet = memory_efficient_forward(layers, inputs, context)
    (grad,) = torch.autograd.grad(loss_of(outputs, logabsdet), inputs, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|double backward|twice"):
        grad.sum().backward()


class Unrelated(nn.Module):
    def forward(self, inputs, context=None):
        return inputs, inputs.new_zeros(inputs.shape[0])


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda layers, x, c: (layers, x[0], c), ValueError, r"inputs must have shape \(B, N, D\)"),
        (lambda layers, x, c: (layers, x, c[:2]), ValueError, "context has batch size 2"),
        (lambda layers, x, c: (layers, x, c[0]), ValueError, r"context must have shape \(B, C\)"),
        (lambda layers, x, c: (layers, x, "context"), TypeError, "context must be a torch.Tensor"),
        (lambda layers, x, c: ([], x, c), ValueError, "transforms is empty"),
        (lambda layers, x, c: (layers[0], x, c), TypeError, "sequence of nflows Transforms"),
        (lambda layers, x, c: ([*layers, Unrelated()], x, c), TypeError, r"transforms\[8\]"),
        (
            lambda layers, x, c: (
                layers,
                x.detach().index_fill(1, torch.tensor([0]), float("nan")),
                c,
            ),
            ValueError,
            "inputs must be finite",
        ),
    ],
    ids=[
        "points-2d",
        "batch",
        "context-1d",
        "context-type",
        "empty",
        "single-module",
        "not-transform",
        "nan",
    ],
)
def test_bad_arguments_are_named(make, error, match):
    layers = initialised_stack()
    inputs, context = points_and_context()
    with pytest.raises(error, match=match):
        memory_efficient_forward(*make(layers, inputs, context))


def test_bad_chunk_size():
    layers = initialised_stack(num_layers=2)
    inputs, context = points_and_context()
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        memory_efficient_forward(layers, inputs, context, chunk_size=0)


class NetLayer(FiLMCoupling):
    def __init__(self, module: nn.Module) -> None:
        super().__init__([True, False, False], CONTEXT)
        self.extra = module


@pytest.mark.parametrize(
    ("module", "match"),
    [(nn.Dropout(0.1), "Dropout.*training mode"), (nn.BatchNorm1d(4), "BatchNorm1d in training")],
)
def test_layers_that_cannot_be_recomputed_are_refused(module, match):
    layers = [NetLayer(module).double()]
    inputs, context = points_and_context()
    with pytest.raises(ValueError, match=match):
        memory_efficient_forward(layers, inputs, context)
    layers[0].eval()  # in evaluation mode both are deterministic pointwise maps
    outputs, _ = memory_efficient_forward(layers, inputs, context)
    assert outputs.shape == inputs.shape


def flow_pair(**options):
    from pcflow.flows import dpf_flow

    plain = dpf_flow(context_features=CONTEXT, num_layers=6, hidden_features=8, **options).double()
    with torch.no_grad():
        for param in plain.parameters():
            param.add_(0.3 * torch.randn_like(param))
    efficient = copy.deepcopy(plain)
    efficient.memory_efficient = True
    return plain, efficient


@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_dpf_flow_log_prob_gradients_match(coupling):
    plain, efficient = flow_pair(coupling=coupling)
    inputs, context = points_and_context(num_points=13)
    grads = []
    for flow in (plain, efficient):
        x = inputs.detach().clone().requires_grad_(True)
        z = context.detach().clone().requires_grad_(True)
        log_prob = flow.log_prob(x, z)
        (-log_prob * torch.arange(1.0, 4.0, dtype=torch.float64)).sum().backward()
        grads.append([log_prob, x.grad, z.grad, *(p.grad for p in flow.parameters())])
    assert torch.equal(grads[1][0], grads[0][0])
    for actual, expected in zip(grads[1][1:], grads[0][1:]):
        assert relative_error(actual, expected) < 1e-5


def test_dpf_flow_sample_gradients_match():
    plain, efficient = flow_pair()
    _, context = points_and_context()
    grads = []
    for flow in (plain, efficient):
        z = context.detach().clone().requires_grad_(True)
        torch.manual_seed(1)  # the same base noise for both
        samples = flow.sample(17, z)
        (samples * torch.linspace(-1, 1, 3, dtype=torch.float64)).square().sum().backward()
        grads.append([samples, z.grad, *(p.grad for p in flow.parameters())])
    assert torch.equal(grads[1][0], grads[0][0])
    for actual, expected in zip(grads[1][1:], grads[0][1:]):
        assert relative_error(actual, expected) < 1e-5


@pytest.mark.slow
def test_float32_recomputation_drift_over_63_layers_stays_small():
    # Reconstructing each layer's input with its inverse drifts by float32 round-off per layer,
    # and a ReLU of a coupling network whose input sits at its kink can flip. Measured (the
    # paper's 63 layers and widths, parameters moved off their near-identity init), against
    # float64 autograd: plain float32 gradients are off by 1e-6 relative (worst tensor);
    # memory-efficient float32 ones by 5e-6 with 4 x 128 points and 3e-4 with 4 x 256 points
    # (the first-layer weights of the earliest couplings, where such flips land), with a median
    # over tensors of 5e-7 either way. The bounds leave a margin.
    from pcflow.flows import dpf_flow

    layers = dpf_flow(context_features=512, num_layers=63, hidden_features=64).layers
    with torch.no_grad():
        for param in (p for layer in layers for p in layer.parameters()):
            param.add_(0.05 * torch.randn_like(param))
    points = 0.5 * torch.randn(4, 128, 3, dtype=torch.float64)
    latent = torch.randn(4, 512, dtype=torch.float64)

    def gradients(dtype, efficient):
        stack = [copy.deepcopy(layer).to(dtype) for layer in layers]
        x = points.to(dtype).clone().requires_grad_(True)
        z = latent.to(dtype).clone().requires_grad_(True)
        if efficient:
            outputs, logabsdet = memory_efficient_forward(stack, x, z)
        else:
            outputs, logabsdet = CompositeTransform(stack)(x, z)
        loss_of(outputs, logabsdet).backward()
        return [x.grad, z.grad, *(p.grad for layer in stack for p in layer.parameters())]

    reference = gradients(torch.float64, False)
    plain = gradients(torch.float32, False)
    efficient = gradients(torch.float32, True)

    def worst(actual, expected):
        return max(relative_error(a.double(), e.double()) for a, e in zip(actual, expected))

    def median(actual, expected):
        errors = [relative_error(a.double(), e.double()) for a, e in zip(actual, expected)]
        return sorted(errors)[len(errors) // 2]

    assert worst(plain, reference) < 2e-5
    assert worst(efficient, reference) < 2e-3
    assert median(efficient, reference) < 1e-5
    assert worst(efficient, plain) < 2e-3


class TanhBound(PointAffineCoupling):
    def bound(self, raw):
        return torch.tanh(raw) * self.max_log_scale + 0.1  # not zero at zero, on purpose


class SigmoidScaleCoupling(PointCoupling):
    def __init__(self, mask, context_features=None, hidden_features=8):
        super().__init__(mask, context_features, hidden_features, params_per_coordinate=2)

    def elementwise_forward(self, inputs, params):
        log_scale = torch.nn.functional.logsigmoid(params[..., 1] + 2)
        return inputs * log_scale.exp() + params[..., 0], log_scale

    def elementwise_inverse(self, inputs, params):
        log_scale = torch.nn.functional.logsigmoid(params[..., 1] + 2)
        return (inputs - params[..., 0]) * (-log_scale).exp(), -log_scale


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_couplings_of_ones_own_recompute_their_own_map(inverse):
    """A subclass with another bound takes the affine shortcut with its own bound; a coupling
    written on PointCoupling takes the generic recomputation: both give autograd's gradients."""
    torch.manual_seed(11)
    masks = [(1, 0, 0), (0, 1, 1), (0, 1, 0)]
    layers = [TanhBound(masks[0], CONTEXT, 8), SigmoidScaleCoupling(masks[1], CONTEXT)]
    layers.append(TanhBound(masks[2], CONTEXT, 8))
    for layer in layers:
        layer.networks.reset_parameters(last_std=0.5)
        layer.double()
    assert computes_affine_map(layers[0]) and not computes_affine_map(layers[1])
    inputs, context = points_and_context()
    plain, efficient = run_both(layers, inputs, context, inverse)
    assert torch.equal(efficient[0], plain[0]) and torch.equal(efficient[1], plain[1])
    for actual, expected in zip([efficient[2], efficient[3], *efficient[4]],
                                [plain[2], plain[3], *plain[4]], strict=True):  # fmt: skip
        assert relative_error(actual, expected) < 1e-10
