"""Tests of pcflow.metrics.f_score and chamfer_per_shape on hand-worked and brute-force cases."""

from __future__ import annotations

import pytest
import torch

from pcflow.metrics import FScore, chamfer_per_shape, f_score


def reference_f_score(pred, gt, threshold, squared, pred_lengths, gt_lengths):
    precision, recall, score = [], [], []
    for b in range(pred.shape[0]):
        p = pred[b, : pred_lengths[b]].double()
        g = gt[b, : gt_lengths[b]].double()
        d = torch.cdist(p, g)  # Euclidean, full matrix
        d = d.square() if squared else d
        pr = (d.min(1).values < threshold).double().mean()
        rc = (d.min(0).values < threshold).double().mean()
        precision.append(pr)
        recall.append(rc)
        score.append(2 * pr * rc / (pr + rc) if pr + rc > 0 else torch.tensor(0.0))
    return torch.stack(precision), torch.stack(recall), torch.stack(score).double()


def test_identical_sets_give_one_and_shifted_sets_give_zero():
    gt = torch.rand(3, 500, 3)
    result = f_score(gt, gt)
    assert isinstance(result, FScore)
    for value in result:
        assert value.shape == (3,)
        torch.testing.assert_close(value, torch.ones(3))
    # A grid of spacing 0.2 shifted by 0.1: every nearest distance is 0.1, squared 1e-2 > 1e-3.
    axis = torch.arange(5) * 0.2
    grid = torch.cartesian_prod(axis, axis, axis)[None].expand(3, -1, -1)
    shifted = grid + torch.tensor([0.1, 0.0, 0.0])
    result = f_score(shifted, grid)
    for value in result:
        torch.testing.assert_close(value, torch.zeros(3))
    torch.testing.assert_close(
        f_score(shifted, grid, threshold=0.11, squared=False).f_score, torch.ones(3)
    )


def test_hand_worked_case():
    pred = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    gt = torch.tensor([[[0.0, 0.0, 0.01]]])
    # pred[0] is 1e-4 (squared) from gt, pred[1] is ~1 away: P = 1/2; gt's nearest, pred[0]: R = 1.
    precision, recall, score = f_score(pred, gt, threshold=1e-3)
    torch.testing.assert_close(precision, torch.tensor([0.5]))
    torch.testing.assert_close(recall, torch.tensor([1.0]))
    torch.testing.assert_close(score, torch.tensor([2 * 0.5 / 1.5]))
    # Unsquared: 0.01 < 0.02 counts, 0.01 < 0.005 does not.
    torch.testing.assert_close(f_score(pred, gt, 0.02, squared=False).f_score, score)
    torch.testing.assert_close(f_score(pred, gt, 0.005, squared=False).f_score, torch.zeros(1))
    # Squared 1e-4 is not below 1e-5.
    torch.testing.assert_close(f_score(pred, gt, 1e-5).recall, torch.zeros(1))


def test_threshold_is_strict():
    pred = torch.tensor([[[0.0, 0.0, 0.0]]])
    gt = torch.tensor([[[0.5, 0.0, 0.0]]])
    assert f_score(pred, gt, threshold=0.25).f_score.item() == 0.0
    assert f_score(pred, gt, threshold=0.5, squared=False).f_score.item() == 0.0
    assert f_score(pred, gt, threshold=0.2500001).f_score.item() == 1.0


@pytest.mark.parametrize("backend", ["bruteforce", "kdtree"])
@pytest.mark.parametrize("squared", [True, False])
def test_matches_reference_heterogeneous(backend, squared):
    pred = torch.rand(4, 200, 3)
    gt = torch.rand(4, 150, 3)
    pred_lengths = torch.tensor([200, 1, 57, 120])
    gt_lengths = torch.tensor([3, 150, 90, 150])
    threshold = 1e-3 if squared else 0.03
    got = f_score(pred, gt, threshold, squared, pred_lengths, gt_lengths, backend=backend)
    want = reference_f_score(pred, gt, threshold, squared, pred_lengths, gt_lengths)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w)
    full = f_score(pred, gt, threshold, squared, backend=backend)
    want_full = reference_f_score(pred, gt, threshold, squared, [200] * 4, [150] * 4)
    for g, w in zip(full, want_full):
        torch.testing.assert_close(g.double(), w)


