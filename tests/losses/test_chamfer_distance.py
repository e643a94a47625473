"""Tests of pcflow.losses.chamfer_distance against a plain per-shape brute-force reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from pcflow.losses import chamfer_distance
from pcflow.ops.knn import pytorch3d_available

BACKENDS = ["bruteforce", "kdtree"]


def nearest(a, b, norm):
    """Distances and indices of each point of a to its nearest in b, from the full matrix."""
    diff = a[:, None, :] - b[None, :, :]
    d = diff.square().sum(-1) if norm == 2 else diff.abs().sum(-1)
    return d.min(dim=1)


def reference_chamfer(
    x,
    y,
    lengths1=None,
    lengths2=None,
    x_normals=None,
    y_normals=None,
    weights=None,
    batch_reduction="mean",
    point_reduction="mean",
    norm=2,
    single_directional=False,
    abs_cosine=True,
):
    """PyTorch3D's documented semantics, written shape by shape."""
    x_lengths, y_lengths = lengths1, lengths2
    batch = x.shape[0]
    x_lengths = [x.shape[1]] * batch if x_lengths is None else x_lengths.tolist()
    y_lengths = [y.shape[1]] * batch if y_lengths is None else y_lengths.tolist()
    w = [1.0] * batch if weights is None else weights
    with_normals = x_normals is not None and y_normals is not None

    def direction(a, b, la, lb, na, nb):
        values, normal_values = [], []
        for i in range(batch):
            d, j = nearest(a[i, : la[i]], b[i, : lb[i]], norm)
            padded = torch.cat([d, d.new_zeros(a.shape[1] - la[i])]) * w[i]
            values.append(padded)
            if with_normals:
                cos = F.cosine_similarity(na[i, : la[i]], nb[i, : lb[i]][j], dim=1, eps=1e-6)
                term = 1 - (cos.abs() if abs_cosine else cos)
                normal_values.append(torch.cat([term, term.new_zeros(a.shape[1] - la[i])]) * w[i])
        values = torch.stack(values)
        normal_values = torch.stack(normal_values) if with_normals else None
        if point_reduction is None:
            return values, normal_values
        if point_reduction == "max":
            return values.max(1).values, None
        lengths = torch.tensor(la, dtype=values.dtype)
        divide = lengths if point_reduction == "mean" else torch.ones_like(lengths)
        return values.sum(1) / divide, (normal_values.sum(1) / divide if with_normals else None)

    cx, nx = direction(x, y, x_lengths, y_lengths, x_normals, y_normals)
    if single_directional:
        loss, loss_normals = cx, nx
    else:
        cy, ny = direction(y, x, y_lengths, x_lengths, y_normals, x_normals)
        if point_reduction is None:
            return (cx, cy), ((nx, ny) if with_normals else None)
        if point_reduction == "max":
            loss, loss_normals = torch.maximum(cx, cy), None
        else:
            loss, loss_normals = cx + cy, (nx + ny if with_normals else None)
    if batch_reduction is None:
        return loss, loss_normals
    divide = 1.0
    if batch_reduction == "mean":
        divide = batch if weights is None else weights.sum()
    reduce = lambda v: None if v is None else v.sum() / divide  # noqa: E731
    return reduce(loss), reduce(loss_normals)


def flatten(value):
    if value is None:
        return []
    if isinstance(value, tuple):
        return list(value)
    return [value]


def assert_same_and_same_gradient(got, want, inputs):
    got_parts = flatten(got[0]) + flatten(got[1])
    want_parts = flatten(want[0]) + flatten(want[1])
    assert len(got_parts) == len(want_parts)
    for g, w in zip(got_parts, want_parts):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w)
    probes = [torch.randn_like(w) for w in want_parts]
    got_grads = torch.autograd.grad(
        sum((g * p).sum() for g, p in zip(got_parts, probes)), inputs, allow_unused=True
    )
    want_grads = torch.autograd.grad(
        sum((w * p).sum() for w, p in zip(want_parts, probes)), inputs, allow_unused=True
    )
    for g, w in zip(got_grads, want_grads):
        if w is None:
            assert g is None or (g == 0).all()
        else:
            torch.testing.assert_close(g, w)