def test_chamfer_per_shape_is_the_evaluation_convention():
    pred, gt = torch.rand(3, 100, 3), torch.rand(3, 80, 3)
    d = torch.cdist(pred.double(), gt.double()).square()
    expected = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    torch.testing.assert_close(chamfer_per_shape(pred, gt).double(), expected)
    torch.testing.assert_close(chamfer_per_shape(gt, gt), torch.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threshold": 0.0}, ValueError, "threshold must be"),
        ({"threshold": float("nan")}, ValueError, "threshold must be"),
        ({"gt": torch.rand(3, 5, 3)}, ValueError, "batch size"),
        ({"gt": torch.rand(2, 5, 2)}, ValueError, "gt must have shape"),
        ({"pred": torch.full((2, 4, 3), float("inf"))}, ValueError, "pred must be finite"),
        ({"pred": torch.rand(2, 0, 3)}, ValueError, "empty point sets"),
        ({"lengths2": torch.tensor([6, 1])}, ValueError, r"lengths2 must lie in \[1, 5\]"),
        ({"lengths1": torch.tensor([0, 1])}, ValueError, "lengths1 must lie"),
    ],
)
def test_bad_input(kwargs, error, match):
    arguments = {"pred": torch.rand(2, 4, 3), "gt": torch.rand(2, 5, 3)} | kwargs
    with pytest.raises(error, match=match):
        f_score(**arguments)


@pytest.mark.parametrize("backend", ["bruteforce", "kdtree"])
def test_huge_coordinates(backend):
    # Issue 19: 1e20 coordinates crashed the KD-tree. float32: a clear error naming pred and
    # gt; float64: the true score (every nearest distance is far above the threshold, but a
    # shared point is at distance zero).
    generator = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(2, 1, 300, 3, generator=generator) * 1e20
    with pytest.raises(ValueError, match="pred and gt: distances"):
        f_score(pred, gt, backend=backend)
    with pytest.raises(ValueError, match="pred and gt: distances"):
        chamfer_per_shape(pred, gt, backend=backend)
    pred, gt = pred.double(), gt.double()
    gt[0, :30] = pred[0, :30]
    result = f_score(pred, gt, backend=backend)
    assert result.precision.item() == pytest.approx(0.1)
    assert result.recall.item() == pytest.approx(0.1)
    d = torch.cdist(pred[0], gt[0]).square()
    expected = d.min(1).values.mean() + d.min(0).values.mean()
    assert chamfer_per_shape(pred, gt, backend=backend).item() == pytest.approx(
        expected.item(), rel=1e-12
    )


def test_pred_and_gt_lengths_are_deprecated_names_of_lengths1_and_lengths2():
    generator = torch.Generator().manual_seed(11)
    pred = torch.rand(2, 30, 3, generator=generator, dtype=torch.float64)
    gt = torch.rand(2, 20, 3, generator=generator, dtype=torch.float64)
    lengths1, lengths2 = torch.tensor([30, 7]), torch.tensor([4, 20])
    new = f_score(pred, gt, 0.05, True, lengths1, lengths2)
    want = reference_f_score(pred, gt, 0.05, True, lengths1, lengths2)
    torch.testing.assert_close(new.f_score, want[2])
    with pytest.warns(
        DeprecationWarning, match=r"f_score\(pred_lengths=...\) is deprecated; use lengths1"
    ):
        old = f_score(pred, gt, 0.05, True, pred_lengths=lengths1, lengths2=lengths2)
    torch.testing.assert_close(old.f_score, new.f_score)
    cd = chamfer_per_shape(pred, gt, lengths1, lengths2)
    expected = torch.stack(
        [
            torch.cdist(pred[b, : lengths1[b]], gt[b, : lengths2[b]]).square().min(1).values.mean()
            + torch.cdist(gt[b, : lengths2[b]], pred[b, : lengths1[b]])
            .square()
            .min(1)
            .values.mean()
            for b in range(2)
        ]
    )
    torch.testing.assert_close(cd, expected)
    with pytest.warns(DeprecationWarning, match=r"chamfer_per_shape\(gt_lengths=...\).*lengths2"):
        torch.testing.assert_close(chamfer_per_shape(pred, gt, lengths1, gt_lengths=lengths2), cd)
    with pytest.raises(TypeError, match="not also pred_lengths"):
        f_score(pred, gt, lengths1=lengths1, pred_lengths=lengths1)