def make_inputs(heterogeneous, dtype=torch.float64, normals=False):
    x = torch.randn(3, 24, 3, dtype=dtype, requires_grad=True)
    y = torch.randn(3, 17, 3, dtype=dtype, requires_grad=True)
    kwargs = {}
    if heterogeneous:
        kwargs["lengths1"] = torch.tensor([24, 5, 13])
        kwargs["lengths2"] = torch.tensor([1, 17, 9])
    if normals:
        kwargs["x_normals"] = torch.randn(3, 24, 3, dtype=dtype, requires_grad=True)
        kwargs["y_normals"] = torch.randn(3, 17, 3, dtype=dtype, requires_grad=True)
    return x, y, kwargs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("heterogeneous", [False, True])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize(
    ("point_reduction", "batch_reduction"),
    [
        ("mean", "mean"),
        ("mean", "sum"),
        ("mean", None),
        ("sum", "mean"),
        ("sum", None),
        ("max", "mean"),
        ("max", None),
        (None, None),
    ],
)
def test_matches_reference(backend, heterogeneous, norm, point_reduction, batch_reduction):
    x, y, kwargs = make_inputs(heterogeneous)
    options = {"point_reduction": point_reduction, "batch_reduction": batch_reduction}
    options["norm"] = norm
    got = chamfer_distance(x, y, backend=backend, **kwargs, **options)
    want = reference_chamfer(x, y, **kwargs, **options)
    assert got[1] is None
    assert_same_and_same_gradient(got, want, (x, y))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("abs_cosine", [True, False])
@pytest.mark.parametrize("point_reduction", ["mean", "sum", None])
@pytest.mark.parametrize("heterogeneous", [False, True])
def test_normals(backend, abs_cosine, point_reduction, heterogeneous):
    x, y, kwargs = make_inputs(heterogeneous, normals=True)
    batch_reduction = None if point_reduction is None else "mean"
    options = {"abs_cosine": abs_cosine, "point_reduction": point_reduction}
    options["batch_reduction"] = batch_reduction
    got = chamfer_distance(x, y, backend=backend, **kwargs, **options)
    want = reference_chamfer(x, y, **kwargs, **options)
    assert got[1] is not None
    inputs = (x, y, kwargs["x_normals"], kwargs["y_normals"])
    assert_same_and_same_gradient(got, want, inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_reduction", ["mean", "sum", None])
@pytest.mark.parametrize("point_reduction", ["mean", None])
def test_weights_and_single_directional(backend, batch_reduction, point_reduction):
    if point_reduction is None:
        batch_reduction = None
    weights = torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64)
    for single in (False, True):
        x, y, kwargs = make_inputs(True, normals=True)
        options = {"weights": weights, "single_directional": single}
        options |= {"batch_reduction": batch_reduction, "point_reduction": point_reduction}
        got = chamfer_distance(x, y, backend=backend, **kwargs, **options)
        want = reference_chamfer(x, y, **kwargs, **options)
        assert_same_and_same_gradient(got, want, (x, y, kwargs["x_normals"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_values_are_ignored(backend):
    x, y, kwargs = make_inputs(True)
    expected = chamfer_distance(x, y, backend=backend, batch_reduction=None, **kwargs)[0]
    with torch.no_grad():
        x[1, 5:] = 1e30
        y[0, 1:] = -1e30
    got = chamfer_distance(x, y, backend=backend, batch_reduction=None, **kwargs)[0]
    torch.testing.assert_close(got, expected)


def test_zero_weights_give_connected_zeros():
    x, y, _ = make_inputs(False)
    weights = torch.zeros(3, dtype=torch.float64)
    loss, normals = chamfer_distance(x, y, weights=weights)
    assert loss.shape == () and loss.item() == 0.0 and normals is None
    loss.backward()
    assert (x.grad == 0).all()
    per_shape, _ = chamfer_distance(x, y, weights=weights, batch_reduction=None)
    assert per_shape.shape == (3,) and (per_shape == 0).all()
    per_point, _ = chamfer_distance(
        x, y, weights=weights, batch_reduction=None, point_reduction=None
    )
    assert per_point[0].shape == (3, 24) and per_point[1].shape == (3, 17)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_adversarial_sets(backend):
    base = torch.randn(2, 30, 3)
    cases = [  # (x, y, whether nearest neighbours are unique so gradients compare)
        (torch.full((2, 10, 3), 0.3), torch.full((2, 4, 3), 0.3), False),  # all points equal
        (torch.randn(2, 1, 3), torch.randn(2, 1, 3), True),  # one point each
        (torch.randn(2, 1, 3), torch.randn(2, 500, 3), True),  # very different sizes
        (torch.randn(2, 400, 3), torch.randn(2, 2, 3), True),
        (base, torch.cat([base, base], dim=1), False),  # duplicates: CD is zero
    ]
    for x, y, unique in cases:
        x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
        got = chamfer_distance(x, y, backend=backend, batch_reduction=None)
        want = reference_chamfer(x, y, batch_reduction=None)
        # Ties (equal or duplicated points) may pick other neighbours: compare distances only.
        torch.testing.assert_close(got[0], want[0])
        if unique:
            assert_same_and_same_gradient(got, want, (x, y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_chamfer_of_identical_sets_is_zero(backend):
    x = torch.rand(2, 300, 3)
    loss, _ = chamfer_distance(x, x.flip(1), backend=backend)
    assert float(loss) == 0.0


def test_hundred_thousand_points_against_scipy():
    # Independent reference: scipy's KD-tree for the neighbours (the default backend uses
    # pykdtree), the Chamfer gradient written out by hand from them.
    generator = np.random.default_rng(0)
    a = generator.random((100_000, 3))
    b = generator.random((100_000, 3)) * 0.9 + 0.05
    x = torch.tensor(a[None], requires_grad=True)
    y = torch.tensor(b[None], requires_grad=True)
    loss, _ = chamfer_distance(x, y)
    loss.backward()
    d_ab, j_ab = cKDTree(b).query(a)
    d_ba, j_ba = cKDTree(a).query(b)
    np.testing.assert_allclose(loss.item(), np.mean(d_ab**2) + np.mean(d_ba**2), rtol=1e-10)
    n = len(a)
    grad_a = 2 * (a - b[j_ab]) / n
    grad_b = 2 * (b - a[j_ba]) / n
    np.add.at(grad_b, j_ab, -2 * (a - b[j_ab]) / n)
    np.add.at(grad_a, j_ba, -2 * (b - a[j_ba]) / n)
    np.testing.assert_allclose(x.grad[0].numpy(), grad_a, atol=1e-12)
    np.testing.assert_allclose(y.grad[0].numpy(), grad_b, atol=1e-12)


def test_pytorch3d_backend_delegates_or_explains():
    x, y, kwargs = make_inputs(True)
    if pytorch3d_available():
        got = chamfer_distance(x, y, backend="pytorch3d", **kwargs)
        want = reference_chamfer(x, y, **kwargs)
        assert_same_and_same_gradient(got, want, (x, y))
    else:
        with pytest.raises(ImportError, match="pytorch3d"):
            chamfer_distance(x, y, backend="pytorch3d")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"y": torch.randn(3, 5, 3)}, ValueError, "batch size"),
        ({"y": torch.randn(2, 5, 2)}, ValueError, "y must have shape"),
        ({"x": torch.full((2, 4, 3), float("nan"))}, ValueError, "x must be finite"),
        ({"y": torch.randn(2, 0, 3)}, ValueError, "empty point sets"),
        ({"lengths1": torch.tensor([4, 9])}, ValueError, r"lengths1 must lie in \[1, 4\]"),
        ({"lengths2": torch.tensor([0, 1])}, ValueError, r"lengths2 must lie in \[1, 5\]"),
        ({"x_normals": torch.randn(2, 3, 3)}, ValueError, "x_normals must have the shape"),
        ({"y_normals": torch.full((2, 5, 3), float("inf"))}, ValueError, "y_normals must be"),
        ({"weights": torch.tensor([1.0, -1.0])}, ValueError, "weights cannot be negative"),
        ({"weights": torch.ones(3)}, ValueError, r"weights must have shape \(2,\)"),
        ({"point_reduction": "median"}, ValueError, "point_reduction must be"),
        ({"batch_reduction": "max"}, ValueError, "batch_reduction must be"),
        ({"point_reduction": None}, ValueError, "batch_reduction must be None"),
        ({"norm": 3}, ValueError, "norm must be"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        (
            {"point_reduction": "max", "x_normals": torch.randn(2, 4, 3)},
            ValueError,
            "does not support normals",
        ),
    ],
)
def test_bad_input(kwargs, error, match):
    arguments = {"x": torch.randn(2, 4, 3), "y": torch.randn(2, 5, 3)} | kwargs
    with pytest.raises(error, match=match):
        chamfer_distance(**arguments)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_coordinates_error_in_float32_and_exact_in_float64(backend):
    # Issue 19: chamfer_distance(randn(1, 300, 3) * 1e20, ...) raised an index out of bounds
    # (KD-tree) or returned wrong neighbours (brute force).
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1, 300, 3, generator=generator) * 1e20
    with pytest.raises(ValueError, match=r"x and y: distances .* overflow torch.float32"):
        chamfer_distance(x, y, backend=backend)
    x, y = x.double(), y.double()
    loss, _ = chamfer_distance(x, y, backend=backend)
    d = torch.cdist(x[0], y[0]).square()
    expected = d.min(1).values.mean() + d.min(0).values.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_pytorch3d_keywords_x_and_y_lengths_are_accepted_without_warning():
    x, y = torch.randn(3, 24, 3, dtype=torch.float64), torch.randn(3, 17, 3, dtype=torch.float64)
    lengths1, lengths2 = torch.tensor([24, 5, 13]), torch.tensor([1, 17, 9])
    expected, _ = chamfer_distance(x, y, lengths1, lengths2, batch_reduction=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch3D's names are not deprecated
        got, _ = chamfer_distance(
            x, y, x_lengths=lengths1, y_lengths=lengths2, batch_reduction=None
        )
    torch.testing.assert_close(got, expected)
    reference, _ = reference_chamfer(x, y, lengths1, lengths2, batch_reduction=None)
    torch.testing.assert_close(got, reference)
    with pytest.raises(TypeError, match="not both"):
        chamfer_distance(x, y, lengths1, x_lengths=lengths1)
